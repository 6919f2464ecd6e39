//! What a call was: one `CallRecord` (who, for whom, what, the decision that let it run or
//! refused it, how it ended) is the audit's record of the call and the head of the
//! `CallReport` its caller gets (and `warden call --json` prints), which adds what the tool
//! returned, printed and sent.

use crate::credentials::inject::CredentialUse;
use crate::error::Error;
use crate::policy::{Decision, Origin};
use crate::sandbox::Observed;
use crate::sandbox::http::EgressRecord;
use crate::sandbox::limits::{MAX_ERROR_TEXT, bound_text};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// How a call that did not succeed ended. Callers branch on this; the CLI maps it to an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No such tool.
    UnknownTool,
    /// The tool exists but cannot be loaded (bad manifest, digest mismatch, unbound mount…).
    InvalidTool,
    /// The input does not satisfy the tool's input schema.
    InvalidInput,
    /// The decision point refused the call.
    Denied,
    /// Policy permits the call only with a human approval.
    ApprovalRequired,
    /// The caller cancelled the call while it ran.
    Cancelled,
    /// The call ran out of wall-clock time (waiting on I/O included).
    Timeout,
    /// The tool's wasm ran out of CPU time.
    CpuLimit,
    MemoryLimit,
    StackOverflow,
    /// The tool's output is larger than its limit.
    OutputLimit,
    /// Any other trap (abort, unreachable, …).
    Trap,
    /// The tool returned its own error (or a command exited non-zero).
    ToolError,
    /// The tool's output is not JSON.
    InvalidOutput,
    /// Warden itself failed.
    Internal,
    /// The tool kept sending requests no rule or policy allows, past the call's budget of
    /// denied requests (`sandbox::http::MAX_DENIED_REQUESTS`).
    DeniedRequestLimit,
    /// The tool held more host handles (open files, streams, HTTP fields…) than a call may.
    ResourceLimit,
    /// The tool tried to add more to its read-write mounts than its disk quota.
    DiskLimit,
}

impl ErrorKind {
    /// Exit code of `warden call`: 2 bad input, 3 denied, 4 approval required, 5 the tool
    /// failed, 1 Warden failed.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::UnknownTool | ErrorKind::InvalidTool | ErrorKind::InvalidInput => 2,
            ErrorKind::Denied => 3,
            ErrorKind::ApprovalRequired => 4,
            ErrorKind::Internal => 1,
            _ => 5,
        }
    }
}

/// Why a call did not succeed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallFailure {
    pub kind: ErrorKind,
    pub message: String,
    /// A refusal outside the policies (authentication, delegation, revocation, approval):
    /// the call's decision becomes a denial with this reason.
    #[serde(skip)]
    refusal: Option<String>,
}

impl CallFailure {
    /// The message may carry the tool's own text or an agent's, so it is bounded.
    pub fn new(kind: ErrorKind, message: String) -> CallFailure {
        CallFailure {
            kind,
            message: bound_text(message, MAX_ERROR_TEXT),
            refusal: None,
        }
    }

    /// A call refused before or beside the policies, for `reason`.
    pub fn refused(reason: String) -> CallFailure {
        // Reasons quote ids the caller chose (a session, an approval): bounded.
        let reason = bound_text(reason, MAX_ERROR_TEXT);
        CallFailure {
            refusal: Some(reason.clone()),
            ..CallFailure::new(ErrorKind::Denied, format!("denied: {reason}"))
        }
    }
}

impl From<Error> for CallFailure {
    fn from(e: Error) -> CallFailure {
        match e {
            Error::Refused(reason) => CallFailure::refused(reason),
            Error::Invalid(e) => CallFailure::new(ErrorKind::InvalidTool, format!("{e:#}")),
            Error::Internal(e) => CallFailure::new(ErrorKind::Internal, format!("{e:#}")),
        }
    }
}

/// How a call ended (`Started` in the record written before its tool runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    Ok,
    Error,
    Started,
}

/// What a call was: who, for whom, what, why it was allowed, how it ended. The audit keeps
/// exactly this.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRecord {
    pub call_id: String,
    /// Unix milliseconds when the call started.
    pub time_ms: i64,
    /// The authenticated agent; none if the call ended before the caller proved who it is.
    pub agent: Option<String>,
    /// Who an unauthenticated caller claimed to be: a claim an attacker chooses, never
    /// evidence of who called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_agent: Option<String>,
    /// The user the call was made for, and the delegation's id.
    pub user: Option<String>,
    pub delegation: Option<String>,
    pub session: Option<String>,
    pub origin: Origin,
    pub tool: String,
    pub tool_digest: Option<String>,
    /// sha256 of the input's canonical JSON (`identity::assertion::input_digest`).
    pub input_digest: String,
    /// The input (scrubbed), in the audit only, when the deployment records inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    pub decision: Decision,
    /// The approval the call used, or the pending one it asks for.
    pub approval: Option<String>,
    /// The approver who signed the approval the call used.
    #[serde(default)]
    pub approved_by: Option<String>,
    /// The credentials the host added to its requests (never their values).
    pub credentials: Vec<CredentialUse>,
    pub egress_requests: usize,
    pub outcome: CallOutcome,
    pub error: Option<CallFailure>,
    pub duration_ms: f64,
    /// Where the call's time went in Warden itself (not audited: it says nothing of the call).
    #[serde(skip)]
    pub timings: Timings,
}

/// Where a call's time went: the parts spent deciding and in the state store (`warden
/// bench`), and when each step began (the call's trace).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Evaluating the policies on the call.
    pub decision: std::time::Duration,
    /// Waiting for the state store to count the call and keep its records (its start and its
    /// end), the decision excluded.
    pub store: std::time::Duration,
    /// When the call was accepted.
    pub accepted: Option<SystemTime>,
    /// When the policies were asked (none if the call ended before).
    pub decided_at: Option<SystemTime>,
    /// When the tool started, and how long it ran (none if it did not).
    pub ran: Option<(SystemTime, Duration)>,
}

/// Everything about one call: its record, and what its tool returned, printed and sent. The
/// `--json` envelope of `warden call`.
#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    #[serde(flatten)]
    pub record: CallRecord,
    pub output: Option<serde_json::Value>,
    pub egress: Vec<EgressRecord>,
    pub stdout: String,
    pub stderr: String,
    pub stdio_truncated: bool,
}

impl CallReport {
    /// The report of a call that ended with `result`, from what its steps established
    /// (`record`) and what its tool did (`observed`, if it ran).
    pub(crate) fn assemble(
        mut record: CallRecord,
        result: Result<serde_json::Value, CallFailure>,
        observed: Option<Observed>,
        elapsed: Duration,
    ) -> CallReport {
        record.duration_ms = elapsed.as_secs_f64() * 1000.0;
        let (stdout, stderr, stdio_truncated, egress) = match observed {
            Some(observed) => {
                let (stdout, cut_out) = observed.stdout.contents();
                let (stderr, cut_err) = observed.stderr.contents();
                (
                    stdout,
                    stderr,
                    cut_out || cut_err,
                    observed.egress.records(),
                )
            }
            None => (String::new(), String::new(), false, vec![]),
        };
        record.credentials = egress.iter().filter_map(|e| e.credential.clone()).collect();
        record.egress_requests = egress.len();
        let output = match result {
            Ok(output) => {
                record.outcome = CallOutcome::Ok;
                Some(output)
            }
            Err(mut failure) => {
                if let Some(reason) = failure.refusal.take() {
                    record.decision = Decision::deny(reason);
                }
                record.outcome = CallOutcome::Error;
                record.error = Some(failure);
                None
            }
        };
        CallReport {
            record,
            output,
            egress,
            stdout,
            stderr,
            stdio_truncated,
        }
    }

    /// The call's result is not given: `failure` says why. Nor is what the tool wrote (a
    /// command's stdout is its result). What Warden saw of its requests stays, for the
    /// metrics and traces of a call whose record is missing.
    pub(crate) fn withhold(&mut self, failure: CallFailure) {
        self.record.outcome = CallOutcome::Error;
        self.record.error = Some(failure);
        self.output = None;
        self.stdout.clear();
        self.stderr.clear();
        self.stdio_truncated = false;
    }

    pub fn exit_code(&self) -> i32 {
        self.record.error.as_ref().map_or(0, |e| e.kind.exit_code())
    }
}
