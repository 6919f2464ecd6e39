//! The pipeline of one call, as steps, top to bottom (`Runtime::steps`):
//! find the tool -> authenticate the agent -> verify the delegation and session -> check
//! revocations -> check the approval the caller names -> load the tool -> check the input
//! against its schema -> count the call, decide (policy) and, if allowed, record that it
//! started, in one write (a pending approval is stored when one is needed) -> spend its
//! approval -> run it in the sandbox (every request asks the call's mediator) -> taint the
//! session if the tool ingests untrusted content. Each step returns what it established or
//! the `CallFailure` that ends the call; the report is assembled once from them, and its
//! audit records are committed before it returns.
//!
//! A call's count and records are one write transaction when nothing needs them before its
//! end: no policy of the deployment reads a count, and the call is denied, or its tool can
//! change nothing outside the call (no egress rule, no writable mount), and it spends no
//! approval and is heard by nobody as it runs; the count then goes with the final records.
//! Otherwise two (three with an approval): the count with its start record, (the approval's
//! use,) the final records.

pub mod events;
mod mediator;

use crate::approval;
use crate::credentials::Secret;
use crate::error::Error;
use crate::identity::{CallContext, assertion, jwt};
use crate::policy::{
    CallFacts, Decision, Origin, OriginKind, Outcome, SessionFacts, ToolFacts, UserFacts,
};
use crate::report::{CallFailure, CallOutcome, CallRecord, CallReport, ErrorKind, Timings};
use crate::revocation::{CallIds, Refused};
use crate::runtime::{Found, LoadError, LoadedTool, Runtime};
use crate::sandbox::Observed;
use crate::sandbox::http::EgressRecord;
use crate::sandbox::run::run;
use crate::session::ActingFor;
use crate::state::{
    Approval, ApprovalStatus, AuditEntry, CallCounts, RevocationKind, Session, StateStore,
    TooManyPending,
};
use crate::trace::TraceContext;
use mediator::Mediator;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::Instrument;

/// What an orchestrator asks for: `CallRequest::new(tool, input, caller)`, then what applies
/// (`.on_behalf_of(token)`, `.session(id)`, …).
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// The caller's trace, which the call's joins (when traces are exported).
    pub trace: TraceContext,
    /// Hears what the call does as it happens (`events`).
    pub events: events::Listener,
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
            trace: TraceContext::default(),
            events: None,
        }
    }

    /// On the behalf of the user who issued this delegation token.
    pub fn on_behalf_of(mut self, token: impl Into<Option<Secret>>) -> CallRequest {
        self.on_behalf_of = token.into();
        self
    }

    /// In this session (`Runtime::start_session`).
    pub fn session(mut self, id: impl Into<Option<String>>) -> CallRequest {
        self.session = id.into();
        self
    }

    /// Whether the caller vouches for nothing in the input.
    pub fn untrusted_input(mut self, untrusted: bool) -> CallRequest {
        self.untrusted_input = untrusted;
        self
    }

    /// Where the call came from, as policies see it.
    pub fn origin(mut self, origin: Origin) -> CallRequest {
        self.origin = origin;
        self
    }

    /// With the approval a person gave for exactly this call.
    pub fn approval(mut self, id: impl Into<Option<String>>) -> CallRequest {
        self.approval = id.into();
        self
    }

    /// Joins the caller's trace (`TraceContext::new` from what a client sent).
    pub fn trace(mut self, context: TraceContext) -> CallRequest {
        self.trace = context;
        self
    }

    /// Tells `listener` what the call does as it happens.
    pub fn events(mut self, listener: Arc<dyn events::CallEvents>) -> CallRequest {
        self.events = Some(listener);
        self
    }

    fn tell(&self, event: events::CallEvent) {
        if let Some(listener) = &self.events {
            listener.event(event);
        }
    }

    /// Stopped when `token` is cancelled, even while its tool runs.
    pub fn cancel(mut self, token: tokio_util::sync::CancellationToken) -> CallRequest {
        self.cancel = Some(token);
        self
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
    /// The key it proved, as the deployment wrote it: a reload that removes the agent or
    /// changes its key ends what it authenticated.
    key: Option<String>,
}

impl AuthenticatedAgent {
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// `agent` as registered now, authenticated by a proof checked elsewhere (an access
    /// token whose client assertion it signed); none if it is not an agent with a key.
    pub(crate) fn registered(
        deployment: &crate::Deployment,
        agent: &str,
    ) -> Option<AuthenticatedAgent> {
        agent_key(deployment, agent).map(|key| AuthenticatedAgent {
            agent: agent.to_string(),
            key: Some(key),
        })
    }
}

impl Runtime {
    /// Verifies a session assertion (`identity::assertion::sign_session`) and returns a session
    /// whose calls need no further signature: for a long-lived caller such as an MCP server
    /// whose agent proved its key when it started.
    pub fn authenticate(&self, assertion: &Secret) -> Result<AuthenticatedAgent, Error> {
        // One deployment for the proof and the key it is bound to (a reload may come between).
        let deployment = self.deployment();
        let agent = assertion::verify(
            assertion.expose(),
            &deployment,
            self.state()?.as_ref(),
            assertion::SESSION_TOOL,
            &serde_json::Value::Null,
        )?;
        let key = agent_key(&deployment, &agent);
        Ok(AuthenticatedAgent { agent, key })
    }

    /// Whether `agent` is still in the deployment with the key it proved.
    pub fn is_current(&self, agent: &AuthenticatedAgent) -> bool {
        agent.key.is_some() && agent_key(&self.deployment(), &agent.agent) == agent.key
    }

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
            let accepted = Instant::now();
            let mut record = CallRecord {
                call_id,
                time_ms: jwt::now_ms(),
                agent,
                claimed_agent,
                user: None,
                delegation: None,
                session: request.session.clone(),
                origin: request.origin.clone(),
                tool: request.tool.clone(),
                tool_digest: None,
                input_digest: assertion::input_digest(&request.input),
                input: None,
                decision: Decision::deny("not decided".into()),
                approval: None,
                approved_by: None,
                credentials: vec![],
                egress_requests: 0,
                outcome: CallOutcome::Error,
                error: None,
                duration_ms: 0.0,
                timings: Timings {
                    accepted: Some(SystemTime::now()),
                    ..Timings::default()
                },
            };
            let mut after = After::default();
            let result = self
                .steps(&request, &mut record, &mut after, accepted)
                .await;
            let mut report =
                CallReport::assemble(record, result, after.observed, accepted.elapsed());
            // The record is durable before the caller sees the result; without it, no result.
            let writing = Instant::now();
            let written = self.commit(&request, &report, after.count).await;
            report.record.timings.store += writing.elapsed();
            if let Err(e) = written {
                self.metrics().store_error();
                tracing::error!(error = %format!("{e:#}"), "writing the audit record failed");
                report.withhold(CallFailure::new(
                    ErrorKind::Internal,
                    format!(
                        "the call's audit record could not be written, so its result is \
                         withheld: {e:#}"
                    ),
                ));
            }
            self.metrics().call(&request.tool, &report);
            if let Some(traces) = self.traces() {
                traces.export(crate::trace::call_spans(&report, &request.trace));
            }
            let duration_ms = report.record.duration_ms;
            match &report.record.error {
                None => {
                    let egress = report.egress.len();
                    tracing::info!(duration_ms, egress, "call succeeded")
                }
                Some(e) => {
                    let message = crate::text::printable(&e.message);
                    tracing::info!(kind = ?e.kind, %message, duration_ms, "call failed")
                }
            }
            report
        }
        .instrument(span)
        .await
    }

    /// The steps of one call. `record` holds what the steps established, for the report
    /// however the call ends; `after`, what is left for its end. `accepted`: when the call
    /// was accepted; its timeout counts from then.
    async fn steps(
        &self,
        request: &CallRequest,
        record: &mut CallRecord,
        after: &mut After,
        accepted: Instant,
    ) -> Result<serde_json::Value, CallFailure> {
        let found = self.find_tool(&request.tool)?;
        // One policy set decides the call and its requests, whatever a reload does meanwhile.
        let policies = self.policies();
        // Authenticate, then authorize, before anything of the tool is loaded or run.
        let state = self.state().map_err(CallFailure::from)?.clone();
        let agent = self.authenticate_caller(request, state.as_ref())?;
        record.agent = Some(agent.clone());
        record.claimed_agent = None;
        let (session, acting) = self.acting_for(request, &agent)?;
        record.user = acting.as_ref().map(|a| a.user.clone());
        record.delegation = acting.as_ref().map(|a| a.delegation.clone());
        let tool_facts = found.facts();
        let publisher = found.signer();
        let revocations = self
            .check_revocations(
                request,
                &agent,
                acting.as_ref(),
                &tool_facts,
                publisher,
                state.clone(),
            )
            .await?;
        let identity = approval::CallIdentity {
            agent: &agent,
            user: acting.as_ref().map(|a| a.user.as_str()),
            delegation: acting.as_ref().map(|a| a.delegation.as_str()),
            session: request.session.as_deref(),
            tool: &request.tool,
            tool_digest: &tool_facts.digest,
            input_digest: &record.input_digest,
        }
        .digest();
        record.approved_by = self.check_named_approval(request, state.as_ref(), &identity)?;
        record.approval = request.approval.clone();
        let tool = self.load_tool(request, found).await?;
        record.tool_digest = Some(tool.digest.to_string());
        check_input(&tool, request)?;
        if let (true, Some(id)) = (request.untrusted_input, &request.session) {
            state
                .taint(
                    id,
                    &format!("call {} carried untrusted input", record.call_id),
                )
                .map_err(internal("tainting the session"))?;
        }
        let facts = CallFacts {
            agent: agent.clone(),
            tool: tool_facts,
            user: acting.as_ref().map(|a| UserFacts {
                name: a.user.clone(),
                scope: a.scope.clone(),
            }),
            origin: request.origin.clone(),
            session: SessionFacts {
                id: request.session.clone().unwrap_or_default(),
                tainted: session.as_ref().is_some_and(|s| s.tainted) || request.untrusted_input,
                calls: 0,
            },
            calls_last_minute: 0,
            time: 0,
        };
        let facts =
            self.decide_and_record(request, record, facts, &policies, &tool, &mut after.count)?;
        self.hold_for_approval(request, record, &facts, identity)?;
        // The signing key is needed only by tools whose rules carry credentials.
        let minter = match tool.grants.credentials.is_empty() {
            true => None,
            false => Some(self.minter().map_err(internal("loading the signing key"))?),
        };
        let mediator = Arc::new(Mediator {
            revocations,
            policies,
            call: facts,
        });
        spend_approval(record, state.as_ref())?;
        let context = CallContext {
            call_id: record.call_id.clone(),
            tool: request.tool.clone(),
            agent,
            user: acting.map(|a| a.user),
        };
        let running = (SystemTime::now(), Instant::now());
        let following = crate::sandbox::run::Following {
            accepted: accepted.into(),
            cancel: request.cancel.as_ref(),
            events: request.events.clone(),
        };
        let ran = run(
            &tool.prepared,
            &tool.grants,
            mediator,
            minter,
            context,
            &request.input,
            following,
        )
        .await;
        record.timings.ran = Some((running.0, running.1.elapsed()));
        after.observed = ran.observed;
        // What the tool brought in is untrusted from now on, whether or not it succeeded.
        if let (true, Some(id)) = (tool.manifest.ingests_untrusted, &request.session)
            && let Err(e) = state.taint(
                id,
                &format!(
                    "call {} ran `{}`, which ingests untrusted content",
                    record.call_id, request.tool
                ),
            )
        {
            tracing::error!(error = %format!("{e:#}"), "tainting the session failed");
        }
        ran.result
    }

    /// Step: the tool by name. An unknown tool is a usage error, not a policy decision.
    fn find_tool(&self, name: &str) -> Result<Found, CallFailure> {
        self.find(name).map_err(|e| load_failure(name, e))
    }

    /// Step: who is calling, proven.
    fn authenticate_caller(
        &self,
        request: &CallRequest,
        state: &dyn StateStore,
    ) -> Result<String, CallFailure> {
        match &request.caller {
            Caller::Assertion(token) => assertion::verify(
                token.expose(),
                &self.deployment(),
                state,
                &request.tool,
                &request.input,
            )
            .map_err(|e| match e {
                Error::Refused(reason) => {
                    CallFailure::refused(format!("authentication failed: {reason}"))
                }
                e => CallFailure::from(e),
            }),
            Caller::Authenticated(a) if self.is_current(a) => Ok(a.agent.clone()),
            Caller::Authenticated(a) => Err(CallFailure::refused(format!(
                "authentication failed: agent `{}` is no longer in the deployment with the key it proved",
                a.agent
            ))),
        }
    }

    /// Step: the session the call belongs to and the user it acts for, verified. A
    /// delegation only narrows what the agent may do.
    fn acting_for(
        &self,
        request: &CallRequest,
        agent: &str,
    ) -> Result<(Option<Session>, Option<ActingFor>), CallFailure> {
        let (session, acting) = self.resolve_session(
            request.session.as_deref(),
            agent,
            request.on_behalf_of.as_ref(),
        )?;
        if let Some(a) = acting.as_ref().filter(|a| !a.allows(&request.tool)) {
            return Err(CallFailure::refused(format!(
                "tool `{}` is not in the scope of delegation {} from user `{}`",
                request.tool, a.delegation, a.user
            )));
        }
        Ok((session, acting))
    }

    /// Step: anything the call runs under that is revoked refuses it; a revoked tool is
    /// forgotten. Returns the ids, which the mediator checks again at every request.
    async fn check_revocations(
        &self,
        request: &CallRequest,
        agent: &str,
        acting: Option<&ActingFor>,
        tool: &ToolFacts,
        publisher: Option<String>,
        store: Arc<dyn StateStore>,
    ) -> Result<CallIds, CallFailure> {
        let signed_by = publisher.clone();
        let revocations = CallIds {
            store,
            ids: [
                Some((RevocationKind::Agent, agent.to_string())),
                Some((RevocationKind::Tool, tool.digest.clone())),
                acting.map(|a| (RevocationKind::Delegation, a.delegation.clone())),
                request
                    .session
                    .clone()
                    .map(|s| (RevocationKind::Session, s)),
                publisher.map(|p| (RevocationKind::Publisher, p)),
            ]
            .into_iter()
            .flatten()
            .collect(),
        };
        match revocations.check_in_task().await {
            Ok(()) => {}
            // The store could not be read: Warden failed, the caller did not.
            Err(Refused { kind: None, reason }) => {
                return Err(CallFailure::new(ErrorKind::Internal, reason));
            }
            Err(Refused { kind, reason }) => {
                // What was revoked leaves this runtime's caches too, whoever revoked it.
                match (kind, signed_by) {
                    (Some(RevocationKind::Tool), _) => self.evict(&tool.digest),
                    (Some(RevocationKind::Publisher), Some(publisher)) => {
                        self.evict_publisher(&publisher)
                    }
                    _ => {}
                }
                return Err(CallFailure::refused(reason));
            }
        }
        Ok(revocations)
    }

    /// Step: the approval the caller names must be one a person gave for exactly this call.
    /// Returns who approved it.
    fn check_named_approval(
        &self,
        request: &CallRequest,
        state: &dyn StateStore,
        identity: &str,
    ) -> Result<Option<String>, CallFailure> {
        let Some(id) = &request.approval else {
            return Ok(None);
        };
        let given = state
            .approval(id)
            .map_err(internal("reading the approval"))?
            .ok_or_else(|| CallFailure::refused(format!("no approval `{id}`")))?;
        approval::check(&given, &self.deployment(), identity, jwt::now())
            .map_err(CallFailure::refused)?;
        Ok(given.approver)
    }

    /// Step: the tool compiled, linked and described (warm after its first call).
    async fn load_tool(
        &self,
        request: &CallRequest,
        found: Found,
    ) -> Result<Arc<LoadedTool>, CallFailure> {
        self.load_found(&request.tool, found)
            .await
            .map_err(|e| load_failure(&request.tool, e))
    }

    /// Step: counted, decided and, if allowed, on record (`started`) in one write, long
    /// before its tool runs: a process killed while the tool runs leaves a call that started
    /// and never finished, not effects without a record. Where nothing needs the count or a
    /// record before the call ends (no decision reads a count, and not `counted_first`), the
    /// call is decided without the store and `count` says it is counted with its final
    /// records: one write per call.
    /// Returns the facts it was decided with; a denial ends the call (and is counted at its
    /// end if `count` says so).
    fn decide_and_record(
        &self,
        request: &CallRequest,
        record: &mut CallRecord,
        mut facts: CallFacts,
        policies: &crate::policy::Policies,
        tool: &LoadedTool,
        count: &mut Count,
    ) -> Result<CallFacts, CallFailure> {
        let state = self.state().map_err(CallFailure::from)?.as_ref();
        let now_ms = jwt::now_ms();
        facts.time = now_ms / 1000;
        let agent = facts.agent.clone();
        let session = request.session.as_deref();
        let counts_read = policies.read_counts(&facts);
        let recording = Instant::now();
        let mut deciding = Duration::ZERO;
        let stored = if counts_read {
            // Counted and decided under the store's write lock: concurrent calls see each
            // other's counts.
            count_first(state, &agent, session, now_ms, &mut |counts| {
                facts.session.calls = counts.in_session;
                facts.calls_last_minute = counts.last_minute;
                deciding = decide(policies, request, &facts, record);
                self.start_record(request, record)
            })
        } else {
            // No decision reads a count: the call is decided first, and counted first only
            // if something before its end needs that.
            deciding = decide(policies, request, &facts, record);
            match counted_first(request, record, tool) {
                true => count_first(state, &agent, session, now_ms, &mut |_| {
                    self.start_record(request, record)
                }),
                false => {
                    *count = Count::AtEnd { agent, now_ms };
                    Ok(None)
                }
            }
        };
        record.timings.decision = deciding;
        record.timings.store += recording.elapsed().saturating_sub(deciding);
        let counts = stored.map_err(|e| {
            self.metrics().store_error();
            internal("recording the call")(e)
        })?;
        // Egress decisions see the counts too.
        if let Some(counts) = counts {
            facts.session.calls = counts.in_session;
            facts.calls_last_minute = counts.last_minute;
        }
        let decision = &record.decision;
        tracing::info!(outcome = ?decision.outcome, policies = ?decision.policies, reasons = ?decision.reasons, "decision");
        request.tell(events::CallEvent::Decided {
            outcome: serde_json::to_value(decision.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            summary: decision.summary(),
        });
        match decision.outcome {
            Outcome::Deny => Err(CallFailure::new(
                ErrorKind::Denied,
                format!("denied: {}", decision.summary()),
            )),
            Outcome::Allow | Outcome::ApprovalRequired => Ok(facts),
        }
    }

    /// The record that an allowed call started (none for another decision).
    fn start_record(
        &self,
        request: &CallRequest,
        record: &CallRecord,
    ) -> anyhow::Result<Vec<AuditEntry>> {
        match record.decision.outcome {
            Outcome::Allow => {
                let mut started = record.clone();
                started.outcome = CallOutcome::Started;
                self.audit_entries(request, &started, &[], crate::audit::started)
            }
            Outcome::Deny | Outcome::ApprovalRequired => Ok(vec![]),
        }
    }

    /// Step: a call that policy permits only with a person's approval stores a pending
    /// approval for exactly this call (or finds the one pending) and ends, naming it.
    fn hold_for_approval(
        &self,
        request: &CallRequest,
        record: &mut CallRecord,
        facts: &CallFacts,
        identity: String,
    ) -> Result<(), CallFailure> {
        if record.decision.outcome != Outcome::ApprovalRequired {
            return Ok(());
        }
        let summary = record.decision.summary();
        let id = self
            .request_approval(request, record, facts, identity, summary.clone())
            .map_err(|e| match e.downcast::<TooManyPending>() {
                Ok(full) => CallFailure::new(ErrorKind::Denied, format!("denied: {full}")),
                Err(e) => {
                    CallFailure::from(Error::Internal(e.context("recording the approval request")))
                }
            })?;
        let message = format!(
            "approval required: {summary}. Approval {id} is pending: a person approves it with \
             `warden approve {id} --key APPROVER_KEY`, then repeat this exact call with \
             --approval {id}"
        );
        request.tell(events::CallEvent::Held {
            approval: id.clone(),
        });
        record.approval = Some(id);
        Err(CallFailure::new(ErrorKind::ApprovalRequired, message))
    }

    /// Stores a pending approval for this exact call (or finds the one already pending) and
    /// returns its id.
    fn request_approval(
        &self,
        request: &CallRequest,
        record: &CallRecord,
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
            input_digest: record.input_digest.clone(),
            input: request.input.clone(),
            reason,
            created: now,
            expires: now.saturating_add(
                i64::try_from(self.deployment().approvals.lifetime.as_secs()).unwrap_or(i64::MAX),
            ),
            status: ApprovalStatus::Pending,
            approver: None,
            signature: None,
            used_by: None,
            session: record.session.clone(),
            delegation: record.delegation.clone(),
        };
        let stored = self
            .state()?
            .request_approval(&pending, approval::MAX_PENDING_PER_AGENT)?;
        // A call asked for again finds its approval pending, announced already.
        if stored.id == pending.id {
            self.announce_held(&stored);
        }
        Ok(stored.id)
    }

    /// Commits a call's final records to the audit chain (unless the deployment turned it
    /// off), with its count if that was left to its end.
    async fn commit(
        &self,
        request: &CallRequest,
        report: &CallReport,
        count: Count,
    ) -> anyhow::Result<()> {
        let entries = self.audit_entries(
            request,
            &report.record,
            &report.egress,
            crate::audit::entries,
        )?;
        match count {
            Count::AtEnd { agent, now_ms } => {
                self.state()?
                    .count_call_in_task(&agent, request.session.as_deref(), now_ms, &entries)
                    .await
            }
            Count::Done if entries.is_empty() => Ok(()),
            Count::Done => self.state()?.append_audit(&entries),
        }
    }

    /// A call's records as `records` (`audit::started` or `audit::entries`) makes them, with
    /// the input if the deployment keeps inputs; none if the deployment keeps no audit.
    fn audit_entries(
        &self,
        request: &CallRequest,
        record: &CallRecord,
        egress: &[EgressRecord],
        records: Records,
    ) -> anyhow::Result<Vec<AuditEntry>> {
        let deployment = self.deployment();
        let settings = &deployment.audit;
        if !settings.enabled {
            return Ok(vec![]);
        }
        records(
            record,
            egress,
            settings.record_input.then_some(&request.input),
        )
    }
}

/// What the steps leave for the end of the call.
#[derive(Default)]
struct After {
    /// What its tool did, once it ran.
    observed: Option<Observed>,
    count: Count,
}

/// Whether the call is still to be counted when it ends.
#[derive(Default)]
enum Count {
    /// Counted already, or never to be (it ended before its decision).
    #[default]
    Done,
    /// Decided at `now_ms` (unix ms) without its count, which goes with its final records.
    AtEnd { agent: String, now_ms: i64 },
}

/// Decides `facts`' call into `record`; returns how long the policies took.
fn decide(
    policies: &crate::policy::Policies,
    request: &CallRequest,
    facts: &CallFacts,
    record: &mut CallRecord,
) -> Duration {
    record.timings.decided_at = Some(SystemTime::now());
    let started = Instant::now();
    record.decision = policies.decide_invoke(
        facts,
        &request.input,
        request.untrusted_input,
        request.approval.is_some(),
    );
    started.elapsed()
}

/// Must the call be counted (and, if allowed, on record) before its end? Yes if anything of
/// it can be seen before then: its tool can change something outside the call or taints
/// its session, it spends an approval (a spent approval always has its call) or waits for
/// one, or a listener hears it as it runs. A denied call never runs its tool.
fn counted_first(request: &CallRequest, record: &CallRecord, tool: &LoadedTool) -> bool {
    request.approval.is_some()
        || request.events.is_some()
        || match record.decision.outcome {
            Outcome::Allow => {
                tool.grants.can_act_outside()
                    || (tool.manifest.ingests_untrusted && request.session.is_some())
            }
            Outcome::ApprovalRequired => true,
            Outcome::Deny => false,
        }
}

/// Counts the call under the store's write lock, with the records `start` makes from the
/// counts before it. A store that never asked for them decided nothing and put nothing on
/// record: an error, and nothing runs.
fn count_first(
    state: &dyn StateStore,
    agent: &str,
    session: Option<&str>,
    now_ms: i64,
    start: &mut dyn FnMut(CallCounts) -> anyhow::Result<Vec<AuditEntry>>,
) -> anyhow::Result<Option<CallCounts>> {
    let mut asked = false;
    let counts = state.record_call(agent, session, now_ms, &mut |counts| {
        asked = true;
        start(counts)
    })?;
    anyhow::ensure!(
        asked,
        "the state store recorded the call without asking for its decision and records"
    );
    Ok(Some(counts))
}

/// How the audit makes a call's records (`audit::started`, `audit::entries`).
type Records =
    fn(&CallRecord, &[EgressRecord], Option<&serde_json::Value>) -> anyhow::Result<Vec<AuditEntry>>;

/// Step: the input against the tool's schema, before the decision: a person is never asked
/// to approve an input the tool would reject. The schema comes from the loaded tool (its
/// `describe`), so only an authenticated agent's call loads it.
/// The public key `deployment` gives `agent`.
fn agent_key(deployment: &crate::Deployment, agent: &str) -> Option<String> {
    deployment
        .agents
        .get(agent)
        .and_then(|a| a.public_key.clone())
}

fn check_input(tool: &LoadedTool, request: &CallRequest) -> Result<(), CallFailure> {
    let problems: Vec<String> = tool
        .validator
        .iter_errors(&request.input)
        .take(3)
        .map(|error| {
            // Where and which rule, never the value: an input is the agent's, may hold a
            // secret, and the error is recorded even where inputs are not.
            let at = error.instance_path().to_string();
            let rule = error.schema_path().to_string();
            let keyword = rule.rsplit('/').next().unwrap_or_default();
            // A missing field's name is the schema's, not the agent's: say it.
            let missing = match error.kind() {
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    format!(": {property} is missing")
                }
                _ => String::new(),
            };
            format!("input{at} does not satisfy `{keyword}` (schema {rule}){missing}")
        })
        .collect();
    match problems.is_empty() {
        true => Ok(()),
        false => Err(CallFailure::new(
            ErrorKind::InvalidInput,
            format!(
                "{} (schema of tool `{}`)",
                problems.join("; "),
                request.tool
            ),
        )),
    }
}

/// Step: the approval is spent once, atomically (of two calls racing with one approval, one
/// runs), and after the call is on record: a spent approval always has its call.
fn spend_approval(record: &CallRecord, state: &dyn StateStore) -> Result<(), CallFailure> {
    let Some(id) = &record.approval else {
        return Ok(());
    };
    match state
        .use_approval(id, &record.call_id)
        .map_err(internal("using the approval"))?
    {
        true => Ok(()),
        false => Err(CallFailure::refused(format!(
            "approval {id} has already been used"
        ))),
    }
}

fn load_failure(tool: &str, e: LoadError) -> CallFailure {
    match e {
        LoadError::Unknown(_) => CallFailure::new(ErrorKind::UnknownTool, e.to_string()),
        e => CallFailure::new(
            ErrorKind::InvalidTool,
            format!("tool `{tool}` cannot be loaded: {e}"),
        ),
    }
}

/// A failure of Warden itself while `doing` something.
fn internal(doing: &'static str) -> impl FnOnce(anyhow::Error) -> CallFailure {
    move |e| CallFailure::from(Error::Internal(e.context(doing)))
}

/// The agent an assertion claims to be from, before (or without) its signature checked.
fn claimed_agent(token: &Secret) -> String {
    // The caller's own text, unverified: kept short in reports, records and logs.
    jwt::peek_claims::<assertion::CallAssertion>(token.expose())
        .map(|c| crate::sandbox::egress::clip(&c.sub, 128))
        .unwrap_or_else(|_| "(unreadable assertion)".into())
}
