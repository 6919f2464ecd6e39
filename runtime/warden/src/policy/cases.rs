//! Hypothetical requests: what `warden policy explain` decides and what a policy test table
//! (`warden policy test FILE`) lists, each case with the outcome it expects.
//!
//! ```toml
//! [[case]]
//! name = "a tainted session cannot delete without approval"
//! agent = "demo-agent"
//! tool = "delete-file"
//! input = { path = "report.txt" }
//! session = "s1"          # a call in a session (default: outside any)
//! tainted = true
//! expect = "approval_required"
//! policies = ["irreversible-needs-clean-session"]   # optional: exactly these decided it
//! ```

use super::{CallFacts, Decision, Origin, OriginKind, Outcome, Policies, SessionFacts, UserFacts};
use crate::policy::Selection;
use crate::runtime::Runtime;
use crate::sandbox::egress::Target;
use serde::Deserialize;
use std::path::Path;

/// One hypothetical request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(default)]
    pub name: String,
    pub agent: String,
    pub tool: String,
    #[serde(default = "empty_input")]
    pub input: serde_json::Value,
    /// The user the call is made for.
    pub user: Option<String>,
    /// The delegation's tools (default: just this tool).
    pub scope: Option<Vec<String>>,
    /// The session the call is made in (default: none).
    pub session: Option<String>,
    #[serde(default)]
    pub tainted: bool,
    /// Calls made earlier in the session.
    #[serde(default)]
    pub session_calls: u64,
    #[serde(default)]
    pub calls_last_minute: u64,
    #[serde(default)]
    pub untrusted_input: bool,
    #[serde(default)]
    pub approved: bool,
    #[serde(default = "cli")]
    pub origin: OriginKind,
    #[serde(default)]
    pub origin_label: String,
    /// Unix seconds (default: now).
    pub time: Option<i64>,
    /// Decide this request of the tool (`METHOD URL`) instead of the call.
    pub egress: Option<String>,
    /// Tables only: the outcome expected, and optionally the deciding policies.
    pub expect: Option<Outcome>,
    pub policies: Option<Vec<String>>,
}

fn empty_input() -> serde_json::Value {
    serde_json::json!({})
}

fn cli() -> OriginKind {
    OriginKind::Cli
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    #[serde(default)]
    case: Vec<Case>,
}

/// A case made ready: its facts gathered once, then decided with either choice of policies.
struct Prepared<'a> {
    case: &'a Case,
    call: CallFacts,
    /// The request, when the case is about one.
    target: Option<Target>,
}

impl Case {
    /// Decides the case against the runtime's policies; the tool is the one a call would run
    /// (`Runtime::find`), so its attributes are the call's.
    pub fn decide(&self, runtime: &Runtime) -> Result<Decision, String> {
        Ok(self
            .prepare(runtime)?
            .decide(&runtime.policies(), Selection::Chosen))
    }

    fn prepare(&self, runtime: &Runtime) -> Result<Prepared<'_>, String> {
        let tool = runtime.find(&self.tool).map_err(|e| e.to_string())?.facts();
        let call = CallFacts {
            agent: self.agent.clone(),
            tool,
            user: self.user.as_ref().map(|name| UserFacts {
                name: name.clone(),
                scope: self
                    .scope
                    .clone()
                    .unwrap_or_else(|| vec![self.tool.clone()]),
            }),
            origin: Origin {
                kind: self.origin,
                label: self.origin_label.clone(),
            },
            session: SessionFacts {
                id: self.session.clone().unwrap_or_default(),
                tainted: self.tainted,
                calls: self.session_calls,
            },
            calls_last_minute: self.calls_last_minute,
            time: self.time.unwrap_or_else(crate::identity::jwt::now),
        };
        let target = match &self.egress {
            None => None,
            Some(request) => {
                let (method, url) = request
                    .split_once(' ')
                    .ok_or_else(|| format!("egress `{request}` is not `METHOD URL`"))?;
                let uri: http::Uri = url
                    .parse()
                    .map_err(|e| format!("egress `{request}`: {e}"))?;
                Some(Target::from_uri(method, &uri)?)
            }
        };
        Ok(Prepared {
            case: self,
            call,
            target,
        })
    }
}

impl Prepared<'_> {
    fn decide(&self, policies: &Policies, selection: Selection) -> Decision {
        match &self.target {
            None => policies.invoke(
                &self.call,
                &self.case.input,
                self.case.untrusted_input,
                self.case.approved,
                selection,
            ),
            Some(target) => policies.egress(&self.call, target, selection),
        }
    }
}

/// The result of running a table: how many cases passed before the first that did not.
pub struct TableRun {
    pub passed: usize,
    pub total: usize,
    /// The first case that did not decide as expected, and why.
    pub failure: Option<String>,
}

/// Reads a case table. Errors name the file (and line for TOML errors).
pub fn read_table(path: &Path) -> Result<Vec<Case>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let table: Table = toml::from_str(&text).map_err(|e| {
        format!(
            "{}: {}",
            path.display(),
            crate::manifest::toml_error(&text, &e)
        )
    })?;
    for (i, case) in table.case.iter().enumerate() {
        if case.expect.is_none() {
            return Err(format!(
                "{}: field `case[{i}].expect` is missing (allow, deny or approval_required)",
                path.display()
            ));
        }
    }
    Ok(table.case)
}

/// Runs `cases` in order and stops at the first mismatch. Every case is decided twice, with
/// the policies chosen for it and with all policies, and the two must agree: the choice may
/// never drop a policy that applies.
pub fn run_table(cases: &[Case], runtime: &Runtime) -> Result<TableRun, String> {
    let mut passed = 0;
    for (i, case) in cases.iter().enumerate() {
        let label = if case.name.is_empty() {
            format!("case {}", i + 1)
        } else {
            format!("case {} ({})", i + 1, case.name)
        };
        let prepared = case.prepare(runtime).map_err(|e| format!("{label}: {e}"))?;
        let decision = prepared.decide(&runtime.policies(), Selection::Chosen);
        let reference = prepared.decide(&runtime.policies(), Selection::All);
        let mismatch = if decision.outcome != reference.outcome
            || decision.policies != reference.policies
        {
            Some(format!(
                "the policies chosen for it decide {:?} {:?}, all policies {:?} {:?}",
                decision.outcome, decision.policies, reference.outcome, reference.policies
            ))
        } else if Some(decision.outcome) != case.expect {
            Some(format!(
                "expected {:?}, got {:?}: {}",
                case.expect.unwrap_or(Outcome::Deny),
                decision.outcome,
                decision.summary()
            ))
        } else if let Some(expected) = case.policies.as_ref().filter(|p| **p != decision.policies) {
            Some(format!(
                "expected the decision by {expected:?}, it was by {:?}",
                decision.policies
            ))
        } else {
            None
        };
        if let Some(why) = mismatch {
            return Ok(TableRun {
                passed,
                total: cases.len(),
                failure: Some(format!("{label}: {why}")),
            });
        }
        passed += 1;
    }
    Ok(TableRun {
        passed,
        total: cases.len(),
        failure: None,
    })
}
