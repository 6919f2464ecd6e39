//! The decision point for tool calls. Today: the agent allow-lists of `warden.toml`, deny by
//! default. Every decision carries the reasons that determined it, for the caller and the log.

use crate::deployment::Deployment;
use crate::identity::delegation::Delegation;
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
    pub fn deny(reason: String) -> Decision {
        Decision {
            outcome: Outcome::Deny,
            reasons: vec![reason],
        }
    }
}

/// May `agent` invoke `tool` (on behalf of `delegation`'s user)? A delegation can only narrow
/// what the agent may do: both must allow the tool.
pub fn decide_invoke(
    deployment: &Deployment,
    agent: &str,
    tool: &str,
    delegation: Option<&Delegation>,
) -> Decision {
    let Some(entry) = deployment.agents.get(agent) else {
        return Decision::deny(format!(
            "agent `{agent}` is not registered in {}",
            deployment.file.display()
        ));
    };
    if !entry.may_invoke(tool) {
        return Decision::deny(format!(
            "no rule allows agent `{agent}` to invoke `{tool}` (deny by default)"
        ));
    }
    let mut reasons = vec![format!("agents.{agent}.tools allows `{tool}`")];
    if let Some(d) = delegation {
        if !d.allows(tool) {
            return Decision::deny(format!(
                "tool `{tool}` is not in the scope of delegation {} from user `{}`",
                d.id, d.user
            ));
        }
        reasons.push(format!(
            "delegation {} from user `{}` allows `{tool}`",
            d.id, d.user
        ));
    }
    Decision {
        outcome: Outcome::Allow,
        reasons,
    }
}
