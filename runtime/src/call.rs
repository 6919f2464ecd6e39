//! The pipeline of one call, top to bottom:
//! find the tool -> authenticate the agent -> verify the delegation and session -> check
//! revocations -> check the approval the caller names -> load the tool -> check the input
//! against its schema -> count the call, decide (policy) and, if allowed, record that it
//! started, in one write (a pending approval is stored when one is needed) -> prepare the
//! sandbox (every request decided and checked for revocations again) -> spend its approval
//! -> run under limits, until done or cancelled -> check the output -> taint the session if
//! the tool ingests untrusted content -> report, with the audit records committed before it
//! returns.
//!
//! A call that runs its tool commits two write transactions (three with an approval): the
//! count with its decision and start record, (the approval's use,) the final records.

use crate::approval;
use crate::credentials::Secret;
use crate::credentials::mint::Minter;
use crate::engine::{CallContext, Prepared, ToolError};
use crate::identity::{assertion, jwt};
use crate::manifest::Limits;
use crate::policy::{
    CallFacts, Decision, Origin, OriginKind, Outcome, PolicyGate, SessionFacts, UserFacts,
};
use crate::revocation::{CallGate, CallIds};
use crate::runtime::{LoadError, LoadedTool, Runtime};
use crate::sandbox::http::{EgressGate, EgressRecord};
use crate::sandbox::limits::{
    CpuExhausted, CpuMeter, MAX_ERROR_TEXT, MAX_FIELDS_BYTES, MAX_HANDLES, bound_text,
};
use crate::sandbox::{CallState, Observed};
use crate::state::{
    Approval, ApprovalStatus, AuditEntry, CallCounts, RevocationKind, TooManyPending,
};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;
use wasmtime::component::ResourceTableError;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::FieldMapError;

/// What an orchestrator asks for.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub tool: String,
    pub input: serde_json::Value,
    /// Who is calling, with the proof.
    pub caller: Caller,
    /// A delegation token: the call is made on that user's behalf.
    pub on_behalf_of: Option<Secret>,
    /// The session the call belongs to (`Runtime::start_session`).
    pub session: Option<String>,
    /// The caller vouches for nothing in this input: its session is tainted from this call on.
    pub untrusted_input: bool,
    pub origin: Origin,
    /// The id of an approval a human gave for exactly this call (`warden approve`).
    pub approval: Option<String>,
    /// Cancelled by the caller (an MCP client): the running tool is stopped.
    pub cancel: Option<tokio_util::sync::CancellationToken>,
}

impl CallRequest {
    /// A call with no user, no session, trusted input, from the library API.
    pub fn new(tool: impl Into<String>, input: serde_json::Value, caller: Caller) -> CallRequest {
        CallRequest {
            tool: tool.into(),
            input,
            caller,
            on_behalf_of: None,
            session: None,
            untrusted_input: false,
            origin: Origin {
                kind: OriginKind::Api,
                label: String::new(),
            },
            approval: None,
            cancel: None,
        }
    }
}

/// The calling agent and its proof.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A call assertion signed with the agent's key, bound to this tool and input
    /// (`identity::assertion::sign`; what `warden call` sends).
    Assertion(Secret),
    /// An agent this runtime authenticated once for many calls (`Runtime::authenticate`).
    Authenticated(AuthenticatedAgent),
}

/// An agent authenticated by this runtime. Only `Runtime::authenticate` makes one.
#[derive(Debug, Clone)]
pub struct AuthenticatedAgent {
    agent: String,
}

impl AuthenticatedAgent {
    pub fn agent(&self) -> &str {
        &self.agent
    }
}

impl Runtime {
    /// Verifies a session assertion (`identity::assertion::sign_session`) and returns a session
    /// whose calls need no further signature: for a long-lived caller such as an MCP server
    /// whose agent proved its key when it started.
    pub fn authenticate(&self, assertion: &Secret) -> Result<AuthenticatedAgent, String> {
        let state = self.state().map_err(|e| format!("{e:#}"))?;
        let agent = assertion::verify(
            assertion.expose(),
            self.deployment(),
            state.as_ref(),
            assertion::SESSION_TOOL,
            &serde_json::Value::Null,
        )?;
        Ok(AuthenticatedAgent { agent })
    }
}

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

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CallFailure {
    pub kind: ErrorKind,
    pub message: String,
}

/// Everything about one call: the `--json` envelope of `warden call`.
#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    pub call_id: String,
    /// Unix milliseconds when the call started.
    pub time_ms: i64,
    pub tool: String,
    /// sha256 of the input's canonical JSON (`identity::assertion::input_digest`).
    pub input_digest: String,
    /// The agent, once the caller proved it is that agent; none if the call ended before.
    pub agent: Option<String>,
    /// Who the caller claimed to be, when the call ended before that was proven: a claim an
    /// attacker chooses, never evidence of who called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_agent: Option<String>,
    /// The user the call was made for, and the delegation's id.
    pub user: Option<String>,
    pub delegation: Option<String>,
    pub session: Option<String>,
    pub origin: Origin,
    pub tool_digest: Option<String>,
    pub decision: Decision,
    /// The approval the call used, or the pending one it asks for.
    pub approval: Option<String>,
    /// The approver who signed the approval the call used.
    pub approved_by: Option<String>,
    /// `ok` or `error`.
    pub outcome: &'static str,
    pub output: Option<serde_json::Value>,
    pub error: Option<CallFailure>,
    pub egress: Vec<EgressRecord>,
    pub stdout: String,
    pub stderr: String,
    pub stdio_truncated: bool,
    pub duration_ms: f64,
}

impl CallReport {
    pub fn exit_code(&self) -> i32 {
        self.error.as_ref().map_or(0, |e| e.kind.exit_code())
    }
}

/// The result of running the component, before it is put into a report.
struct Ran {
    result: Result<serde_json::Value, CallFailure>,
    observed: Option<Observed>,
}

impl Runtime {
    /// Runs one call through the whole pipeline. Never panics on bad input; every way a call
    /// can end is in the report.
    pub async fn call(&self, request: CallRequest) -> CallReport {
        // Time-ordered (v7): the audit's index by call id grows at its end, not everywhere.
        let call_id = uuid::Uuid::now_v7().to_string();
        // Until the caller proves who it is, its name is only a claim.
        let (agent, claimed_agent) = match &request.caller {
            Caller::Authenticated(a) => (Some(a.agent.clone()), None),
            Caller::Assertion(token) => (None, Some(claimed_agent(token))),
        };
        let span = tracing::info_span!(
            "call",
            call_id = %call_id,
            tool = %request.tool,
            agent = %agent.as_deref().or(claimed_agent.as_deref()).unwrap_or_default()
        );
        async move {
            let started = Instant::now();
            let mut report = CallReport {
                call_id: call_id.clone(),
                time_ms: jwt::now_ms(),
                tool: request.tool.clone(),
                input_digest: assertion::input_digest(&request.input),
                agent,
                claimed_agent,
                user: None,
                delegation: None,
                session: request.session.clone(),
                origin: request.origin.clone(),
                tool_digest: None,
                decision: Decision::deny("not decided".into()),
                approval: None,
                approved_by: None,
                outcome: "error",
                output: None,
                error: None,
                egress: vec![],
                stdout: String::new(),
                stderr: String::new(),
                stdio_truncated: false,
                duration_ms: 0.0,
            };
            let ran = self.pipeline(&request, &call_id, &mut report, started).await;
            if let Some(observed) = ran.observed {
                let (stdout, cut_out) = observed.stdout.contents();
                let (stderr, cut_err) = observed.stderr.contents();
                report.stdout = stdout;
                report.stderr = stderr;
                report.stdio_truncated = cut_out || cut_err;
                report.egress = observed.egress.records();
            }
            match ran.result {
                Ok(output) => {
                    report.outcome = "ok";
                    report.output = Some(output);
                }
                Err(failure) => report.error = Some(failure),
            }
            report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            // The record is durable before the caller sees the result; without it, no result.
            if let Err(e) = self.audit(&request, &report) {
                tracing::error!(error = %format!("{e:#}"), "writing the audit record failed");
                report.outcome = "error";
                report.output = None;
                report.error = Some(failure(
                    ErrorKind::Internal,
                    format!("the call's audit record could not be written, so its result is withheld: {e:#}"),
                ));
            }
            match &report.error {
                None => tracing::info!(duration_ms = report.duration_ms, egress = report.egress.len(), "call succeeded"),
                Some(e) => tracing::info!(kind = ?e.kind, message = %e.message, duration_ms = report.duration_ms, "call failed"),
            }
            report
        }
        .instrument(span)
        .await
    }

    /// `accepted`: when the call was accepted; its timeout counts from then.
    async fn pipeline(
        &self,
        request: &CallRequest,
        call_id: &str,
        report: &mut CallReport,
        accepted: Instant,
    ) -> Ran {
        // Bounded like a tool's error text: messages quote what agents chose (a tool name).
        let fail = |kind, message: String| Ran {
            result: Err(failure(kind, message)),
            observed: None,
        };

        // An unknown tool is a usage error, not a policy decision.
        let found = match self.find(&request.tool) {
            Ok(found) => found,
            Err(e @ LoadError::Unknown(_)) => return fail(ErrorKind::UnknownTool, e.to_string()),
            Err(e) => {
                return fail(
                    ErrorKind::InvalidTool,
                    format!("tool `{}` cannot be loaded: {e}", request.tool),
                );
            }
        };

        // Authenticate, then authorize, before anything of the tool is loaded or run.
        let state = match self.state() {
            Ok(state) => state,
            Err(e) => {
                return fail(
                    ErrorKind::Internal,
                    format!("opening the state store: {e:#}"),
                );
            }
        };
        let agent = match &request.caller {
            Caller::Assertion(token) => match assertion::verify(
                token.expose(),
                self.deployment(),
                state.as_ref(),
                &request.tool,
                &request.input,
            ) {
                Ok(agent) => agent,
                Err(reason) => {
                    return self.deny(report, format!("authentication failed: {reason}"));
                }
            },
            Caller::Authenticated(agent) => agent.agent.clone(),
        };
        report.agent = Some(agent.clone());
        report.claimed_agent = None;
        let (session, acting) = match self.resolve_session(
            request.session.as_deref(),
            &agent,
            request.on_behalf_of.as_ref(),
        ) {
            Ok(resolved) => resolved,
            Err(reason) => return self.deny(report, reason),
        };
        report.user = acting.as_ref().map(|a| a.user.clone());
        report.delegation = acting.as_ref().map(|a| a.delegation.clone());
        // A delegation only narrows what the agent may do.
        if let Some(a) = acting.as_ref().filter(|a| !a.allows(&request.tool)) {
            return self.deny(
                report,
                format!(
                    "tool `{}` is not in the scope of delegation {} from user `{}`",
                    request.tool, a.delegation, a.user
                ),
            );
        }

        // Anything the call runs under that is revoked refuses it; a revoked tool is forgotten.
        let tool_facts = found.facts();
        let revocations = CallIds {
            store: state.clone(),
            ids: [
                Some((RevocationKind::Agent, agent.clone())),
                Some((RevocationKind::Tool, tool_facts.digest.clone())),
                acting
                    .as_ref()
                    .map(|a| (RevocationKind::Delegation, a.delegation.clone())),
                request
                    .session
                    .clone()
                    .map(|s| (RevocationKind::Session, s)),
            ]
            .into_iter()
            .flatten()
            .collect(),
        };
        if let Err(refused) = revocations.check(&[]) {
            if refused.kind == Some(RevocationKind::Tool) {
                self.evict(&tool_facts.digest);
            }
            return self.deny(report, refused.reason);
        }
        let call = approval::CallIdentity {
            agent: &agent,
            user: acting.as_ref().map(|a| a.user.as_str()),
            tool: &request.tool,
            tool_digest: &tool_facts.digest,
            input_digest: &report.input_digest,
        }
        .digest();
        if let Some(id) = &request.approval {
            let checked = match state.approval(id) {
                Ok(Some(given)) => approval::check(&given, self.deployment(), &call, jwt::now())
                    .map(|()| given.approver),
                Ok(None) => Err(format!("no approval `{id}`")),
                Err(e) => {
                    return fail(ErrorKind::Internal, format!("reading approval {id}: {e:#}"));
                }
            };
            match checked {
                Ok(approver) => report.approved_by = approver,
                Err(reason) => return self.deny(report, reason),
            }
            report.approval = Some(id.clone());
        }

        let tool = match self.load_found(&request.tool, found).await {
            Ok(tool) => tool,
            Err(e) => {
                return fail(
                    ErrorKind::InvalidTool,
                    format!("tool `{}` cannot be loaded: {e}", request.tool),
                );
            }
        };
        report.tool_digest = Some(tool.digest.to_string());

        // Check the input against the tool's schema before the decision: a person is never
        // asked to approve an input the tool would reject. The schema comes from the loaded
        // tool (its `describe`), so only an authenticated agent's call loads it.
        let problems: Vec<String> = tool
            .validator
            .iter_errors(&request.input)
            .take(3)
            .map(|error| {
                // Where and which rule, never the value: an input is the agent's, may hold a
                // secret, and the error is recorded even where inputs are not.
                let at = error.instance_path.to_string();
                let rule = error.schema_path.to_string();
                let keyword = rule.rsplit('/').next().unwrap_or_default();
                // A missing field's name is the schema's, not the agent's: say it.
                let missing = match &error.kind {
                    jsonschema::error::ValidationErrorKind::Required { property } => {
                        format!(": {property} is missing")
                    }
                    _ => String::new(),
                };
                format!("input{at} does not satisfy `{keyword}` (schema {rule}){missing}")
            })
            .collect();
        if !problems.is_empty() {
            return fail(
                ErrorKind::InvalidInput,
                format!(
                    "{} (schema of tool `{}`)",
                    problems.join("; "),
                    request.tool
                ),
            );
        }

        if let (true, Some(id)) = (request.untrusted_input, &request.session)
            && let Err(e) = state.taint(id, &format!("call {call_id} carried untrusted input"))
        {
            return fail(ErrorKind::Internal, format!("tainting the session: {e:#}"));
        }
        // Counted, decided and, if allowed, on record (`started`) in one write, long before
        // its tool runs: a process killed while the tool runs leaves a call that started and
        // never finished, not effects without a record.
        let now_ms = crate::identity::jwt::now_ms();
        let mut decided = None;
        let mut decide = |counts: CallCounts| {
            let facts = CallFacts {
                agent: agent.clone(),
                tool: tool_facts.clone(),
                user: acting.as_ref().map(|a| UserFacts {
                    name: a.user.clone(),
                    scope: a.scope.clone(),
                }),
                origin: request.origin.clone(),
                session: SessionFacts {
                    id: request.session.clone().unwrap_or_default(),
                    tainted: session.as_ref().is_some_and(|s| s.tainted) || request.untrusted_input,
                    calls: counts.in_session,
                },
                calls_last_minute: counts.last_minute,
                time: now_ms / 1000,
            };
            report.decision = self.policies().decide_invoke(
                &facts,
                &request.input,
                request.untrusted_input,
                report.approval.is_some(),
            );
            decided = Some(facts);
            match report.decision.outcome {
                Outcome::Allow => self.audit_entries(request, report, crate::audit::started),
                Outcome::Deny | Outcome::ApprovalRequired => Ok(vec![]),
            }
        };
        let recorded = state.record_call(&agent, request.session.as_deref(), now_ms, &mut decide);
        let (Ok(_), Some(facts)) = (recorded.as_ref(), decided) else {
            let e = recorded.err().map(|e| format!("{e:#}")).unwrap_or_default();
            return fail(ErrorKind::Internal, format!("recording the call: {e}"));
        };
        let decision = &report.decision;
        tracing::info!(outcome = ?decision.outcome, policies = ?decision.policies, reasons = ?decision.reasons, "decision");
        match decision.outcome {
            Outcome::Allow => {}
            Outcome::Deny => {
                return fail(ErrorKind::Denied, format!("denied: {}", decision.summary()));
            }
            Outcome::ApprovalRequired => {
                let summary = decision.summary();
                let pending = self.request_approval(
                    &request.input,
                    &report.input_digest,
                    &facts,
                    call,
                    summary.clone(),
                );
                return match pending {
                    Ok(id) => {
                        let message = format!(
                            "approval required: {summary}. Approval {id} is pending: a person \
                             approves it with `warden approve {id} --key APPROVER_KEY`, then \
                             repeat this exact call with --approval {id}"
                        );
                        report.approval = Some(id);
                        fail(ErrorKind::ApprovalRequired, message)
                    }
                    Err(e) => match e.downcast_ref::<TooManyPending>() {
                        Some(full) => fail(ErrorKind::Denied, format!("denied: {full}")),
                        None => fail(
                            ErrorKind::Internal,
                            format!("recording the approval request: {e:#}"),
                        ),
                    },
                };
            }
        }

        let context = CallContext {
            call_id: call_id.to_string(),
            tool: request.tool.clone(),
            agent,
            user: acting.map(|a| a.user),
        };
        // The signing key is needed only by tools whose rules carry credentials.
        let minter = if tool.grants.credentials.is_empty() {
            None
        } else {
            match self.minter() {
                Ok(minter) => Some(minter),
                Err(e) => {
                    return fail(
                        ErrorKind::Internal,
                        format!("loading the signing key: {e:#}"),
                    );
                }
            }
        };
        let gate = Arc::new(CallGate {
            revocations,
            policy: PolicyGate {
                policies: self.policies().clone(),
                call: facts,
            },
        });
        // The approval is spent once, atomically (of two calls racing with one approval, one
        // runs), and after the call is on record: a spent approval always has its call.
        if let Some(id) = report.approval.clone() {
            match state.use_approval(&id, call_id) {
                Ok(true) => {}
                Ok(false) => {
                    return self.deny(report, format!("approval {id} has already been used"));
                }
                Err(e) => {
                    return fail(ErrorKind::Internal, format!("using the approval: {e:#}"));
                }
            }
        }
        let ran = run(
            &tool,
            gate,
            minter,
            context,
            &request.input,
            accepted.into(),
            request.cancel.as_ref(),
        )
        .await;
        // What the tool brought in is untrusted from now on, whether or not it succeeded.
        if let (true, Some(id)) = (tool.manifest.ingests_untrusted, &request.session)
            && let Err(e) = state.taint(
                id,
                &format!(
                    "call {call_id} ran `{}`, which ingests untrusted content",
                    request.tool
                ),
            )
        {
            tracing::error!(error = %format!("{e:#}"), "tainting the session failed");
        }
        ran
    }
}

impl Runtime {
    /// Stores a pending approval for this exact call (or finds the one already pending) and
    /// returns its id.
    fn request_approval(
        &self,
        input: &serde_json::Value,
        input_digest: &str,
        facts: &CallFacts,
        digest: String,
        reason: String,
    ) -> anyhow::Result<String> {
        let now = jwt::now();
        let pending = Approval {
            id: uuid::Uuid::new_v4().to_string(),
            digest,
            agent: facts.agent.clone(),
            user: facts.user.as_ref().map(|u| u.name.clone()),
            tool: facts.tool.name.clone(),
            tool_digest: facts.tool.digest.clone(),
            input_digest: input_digest.to_string(),
            input: input.clone(),
            reason,
            created: now,
            expires: now.saturating_add(
                i64::try_from(self.deployment().approvals.lifetime.as_secs()).unwrap_or(i64::MAX),
            ),
            status: ApprovalStatus::Pending,
            approver: None,
            signature: None,
            used_by: None,
        };
        Ok(self
            .state()?
            .request_approval(&pending, approval::MAX_PENDING_PER_AGENT)?
            .id)
    }

    /// Appends the call's final records to the audit chain (unless the deployment turned it
    /// off).
    fn audit(&self, request: &CallRequest, report: &CallReport) -> anyhow::Result<()> {
        let entries = self.audit_entries(request, report, crate::audit::entries)?;
        if entries.is_empty() {
            return Ok(());
        }
        self.state()?.append_audit(&entries)
    }

    /// The call's records as `records` (`audit::started` or `audit::entries`) makes them, with
    /// the input if the deployment keeps inputs; none if the deployment keeps no audit.
    fn audit_entries(
        &self,
        request: &CallRequest,
        report: &CallReport,
        records: fn(&CallReport, Option<serde_json::Value>) -> anyhow::Result<Vec<AuditEntry>>,
    ) -> anyhow::Result<Vec<AuditEntry>> {
        let settings = &self.deployment().audit;
        if !settings.enabled {
            return Ok(vec![]);
        }
        records(report, settings.record_input.then(|| request.input.clone()))
    }

    /// A call refused before any policy could be asked (authentication, delegation).
    fn deny(&self, report: &mut CallReport, reason: String) -> Ran {
        // Reasons quote ids the caller chose (a session, an approval): bounded.
        let reason = bound_text(reason, MAX_ERROR_TEXT);
        report.decision = Decision::deny(reason.clone());
        Ran {
            result: Err(failure(ErrorKind::Denied, format!("denied: {reason}"))),
            observed: None,
        }
    }
}

/// The agent an assertion claims to be from, before (or without) its signature checked.
fn claimed_agent(token: &Secret) -> String {
    // The caller's own text, unverified: kept short in reports, records and logs.
    jwt::peek_claims::<assertion::CallAssertion>(token.expose())
        .map(|c| crate::sandbox::egress::clip(&c.sub, 128))
        .unwrap_or_else(|_| "(unreadable assertion)".into())
}

/// A fresh `Store` with the call's limits installed. Used for every instantiation.
pub(crate) fn new_store(
    engine: &wasmtime::Engine,
    state: CallState,
    limits: &Limits,
) -> Store<CallState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    // CPU: at every epoch tick the guest yields to the executor (other calls run, and the
    // call's timeout and cancellation take effect) and its running time is charged.
    let mut meter = CpuMeter::new(
        limits.cpu_budget(),
        crate::engine::EPOCH_TICK,
        Instant::now(),
    );
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        let resumed = meter.tick(Instant::now())?;
        // tokio's own yield (not a plain self-wake) also lets the runtime drive its timers
        // and I/O before the guest resumes.
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                tokio::task::yield_now().await;
                resumed.at(Instant::now());
            }),
        ))
    });
    store
}

async fn run(
    tool: &LoadedTool,
    gate: Arc<dyn EgressGate>,
    minter: Option<Arc<Minter>>,
    context: CallContext,
    input: &serde_json::Value,
    accepted: tokio::time::Instant,
    cancel: Option<&tokio_util::sync::CancellationToken>,
) -> Ran {
    let limits = &tool.grants.limits;
    let input_text = input.to_string();
    let deadline = accepted + limits.timeout;
    let stdin =
        matches!(tool.prepared, Prepared::Command(_)).then(|| input_text.clone().into_bytes());
    let (state, observed) =
        match CallState::new(&tool.grants, Some(gate), minter, context, stdin, deadline) {
            Ok(built) => built,
            Err(e) => {
                return Ran {
                    result: Err(CallFailure {
                        kind: ErrorKind::Internal,
                        message: format!("preparing the sandbox: {e:#}"),
                    }),
                    observed: None,
                };
            }
        };
    let mut store = new_store(tool.prepared_engine(), state, limits);

    let outcome = match &tool.prepared {
        Prepared::Tool(pre) => {
            let invoke = async {
                let instance = pre.instantiate_async(&mut store).await?;
                instance.call_invoke(&mut store, &input_text).await
            };
            let invoke = bounded(invoke, deadline, limits.timeout, cancel);
            match observed.egress.until_spent(invoke).await {
                Err(stopped) => Err(stopped),
                Ok(Err(trap)) => Err(classify(&trap, &store)),
                Ok(Ok(Err(ToolError::InvalidInput(m)))) => Err(failure(
                    ErrorKind::InvalidInput,
                    format!("the tool rejected its input: {m}"),
                )),
                Ok(Ok(Err(ToolError::Failed(m)))) => Err(failure(ErrorKind::ToolError, m)),
                Ok(Ok(Ok(output))) => Ok(output),
            }
        }
        Prepared::Command(pre) => {
            let main = async {
                let command = pre.instantiate_async(&mut store).await?;
                command.wasi_cli_run().call_run(&mut store).await
            };
            let main = bounded(main, deadline, limits.timeout, cancel);
            let exit = match observed.egress.until_spent(main).await {
                Err(stopped) => Err(stopped),
                Ok(Ok(Ok(()))) => Ok(0),
                Ok(Ok(Err(()))) => Ok(1),
                Ok(Err(e)) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                    Some(exit) => Ok(exit.0),
                    None => Err(classify(&e, &store)),
                },
            };
            match exit {
                Ok(0) if observed.stdout.total() > limits.output.0 => Err(output_limit(limits)),
                Ok(0) => Ok(observed.stdout.contents().0),
                Ok(code) => {
                    let (stderr, _) = observed.stderr.contents();
                    let last = stderr.lines().last().unwrap_or("").to_string();
                    Err(failure(
                        ErrorKind::ToolError,
                        format!("the command exited with status {code}: {last}"),
                    ))
                }
                Err(f) => Err(f),
            }
        }
    };
    drop(store);

    let result = outcome.and_then(|text| {
        if text.len() as u64 > limits.output.0 {
            return Err(output_limit(limits));
        }
        serde_json::from_str(&text).map_err(|e| {
            failure(
                ErrorKind::InvalidOutput,
                format!("the tool's output is not JSON: {e}"),
            )
        })
    });
    // The tool saw `insufficient-space` and did not write all it meant to, whatever it made
    // of that: the call says so.
    let result = match observed.disk.exhausted() {
        true => Err(disk_limit(&observed.disk)),
        false => result,
    };
    let observed = Some(observed);
    Ran { result, observed }
}

/// Runs the guest until it is done, its `deadline` (`timeout` after the call was accepted)
/// passes, or the caller cancels the call. A guest running wasm yields at every epoch tick,
/// so both take effect even while it computes.
async fn bounded<T>(
    guest: impl Future<Output = T>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    cancel: Option<&tokio_util::sync::CancellationToken>,
) -> Result<T, CallFailure> {
    let cancelled = async {
        match cancel {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        done = tokio::time::timeout_at(deadline, guest) => done.map_err(|_| timeout_failure(timeout)),
        () = cancelled => Err(failure(ErrorKind::Cancelled, "the caller cancelled the call".into())),
    }
}

/// The message may carry the tool's own text, so it is bounded.
fn failure(kind: ErrorKind, message: String) -> CallFailure {
    CallFailure {
        kind,
        message: bound_text(message, MAX_ERROR_TEXT),
    }
}

fn output_limit(limits: &Limits) -> CallFailure {
    failure(
        ErrorKind::OutputLimit,
        format!("the output exceeds the limit of {}", limits.output),
    )
}

fn disk_limit(quota: &crate::sandbox::fs::DiskQuota) -> CallFailure {
    failure(
        ErrorKind::DiskLimit,
        format!(
            "the tool tried to write past its disk quota of {} on its read-write mounts and was refused (insufficient-space)",
            quota.limit()
        ),
    )
}

fn timeout_failure(limit: Duration) -> CallFailure {
    failure(
        ErrorKind::Timeout,
        format!(
            "the call did not finish within its timeout of {}",
            crate::units::format_duration(limit)
        ),
    )
}

/// Names the limit or fault behind a trap.
fn classify(error: &wasmtime::Error, store: &Store<CallState>) -> CallFailure {
    if store.data().limiter.exceeded() {
        return failure(
            ErrorKind::MemoryLimit,
            format!("the tool exceeded its memory limit: {error}"),
        );
    }
    if let Some(spent) = error.downcast_ref::<CpuExhausted>() {
        return failure(ErrorKind::CpuLimit, spent.to_string());
    }
    if let Some(ResourceTableError::Full) = error.downcast_ref::<ResourceTableError>() {
        return failure(
            ErrorKind::ResourceLimit,
            format!(
                "the tool held more than {MAX_HANDLES} host handles (open files, streams, HTTP \
                 fields…) at once"
            ),
        );
    }
    if let Some(FieldMapError::TotalSizeTooBig | FieldMapError::TooManyFields) =
        error.downcast_ref::<FieldMapError>()
    {
        return failure(
            ErrorKind::ResourceLimit,
            format!("the tool made HTTP fields larger than {MAX_FIELDS_BYTES} bytes"),
        );
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => failure(
            ErrorKind::StackOverflow,
            "the tool overflowed its stack".into(),
        ),
        Some(trap) => failure(ErrorKind::Trap, format!("the tool trapped: {trap}")),
        None => failure(
            ErrorKind::Trap,
            format!("the tool failed: {}", one_line(error)),
        ),
    }
}

fn one_line(error: &wasmtime::Error) -> String {
    format!("{error:#}").replace('\n', " ")
}

impl LoadedTool {
    fn prepared_engine(&self) -> &wasmtime::Engine {
        match &self.prepared {
            Prepared::Tool(pre) => pre.engine(),
            Prepared::Command(pre) => pre.engine(),
        }
    }
}
