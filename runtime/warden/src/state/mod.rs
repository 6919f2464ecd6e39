//! The state every `warden` process of a deployment shares: replay protection, sessions and
//! their taint, call counts for rate policies, the audit chain, approvals and revocations.
//!
//! Callers see only `StateStore`. `sqlite::SqliteStore` (one file in the state directory) is
//! the embedded default, shared by the processes of one machine; `postgres::PostgresStore`
//! is shared by the nodes of a deployment (`[state] url`). Every method that must be atomic
//! across processes says so; `conformance` holds both to the same tests.

#[cfg(test)]
mod conformance;
pub mod postgres;
pub mod sqlite;

use anyhow::{Context as _, Result};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Opens the store `deployment` names: its PostgreSQL server (`[state] url`), or else the
/// SQLite file in its state directory.
pub fn open(deployment: &crate::deployment::Deployment) -> Result<std::sync::Arc<dyn StateStore>> {
    let settings = &deployment.state;
    let Some(url) = &settings.url else {
        return sqlite::open(&deployment.state_dir);
    };
    let password = match &settings.password {
        None => None,
        Some(name) => {
            let source = deployment.secrets.get(name).with_context(|| {
                format!(
                    "{}: field `state.password`: no secret `{name}`",
                    deployment.file.display()
                )
            })?;
            Some(crate::credentials::load_secret(name, source).map_err(anyhow::Error::msg)?)
        }
    };
    postgres::open(&postgres::PostgresSettings {
        url: url.clone(),
        password,
        connections: settings.connections,
    })
}

pub trait StateStore: Send + Sync {
    /// Whether the store answers now (a server's readiness): a cheap read.
    fn ping(&self) -> Result<()>;

    /// Records a nonce until `expires` (unix seconds). False if it was seen before.
    fn use_nonce(&self, nonce: &str, expires: i64) -> Result<bool>;

    /// Creates a session (its id is fresh and random).
    fn start_session(&self, session: &Session) -> Result<()>;
    fn session(&self, id: &str) -> Result<Option<Session>>;
    /// Marks a session tainted; the first reason is kept.
    fn taint(&self, session: &str, reason: &str) -> Result<()>;

    /// Records a call by `agent` (in `session`) at `now_ms` and returns the counts before
    /// it, atomically: concurrent processes count each call once. `start` decides the call
    /// with those counts and returns its start records (none if it will not run), which are
    /// appended to the audit chain in the same transaction, as `append_audit` does: one write
    /// per call before its tool runs. An error from `start` writes nothing.
    fn record_call(
        &self,
        agent: &str,
        session: Option<&str>,
        now_ms: i64,
        start: &mut dyn FnMut(CallCounts) -> Result<Vec<AuditEntry>>,
    ) -> Result<CallCounts>;
    /// Records a call by `agent` (in `session`) at `now_ms` and appends its `records`, in
    /// one write: for a call whose decision read no count, counted when it ends.
    fn count_call(
        &self,
        agent: &str,
        session: Option<&str>,
        now_ms: i64,
        records: &[AuditEntry],
    ) -> Result<()> {
        self.record_call(agent, session, now_ms, &mut |_| Ok(records.to_vec()))
            .map(|_| ())
    }
    /// `count_call` for a caller in a task: a store that waits for a server lets the
    /// caller's thread run other tasks meanwhile. By default, `count_call` itself.
    fn count_call_in_task<'a>(
        &'a self,
        agent: &'a str,
        session: Option<&'a str>,
        now_ms: i64,
        records: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(std::future::ready(
            self.count_call(agent, session, now_ms, records),
        ))
    }
    /// Calls by `agent` in the last 60 s (to the second) before `now_ms`.
    fn recent_calls(&self, agent: &str, now_ms: i64) -> Result<u64>;

    /// Appends records to the audit chain, each linked to the one before
    /// (`link_hash`), atomically: all or none, and no other writer in between.
    /// Durable when it returns.
    fn append_audit(&self, entries: &[AuditEntry]) -> Result<()>;
    /// Up to `limit` records with `seq > after`, in order.
    fn audit_records(&self, after: u64, limit: usize) -> Result<Vec<AuditLink>>;
    /// The records of one call, in order.
    fn audit_of_call(&self, call_id: &str) -> Result<Vec<AuditLink>>;
    /// The last `count` records, in order.
    fn audit_tail(&self, count: usize) -> Result<Vec<AuditLink>>;

    /// Stores a pending approval, or returns the pending one not yet expired for the same
    /// digest (a repeated call does not pile up requests). Refused with `TooManyPending` when
    /// its agent already has `max_pending` waiting, atomically: concurrent requests cannot
    /// overshoot.
    fn request_approval(&self, request: &Approval, max_pending: u64) -> Result<Approval>;
    fn approval(&self, id: &str) -> Result<Option<Approval>>;
    /// Approvals, newest first; only pending ones unless `all`.
    fn approvals(&self, all: bool) -> Result<Vec<Approval>>;
    /// The `limit` most recent approvals that are no longer pending (decided or used).
    fn decided_approvals(&self, limit: u32) -> Result<Vec<Approval>>;
    /// Records a human's decision on a pending approval. False if it is no longer pending.
    fn decide_approval(&self, id: &str, decision: &ApprovalDecision) -> Result<bool>;
    /// Marks an approved approval used by `call_id`, atomically: false if it was not
    /// approved or was used already (of concurrent callers, exactly one gets true).
    fn use_approval(&self, id: &str, call_id: &str) -> Result<bool>;

    /// Records a revocation. False if it was revoked before. A new one is stored with one
    /// event for each of `receivers`, in the same transaction: no revocation without the
    /// events that tell downstream systems of it (`claim_events`).
    fn revoke(&self, revocation: &Revocation, receivers: &[&str]) -> Result<bool>;
    /// The first of `ids` that is revoked, if any. Refused for an id holding a NUL, which no
    /// store can hold (`checkable`), as is its revocation.
    fn revoked(&self, ids: &[(RevocationKind, &str)]) -> Result<Option<Revocation>>;
    /// `revoked` for a caller in a task, as `count_call_in_task`.
    fn revoked_in_task<'a>(
        &'a self,
        ids: &'a [(RevocationKind, &'a str)],
    ) -> BoxFuture<'a, Result<Option<Revocation>>> {
        Box::pin(std::future::ready(self.revoked(ids)))
    }
    fn revocations(&self) -> Result<Vec<Revocation>>;
    /// Tells `watcher` of revocations made by other processes, as they are made, so that
    /// what a long-running process keeps warm can go at once. Checks still ask the store
    /// (`revoked`): a store that cannot announce (SQLite) ignores the watcher.
    fn on_revocation(&self, _watcher: RevocationWatcher) {}

    /// Hands out up to `limit` revocation events for `receivers` that are not delivered, are
    /// due at `now_ms` and that no process holds; each is held until `now_ms + hold_ms` (until
    /// its attempt is recorded, or its holder is presumed gone). Oldest first. Of processes
    /// claiming at once, each event goes to one. A row this version cannot read is put off
    /// for a day, not handed out.
    fn claim_events(
        &self,
        receivers: &[&str],
        now_ms: i64,
        hold_ms: i64,
        limit: usize,
    ) -> Result<Vec<RevocationEvent>>;
    /// Records what became of an attempt to deliver `event`, if its claim still holds (false:
    /// the hold ran out and the event may be another process's now; nothing is written).
    fn event_attempted(&self, event: &RevocationEvent, attempt: &Attempt) -> Result<bool>;
    /// How many events for `receivers` are not delivered yet.
    fn pending_events(&self, receivers: &[&str]) -> Result<u64>;
}

/// A revocation to be told to one receiver (a downstream system), as a Security Event Token.
#[derive(Debug, Clone)]
pub struct RevocationEvent {
    pub seq: i64,
    pub receiver: String,
    /// The event's id, the same on every attempt: receivers recognise a repeat by it.
    pub jti: String,
    pub revocation: Revocation,
    /// Attempts made before this one.
    pub attempts: u32,
    /// Until when (unix ms) this claim holds it: the claim's token.
    pub held_until: i64,
}

/// What became of one attempt to deliver an event.
#[derive(Debug, Clone)]
pub enum Attempt {
    /// The receiver acknowledged it (at unix ms).
    Delivered { at_ms: i64 },
    /// It was not taken; try again at `retry_at_ms`.
    Failed { retry_at_ms: i64, error: String },
}

impl Attempt {
    /// The attempt's columns: delivered (unix ms), the next attempt (unix ms), the error.
    fn columns(&self) -> (Option<i64>, i64, Option<&str>) {
        match self {
            Attempt::Delivered { at_ms } => (Some(*at_ms), 0, None),
            Attempt::Failed { retry_at_ms, error } => (None, *retry_at_ms, Some(error.as_str())),
        }
    }
}

/// How long a row this version cannot read is put off.
const UNREADABLE_EVENT_DELAY_MS: i64 = 24 * 3600 * 1000;

/// A new event's id.
fn event_jti() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Told of a revocation another process made (`StateStore::on_revocation`).
pub type RevocationWatcher = Box<dyn Fn(&Revocation) + Send + Sync>;

/// What pruning keeps, and how often it runs: once when a process opens the store, then after
/// every `PRUNE_EVERY`-th write that adds a nonce, a session or an approval (the rows an agent
/// can add), so that no call pays for it and a long-running server's state stays bounded.
const PRUNE_EVERY: u64 = 1000;
/// Sessions and pending approvals are kept this long after they expire: a call naming an
/// expired session is told so (not "no such session"), and a person reviewing approvals
/// still sees the requests that lapsed. The audit record of every call keeps its session,
/// the approval it asked for or used, the decision and its reasons, for good.
pub const PRUNE_AFTER: i64 = 24 * 3600;

/// The window of `CallCounts::last_minute`, in seconds.
const RATE_WINDOW: i64 = 60;

/// An approval's stored input and status, parsed; an error names the approval.
fn approval_fields(
    id: &str,
    input: String,
    status: String,
) -> Result<(serde_json::Value, ApprovalStatus)> {
    let parsed = || -> Result<(serde_json::Value, ApprovalStatus)> {
        let input = serde_json::from_str(&input).context("its input is not JSON")?;
        let status =
            ApprovalStatus::parse(&status).with_context(|| format!("unknown status `{status}`"))?;
        Ok((input, status))
    };
    parsed().with_context(|| format!("approval {id} in the state store"))
}

/// A stored revocation kind, parsed.
fn revocation_kind(kind: String) -> Result<RevocationKind> {
    RevocationKind::parse(&kind)
        .with_context(|| format!("unknown revocation kind `{kind}` in the state store"))
}

/// A session: calls of one agent (for one user) whose provenance is tracked together.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub id: String,
    pub agent: String,
    /// The user and delegation the session acts under, verified when it started.
    pub user: Option<String>,
    pub delegation: Option<String>,
    /// The delegation's tools.
    pub scope: Vec<String>,
    /// Unix seconds.
    pub expires: i64,
    pub tainted: bool,
    /// What tainted it first.
    pub taint_reason: Option<String>,
    pub calls: u64,
}

/// The counts a call is decided with, taken as it was recorded.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallCounts {
    /// Calls by the agent in the last 60 s (to the second) before this one.
    pub last_minute: u64,
    /// Calls earlier in the session.
    pub in_session: u64,
}

/// One record to append to the chain: opaque to the store, hashed exactly as given.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub call_id: String,
    /// The record as JSON, hashed exactly as stored.
    pub body: String,
}

/// An audit record as stored, with its place in the chain.
#[derive(Debug, Clone)]
pub struct AuditLink {
    /// 1, 2, …: the record's position in the chain.
    pub seq: u64,
    pub call_id: String,
    pub body: String,
    /// The hash of the record before (zeros for the first).
    pub prev_hash: String,
    pub hash: String,
}

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of a record in the chain (`StateStore::append_audit`): its position, its call, its body and the hash before it.
pub fn link_hash(prev: &str, seq: u64, call_id: &str, body: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [prev, &seq.to_string(), call_id, body] {
        hasher.update(part.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    Used,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Used => "used",
        }
    }

    fn parse(text: &str) -> Option<ApprovalStatus> {
        [
            ApprovalStatus::Pending,
            ApprovalStatus::Approved,
            ApprovalStatus::Denied,
            ApprovalStatus::Used,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// A request for a human's approval of one exact call (`crate::approval`).
#[derive(Debug, Clone, Serialize)]
pub struct Approval {
    pub id: String,
    /// Binds the approval to (agent, user, tool, tool digest, input digest).
    pub digest: String,
    pub agent: String,
    pub user: Option<String>,
    pub tool: String,
    pub tool_digest: String,
    pub input_digest: String,
    /// The input, for the human to read before approving.
    pub input: serde_json::Value,
    /// Which policies asked for the approval, and why.
    pub reason: String,
    /// Unix seconds.
    pub created: i64,
    pub expires: i64,
    pub status: ApprovalStatus,
    /// Who approved or denied it.
    pub approver: Option<String>,
    /// The approver's Ed25519 signature over id, digest and expiry (base64url).
    pub signature: Option<String>,
    /// The call that used it.
    pub used_by: Option<String>,
    /// The session the held call was made in, and the delegation it acted under: shown to
    /// the approver (not part of what they sign; the call digest binds the call).
    pub session: Option<String>,
    pub delegation: Option<String>,
}

/// A new pending approval refused: its agent already has `max` waiting for a person (an agent
/// cannot fill the approvers' queue, or the state file).
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "agent `{agent}` already has {max} approvals waiting for a person, the most it may have: \
     a person decides on them (`warden approvals`) or they expire before it may ask for more"
)]
pub struct TooManyPending {
    pub agent: String,
    pub max: u64,
}

/// The most sessions one agent may have open at once: each MCP connection starts one, and a
/// client that connects without end must not grow the state without end.
pub const MAX_LIVE_SESSIONS: u64 = 256;

#[derive(Debug, thiserror::Error)]
#[error(
    "agent `{agent}` already has {max} open sessions, the most it may have: they expire, or \
     `warden revoke session` ends one, before it may start more"
)]
pub struct TooManySessions {
    pub agent: String,
    pub max: u64,
}

/// A human's answer to a pending approval.
#[derive(Debug, Clone)]
pub enum ApprovalDecision {
    Approved {
        approver: String,
        signature: String,
    },
    /// Denied by `by`; from the inbox, with their signature over the deny message
    /// (`approval::deny_message`).
    Denied {
        by: String,
        signature: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// An agent, by name.
    Agent,
    /// A delegation, by id.
    Delegation,
    /// A tool, by component digest (`sha256:…`).
    Tool,
    /// A credential: by name (every use of it) or a minted token's `jti`.
    Credential,
    /// A session, by id.
    Session,
    /// A publisher of signed tools, by its key (`ed25519:…`): every tool signed with it.
    Publisher,
}

impl RevocationKind {
    pub const ALL: [RevocationKind; 6] = [
        RevocationKind::Agent,
        RevocationKind::Delegation,
        RevocationKind::Tool,
        RevocationKind::Credential,
        RevocationKind::Session,
        RevocationKind::Publisher,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Agent => "agent",
            RevocationKind::Delegation => "delegation",
            RevocationKind::Tool => "tool",
            RevocationKind::Credential => "credential",
            RevocationKind::Session => "session",
            RevocationKind::Publisher => "publisher",
        }
    }

    fn parse(text: &str) -> Option<RevocationKind> {
        RevocationKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl std::str::FromStr for RevocationKind {
    type Err = UnknownRevocationKind;

    fn from_str(text: &str) -> Result<RevocationKind, UnknownRevocationKind> {
        RevocationKind::parse(text).ok_or_else(|| UnknownRevocationKind(text.to_string()))
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "`{0}` is not something Warden revokes: agent, delegation, tool, credential, session or publisher"
)]
pub struct UnknownRevocationKind(String);

/// Refuses a check (or a revocation) naming an id no store can hold (one holding a NUL:
/// PostgreSQL text holds none): such an id was never revoked, but cannot be checked either,
/// and a check that cannot be made refuses.
pub(crate) fn checkable(ids: &[(RevocationKind, &str)]) -> Result<()> {
    match ids.iter().find(|(_, id)| id.contains('\0')) {
        Some((kind, _)) => anyhow::bail!(
            "a {} id holding a NUL character cannot be checked",
            kind.as_str()
        ),
        None => Ok(()),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Revocation {
    pub kind: RevocationKind,
    pub id: String,
    /// Unix seconds.
    pub at: i64,
    pub reason: String,
}

impl std::fmt::Display for Revocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}` was revoked", self.kind.as_str(), self.id)?;
        if !self.reason.is_empty() {
            write!(f, " ({})", self.reason)?;
        }
        Ok(())
    }
}
