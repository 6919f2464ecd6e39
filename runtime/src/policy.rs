//! The decision point for tool calls. Today: the agent allow-lists of `warden.toml`, deny by
//! default. Every decision carries the reasons that determined it, for the caller and the log.

use crate::deployment::Deployment;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub outcome: Outcome,
    /// What determined the outcome (which rule allowed it, or why nothing did).
    pub reasons: Vec<String>,
}

impl Decision {
    fn allow(reason: String) -> Decision {
        Decision {
            outcome: Outcome::Allow,
            reasons: vec![reason],
        }
    }

    pub fn deny(reason: String) -> Decision {
        Decision {
            outcome: Outcome::Deny,
            reasons: vec![reason],
        }
    }
}

/// May `agent` invoke `tool`?
pub fn decide_invoke(deployment: &Deployment, agent: &str, tool: &str) -> Decision {
    let Some(entry) = deployment.agents.get(agent) else {
        return Decision::deny(format!(
            "agent `{agent}` is not registered in {}",
            deployment.file.display()
        ));
    };
    if entry.may_invoke(tool) {
        Decision::allow(format!("agents.{agent}.tools allows `{tool}`"))
    } else {
        Decision::deny(format!(
            "no rule allows agent `{agent}` to invoke `{tool}` (deny by default)"
        ))
    }
}
