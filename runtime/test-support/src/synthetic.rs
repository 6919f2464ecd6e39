//! A deployment's worth of generated policies, spread over many agents and tools the way a
//! real one's would be, and the facts of a call, for the decision benchmark and the test that
//! the policies chosen for a request decide exactly as all of them do.

use warden::manifest::{Impact, Sensitivity};
use warden::policy::{CallFacts, Origin, OriginKind, SessionFacts, ToolFacts};

/// Agents `agent-0` … and tools `tool-0` … that the generated policies name.
pub const AGENTS: usize = 10;
pub const TOOLS: usize = 25;

/// `count` policies: mostly permits scoped to one agent and one tool with attribute
/// conditions, some forbids, some `@approval` permits, some scoped to any principal or any
/// tool, some to both actions.
pub fn policies(count: usize) -> String {
    let mut text = String::new();
    for i in 0..count {
        let agent = format!("Agent::\"agent-{}\"", (i * 3 + i / 10) % AGENTS);
        let tool = format!("Tool::\"tool-{}\"", (i * 7) % TOOLS);
        let policy = match i % 10 {
            0 => format!(
                "forbid(principal == {agent}, action == Action::\"invoke\", resource) when {{ context.calls_last_minute > {} }};",
                20 + i
            ),
            1 => format!(
                "@approval(\"human\")\npermit(principal == {agent}, action == Action::\"invoke\", resource == {tool}) when {{ resource.impact == \"irreversible\" }};"
            ),
            2 => format!(
                "permit(principal, action == Action::\"invoke\", resource == {tool}) when {{ principal.trust == \"high\" && !context.session.tainted }};"
            ),
            3 => format!(
                "permit(principal == {agent}, action in [Action::\"invoke\", Action::\"egress\"], resource) when {{ context.origin.kind == \"cli\" }};"
            ),
            4 => format!(
                "forbid(principal is Agent, action == Action::\"invoke\", resource == {tool}) when {{ context.untrusted_input }} unless {{ context.approved }};"
            ),
            _ => format!(
                "permit(principal == {agent}, action == Action::\"invoke\", resource == {tool}) when {{ resource.sensitivity != \"restricted\" && context.session.calls < {} }};",
                100 + i
            ),
        };
        text.push_str(&format!("@id(\"generated-{i}\")\n{policy}\n\n"));
    }
    text
}

/// A call by `agent` of `tool` from the CLI, outside any session, with nothing counted yet.
pub fn call(agent: &str, tool: &str, impact: Impact) -> CallFacts {
    CallFacts {
        agent: agent.into(),
        tool: ToolFacts {
            name: tool.into(),
            impact,
            sensitivity: Sensitivity::Internal,
            digest: format!("sha256:{}", "0".repeat(64)),
            ingests_untrusted: false,
        },
        user: None,
        origin: Origin {
            kind: OriginKind::Cli,
            label: String::new(),
        },
        session: SessionFacts::default(),
        calls_last_minute: 0,
        time: 1_764_316_800,
    }
}
