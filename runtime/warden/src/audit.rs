//! The audit log: one record per call and one per egress request, appended to a hash chain
//! in the state store before the call's result is returned, and for a call that runs its
//! tool, a `started` record committed before the tool runs (a process killed meanwhile
//! leaves a call that started and never finished, which `verify` and `explain` name). Each record holds the hash of the
//! one before, so editing, deleting or reordering a record breaks the chain at that record;
//! `warden audit verify` recomputes it. Records hold digests, ids and decisions, never a
//! credential's value; the input itself only if the deployment asks (`[audit] record_input`),
//! with secret-looking values redacted.

use crate::report::CallRecord;
use crate::sandbox::http::EgressRecord;
use crate::state::{AuditEntry, AuditLink, GENESIS, StateStore, link_hash};
use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    Call(CallRecord),
    Egress(EgressEntry),
    /// The call as it was when its tool started (outcome `started`); its `call` record
    /// follows when it ends.
    Started(CallRecord),
    /// A process reloaded (or refused to reload) its policies and tools (`Runtime::reload`).
    Reload(ReloadRecord),
    /// A downstream receiver acknowledged a revocation's event.
    RevocationEvent(EventRecord),
    /// A tool was registered, replaced or removed (`warden tool add|remove`).
    Tool(ToolRecord),
    /// A held call was announced to the approvals webhook, or could not be.
    Notification(NotificationRecord),
    /// An access token was issued at the token endpoint (MCP over HTTP).
    Token(TokenRecord),
}

/// An access token Warden issued (`/oauth/token`): to whom, for what, until when. Never the
/// token itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    /// `token-<jti>`: its place in the chain, as a call id is.
    pub id: String,
    /// Unix milliseconds.
    pub time_ms: i64,
    /// The agent it was issued to (the client).
    pub agent: String,
    /// On behalf of a user (a token exchange): the user, and the delegation's id.
    pub user: Option<String>,
    pub delegation: Option<String>,
    /// What `warden revoke credential` ends it by.
    pub jti: String,
    /// The resource it is for (its audience).
    pub resource: String,
    /// Unix seconds.
    pub expires: i64,
}

/// What became of announcing a held call (`[approvals.notify]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotificationRecord {
    /// `notify-<approval id>`: its place in the chain, as a call id is.
    pub id: String,
    /// Unix milliseconds, of the last attempt.
    pub time_ms: i64,
    pub approval: String,
    /// The webhook, without its path and query.
    pub webhook: String,
    pub attempts: u32,
    pub delivered: bool,
    /// Why the last attempt failed.
    pub error: Option<String>,
}

/// A change to the registered tools.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolRecord {
    /// `tool-…`: its place in the chain, as a call id is.
    pub id: String,
    /// Unix milliseconds.
    pub time_ms: i64,
    pub action: ToolAction,
    pub name: String,
    /// The digest registered now (none once removed).
    pub digest: Option<String>,
    /// The digest it replaced or removed.
    pub previous: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolAction {
    Added,
    Replaced,
    Removed,
}

/// A revocation event a receiver acknowledged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    /// `event-<jti>`: its place in the chain, as a call id is.
    pub id: String,
    /// Unix milliseconds, when it was acknowledged.
    pub time_ms: i64,
    pub receiver: String,
    /// The event's `jti`.
    pub jti: String,
    /// What was revoked.
    pub kind: crate::state::RevocationKind,
    pub revoked: String,
    /// The attempts it took, this one included.
    pub attempts: u32,
}

/// What a reload changed, or why it changed nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadRecord {
    /// `reload-…`: its place in the chain, as a call id is.
    pub id: String,
    /// Unix milliseconds.
    pub time_ms: i64,
    /// The new policy set took effect (false: it was refused and the old one kept).
    pub applied: bool,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The ids of the policies in force after it.
    pub policies: Vec<String>,
    /// The warm tools dropped (an applied reload drops them all: each loads again, as it
    /// is on disk now, at its next call).
    pub tools_dropped: Vec<String>,
    /// `warden.toml` changed, and the new one took effect.
    #[serde(default)]
    pub deployment_changed: bool,
}

/// One request a tool made, allowed or not: its egress record, placed in its call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EgressEntry {
    pub call_id: String,
    /// Its place among the call's requests, from 0.
    pub index: usize,
    #[serde(flatten)]
    pub request: EgressRecord,
}

/// The records of a finished call: the call's, then one per egress request.
pub fn entries(
    record: &CallRecord,
    egress: &[EgressRecord],
    input: Option<&serde_json::Value>,
) -> Result<Vec<AuditEntry>> {
    let call = with_input(record, input);
    std::iter::once(Record::Call(call))
        .chain(egress.iter().enumerate().map(|(index, request)| {
            Record::Egress(EgressEntry {
                call_id: record.call_id.clone(),
                index,
                request: request.clone(),
            })
        }))
        .map(|record| entry(&record))
        .collect()
}

/// The record of a call whose tool is about to run (decided, not yet ended).
pub fn started(
    record: &CallRecord,
    _egress: &[EgressRecord],
    input: Option<&serde_json::Value>,
) -> Result<Vec<AuditEntry>> {
    Ok(vec![entry(&Record::Started(with_input(record, input)))?])
}

/// The call's record as the audit keeps it: with the input, scrubbed, if the deployment
/// records inputs.
fn with_input(record: &CallRecord, input: Option<&serde_json::Value>) -> CallRecord {
    CallRecord {
        input: input.map(scrub),
        ..record.clone()
    }
}

/// `record` as the chain keeps it, placed by its call (or its own id: a reload, an event,
/// a tool change).
pub fn entry(record: &Record) -> Result<AuditEntry> {
    Ok(AuditEntry {
        call_id: record.id().to_string(),
        body: serde_json::to_string(record)?,
    })
}

impl Record {
    /// The call it belongs to, or its own id.
    fn id(&self) -> &str {
        match self {
            Record::Call(c) | Record::Started(c) => &c.call_id,
            Record::Egress(e) => &e.call_id,
            Record::Reload(r) => &r.id,
            Record::RevocationEvent(e) => &e.id,
            Record::Tool(t) => &t.id,
            Record::Notification(n) => &n.id,
            Record::Token(t) => &t.id,
        }
    }

    /// Whether it is a record of no call (a reload, an event, a tool change, a notification).
    fn is_operation(&self) -> bool {
        !matches!(
            self,
            Record::Call(_) | Record::Started(_) | Record::Egress(_)
        )
    }

    /// A record of no call (a reload, an acknowledged revocation event, a tool change) in one
    /// line, escaped; none for a call's records.
    fn operation_line(&self, seq: u64) -> Option<String> {
        let line = match self {
            Record::Reload(r) => reload_line(seq, r),
            Record::RevocationEvent(e) => event_line(seq, e),
            Record::Tool(t) => tool_line(seq, t),
            Record::Notification(n) => notification_line(seq, n),
            Record::Token(t) => token_line(seq, t),
            Record::Call(_) | Record::Started(_) | Record::Egress(_) => return None,
        };
        Some(crate::text::printable(&line).into_owned())
    }
}

/// The input as recorded: values under secret-looking keys, and strings that look like
/// tokens, replaced.
pub fn scrub(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    const SECRET_KEYS: [&str; 8] = [
        "password",
        "passwd",
        "secret",
        "token",
        "key",
        "authorization",
        "cookie",
        "credential",
    ];
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    if SECRET_KEYS.iter().any(|s| lower.contains(s)) {
                        (k.clone(), Value::String("[REDACTED]".into()))
                    } else {
                        (k.clone(), scrub(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(scrub).collect()),
        Value::String(s) if looks_like_token(s) => Value::String("[REDACTED]".into()),
        other => other.clone(),
    }
}

/// A JWT (`eyJ…` in three parts) or a bearer value.
fn looks_like_token(s: &str) -> bool {
    let s = s.trim();
    (s.starts_with("eyJ") && s.split('.').count() == 3)
        || s.get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("bearer "))
}

/// The chain checked end to end.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub records: u64,
    pub calls: u64,
    /// The hash of the last record: keep it elsewhere to detect a later truncation.
    pub head: String,
    /// Calls whose tool started and that have no final record: their process was killed
    /// (the tool's effects may have happened) or they still run. Not a broken chain.
    pub unfinished: Vec<Unfinished>,
}

/// A call with a `started` record and no `call` record after it.
#[derive(Debug, Clone, Serialize)]
pub struct Unfinished {
    /// The `started` record.
    pub seq: u64,
    pub call_id: String,
}

impl std::fmt::Display for Unfinished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "call {} started (record #{}) and never finished",
            self.call_id, self.seq
        )
    }
}

/// The first record that does not belong where it is.
#[derive(Debug, Clone, Serialize)]
pub struct Broken {
    pub seq: u64,
    pub call_id: String,
    pub problem: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record #{} (call {}): {}",
            self.seq, self.call_id, self.problem
        )
    }
}

/// Recomputes the chain. Err: the store could not be read; Ok(Err): the chain is broken.
pub fn verify(store: &dyn StateStore) -> Result<Result<Verified, Broken>> {
    const PAGE: usize = 1000;
    let mut verified = Verified {
        records: 0,
        calls: 0,
        head: GENESIS.to_string(),
        unfinished: vec![],
    };
    // Calls started and not yet ended, by id: as many as ran at once, plus the unfinished.
    let mut running: std::collections::HashMap<String, u64> = Default::default();
    let mut last_seq = 0;
    loop {
        let page = store.audit_records(last_seq, PAGE)?;
        for link in &page {
            let broken = |problem: String| Broken {
                seq: link.seq,
                call_id: link.call_id.clone(),
                problem,
            };
            if link_hash(&link.prev_hash, link.seq, &link.call_id, &link.body) != link.hash {
                return Ok(Err(broken(
                    "its contents do not match its hash (the record was edited)".into(),
                )));
            }
            if link.prev_hash != verified.head || Some(link.seq) != last_seq.checked_add(1) {
                return Ok(Err(broken(format!(
                    "it does not follow record #{last_seq} (a record before it was deleted, \
                     inserted or moved)"
                ))));
            }
            match serde_json::from_str::<Record>(&link.body) {
                Ok(Record::Call(c)) if c.call_id == link.call_id => {
                    running.remove(&c.call_id);
                    verified.calls += 1;
                }
                Ok(Record::Started(c)) if c.call_id == link.call_id => {
                    running.insert(c.call_id, link.seq);
                }
                Ok(Record::Egress(e)) if e.call_id == link.call_id => {}
                Ok(r) if r.is_operation() && r.id() == link.call_id => {}
                Ok(_) => return Ok(Err(broken("it names another call".into()))),
                Err(e) => return Ok(Err(broken(format!("it is not an audit record: {e}")))),
            }
            verified.records += 1;
            verified.head = link.hash.clone();
            last_seq = link.seq;
        }
        if page.len() < PAGE {
            verified.unfinished = running
                .into_iter()
                .map(|(call_id, seq)| Unfinished { seq, call_id })
                .collect();
            verified.unfinished.sort_by_key(|u| u.seq);
            return Ok(Ok(verified));
        }
    }
}

/// A stored record, read back.
pub fn parse(link: &AuditLink) -> Result<Record> {
    serde_json::from_str(&link.body).with_context(|| format!("audit record #{}", link.seq))
}

/// A call explained for a human: who, on whose behalf, what it reached, which policies
/// allowed it, how it ended (or that it started and never finished). Every line goes through
/// `text::printable`: agents, tools and upstreams chose much of what is shown.
pub fn explain(links: &[AuditLink]) -> Result<String> {
    let records = links
        .iter()
        .map(|link| Ok((link.seq, parse(link)?)))
        .collect::<Result<Vec<_>>>()?;
    let finished: std::collections::HashSet<&str> = records
        .iter()
        .filter_map(|(_, r)| match r {
            Record::Call(c) => Some(c.call_id.as_str()),
            _ => None,
        })
        .collect();
    let mut out = String::new();
    for (seq, record) in &records {
        match record {
            Record::Call(c) => explain_call(&mut out, c, *seq, None)?,
            // A call that ended says all its start record did.
            Record::Started(c) if finished.contains(c.call_id.as_str()) => {}
            Record::Started(c) => explain_call(
                &mut out,
                c,
                *seq,
                Some(
                    "started, never finished (its process was killed while the tool ran, \
                     or it still runs)",
                ),
            )?,
            Record::Reload(_)
            | Record::RevocationEvent(_)
            | Record::Tool(_)
            | Record::Notification(_)
            | Record::Token(_) => {
                out.extend(record.operation_line(*seq));
                out.push('\n');
            }
            Record::Egress(EgressEntry { request: e, .. }) => {
                let mut text = format!("    {} {} -> {}", e.method, e.url(), e.decision.as_str());
                if let Some(status) = e.status {
                    text += &format!(" {status}, {} bytes", e.response_bytes);
                }
                if !e.policies.is_empty() {
                    text += &format!(" by {}", e.policies.join(", "));
                }
                if let Some(reason) = &e.reason {
                    text += &format!(" ({reason})");
                }
                if let Some(c) = &e.credential {
                    let jti = c
                        .jti
                        .as_deref()
                        .map_or(String::new(), |j| format!(" jti {j}"));
                    text += &format!("; credential {} ({:?}{jti})", c.name, c.kind);
                }
                push_line(&mut out, &text);
            }
        }
    }
    Ok(out)
}

/// Appends one line of stored text, escaped.
fn push_line(out: &mut String, text: &str) {
    out.push_str(&crate::text::printable(text));
    out.push('\n');
}

/// The agent as a person should read it: proven, or only claimed.
fn agent_shown(c: &CallRecord) -> String {
    match (&c.agent, &c.claimed_agent) {
        (Some(agent), _) => agent.clone(),
        (None, Some(claimed)) => format!("(claimed {claimed}, not authenticated)"),
        (None, None) => "(not authenticated)".into(),
    }
}

/// A call record's lines; `unfinished` replaces the outcome of a call that never ended.
fn explain_call(
    out: &mut String,
    c: &CallRecord,
    seq: u64,
    unfinished: Option<&str>,
) -> Result<()> {
    let line = |out: &mut String, label: &str, text: &str| {
        push_line(out, &format!("  {label:<11}{text}"));
    };
    push_line(
        out,
        &format!(
            "call {}  at {}  (record #{seq})",
            c.call_id,
            crate::units::format_unix(c.time_ms.div_euclid(1000)),
        ),
    );
    line(out, "agent", &agent_shown(c));
    if let Some(user) = &c.user {
        let by = c.delegation.as_deref().unwrap_or("?");
        line(out, "for user", &format!("{user} (delegation {by})"));
    }
    if let Some(session) = &c.session {
        line(out, "session", session);
    }
    let label = if c.origin.label.is_empty() {
        String::new()
    } else {
        format!(" ({})", c.origin.label)
    };
    line(out, "origin", &format!("{}{label}", c.origin.kind.as_str()));
    let digest = c.tool_digest.as_deref().unwrap_or("not loaded");
    line(out, "tool", &format!("{} {digest}", c.tool));
    line(out, "input", &format!("sha256:{}", c.input_digest));
    if let Some(input) = &c.input {
        line(out, "", &input.to_string());
    }
    let by = if c.decision.policies.is_empty() {
        String::new()
    } else {
        format!(" by {}", c.decision.policies.join(", "))
    };
    let outcome = serde_json::to_value(c.decision.outcome)?;
    line(
        out,
        "decision",
        &format!("{}{by}", outcome.as_str().unwrap_or("?")),
    );
    for reason in &c.decision.reasons {
        line(out, "", reason);
    }
    if let Some(approval) = &c.approval {
        let by = c
            .approved_by
            .as_deref()
            .map_or(" (pending)".to_string(), |a| format!(" (approved by {a})"));
        line(out, "approval", &format!("{approval}{by}"));
    }
    let ended = match (unfinished, &c.error) {
        (Some(unfinished), _) => unfinished.to_string(),
        (None, None) => format!("ok in {:.1} ms", c.duration_ms),
        (None, Some(e)) => format!("{:?}: {} in {:.1} ms", e.kind, e.message, c.duration_ms),
    };
    line(out, "outcome", &ended);
    if c.egress_requests > 0 {
        line(out, "egress", &format!("{} request(s):", c.egress_requests));
    }
    Ok(())
}

/// A reload, in one line.
fn reload_line(seq: u64, r: &ReloadRecord) -> String {
    let when = crate::units::format_unix(r.time_ms.div_euclid(1000));
    if r.applied {
        let dropped = match r.tools_dropped.is_empty() {
            true => "none".to_string(),
            false => r.tools_dropped.join(", "),
        };
        let file = match r.deployment_changed {
            true => "warden.toml changed; ",
            false => "",
        };
        format!(
            "#{seq:<6} {when}  reloaded: {file}{} policies; warm tools dropped: {dropped}",
            r.policies.len()
        )
    } else {
        format!(
            "#{seq:<6} {when}  reload refused, the deployment and policies in force kept: {}",
            r.error.as_deref().unwrap_or("no reason recorded")
        )
    }
}

/// An acknowledged revocation event, in one line.
fn event_line(seq: u64, e: &EventRecord) -> String {
    let when = crate::units::format_unix(e.time_ms.div_euclid(1000));
    format!(
        "#{seq:<6} {when}  revocation of {} `{}` told to `{}` (event {}, {} attempt(s))",
        e.kind.as_str(),
        e.revoked,
        e.receiver,
        e.jti,
        e.attempts
    )
}

/// A held call's announcement, in one line.
fn notification_line(seq: u64, n: &NotificationRecord) -> String {
    let when = crate::units::format_unix(n.time_ms.div_euclid(1000));
    let outcome = match (&n.error, n.delivered) {
        (_, true) => "announced".to_string(),
        (Some(e), false) => format!("not announced ({e})"),
        (None, false) => "not announced".to_string(),
    };
    format!(
        "#{seq:<6} {when}  approval {} {outcome} to {} ({} attempt(s))",
        n.approval, n.webhook, n.attempts
    )
}

/// An issued access token, in one line.
fn token_line(seq: u64, t: &TokenRecord) -> String {
    let when = crate::units::format_unix(t.time_ms.div_euclid(1000));
    let behalf = match (&t.user, &t.delegation) {
        (Some(user), Some(d)) => format!(" on behalf of `{user}` (delegation {d})"),
        (Some(user), None) => format!(" on behalf of `{user}`"),
        _ => String::new(),
    };
    format!(
        "#{seq:<6} {when}  access token {} issued to `{}`{behalf} for {} until {}",
        t.jti,
        t.agent,
        t.resource,
        crate::units::format_unix(t.expires)
    )
}

/// A change to the registered tools, in one line.
fn tool_line(seq: u64, t: &ToolRecord) -> String {
    let when = crate::units::format_unix(t.time_ms.div_euclid(1000));
    let digest = |d: &Option<String>| d.clone().unwrap_or_else(|| "unreadable".into());
    let what = match t.action {
        ToolAction::Added => format!("added ({})", digest(&t.digest)),
        ToolAction::Replaced => {
            format!(
                "replaced ({} -> {})",
                digest(&t.previous),
                digest(&t.digest)
            )
        }
        ToolAction::Removed => format!("removed ({})", digest(&t.previous)),
    };
    format!("#{seq:<6} {when}  tool `{}` {what}", t.name)
}

/// One line per call record (and per call started), for `warden audit tail`, escaped.
pub fn summary(link: &AuditLink) -> Result<Option<String>> {
    let (c, ended) = match parse(link)? {
        Record::Egress(_) => return Ok(None),
        r @ (Record::Reload(_)
        | Record::RevocationEvent(_)
        | Record::Tool(_)
        | Record::Notification(_)
        | Record::Token(_)) => {
            return Ok(r.operation_line(link.seq));
        }
        Record::Started(c) => (c, "started".to_string()),
        Record::Call(c) => {
            let ended = c
                .error
                .as_ref()
                .map_or("ok".to_string(), |e| format!("{:?}", e.kind));
            (c, ended)
        }
    };
    let outcome = serde_json::to_value(c.decision.outcome)?;
    let line = format!(
        "#{:<6} {}  {}  {:<16} {:<14} {:<8} {:<17} {}",
        link.seq,
        crate::units::format_unix(c.time_ms.div_euclid(1000)),
        c.call_id,
        agent_shown(&c),
        c.tool,
        outcome.as_str().unwrap_or("?"),
        ended,
        c.user.as_deref().unwrap_or("-"),
    );
    Ok(Some(crate::text::printable(&line).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Egress records written before records were structured (no address, port null for a
    /// request without a normal form or the omitted count) still read, and explain.
    #[test]
    fn egress_records_of_earlier_versions_still_read() {
        let old = r#"{"record":"egress","call_id":"c","index":64,"method":"","scheme":"",
            "host":"","port":null,"path":"","decision":"omitted","rule":null,"policies":[],
            "reason":"3 more request(s) not recorded","status":null,"response_bytes":0,
            "credential":{"name":"k","kind":"static","audience":"https://a","jti":null,
            "expires":null}}"#;
        let link = AuditLink {
            seq: 2,
            call_id: "c".into(),
            body: old.into(),
            prev_hash: GENESIS.into(),
            hash: String::new(),
        };
        let Record::Egress(entry) = parse(&link).unwrap() else {
            panic!("not an egress record")
        };
        assert_eq!(entry.request.destination.port, 0);
        assert_eq!(entry.request.decision.as_str(), "omitted");
        assert!(!entry.request.credential.unwrap().long_lived);
    }

    #[test]
    fn secrets_in_recorded_inputs_are_redacted() {
        let input = json!({
            "path": "/notes/a.txt",
            "api_key": "k-123",
            "nested": [{"Password": "hunter2", "note": "Bearer abc", "jwt": "x"}],
            "t": "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2ln",
        });
        let scrubbed = scrub(&input).to_string();
        for secret in ["k-123", "hunter2", "Bearer abc", "eyJhbGci"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert!(scrubbed.contains("/notes/a.txt"), "{scrubbed}");
    }

    #[test]
    fn each_hash_covers_position_call_body_and_predecessor() {
        let h = link_hash(GENESIS, 1, "c", "{}");
        assert_ne!(h, link_hash(GENESIS, 2, "c", "{}"));
        assert_ne!(h, link_hash(GENESIS, 1, "d", "{}"));
        assert_ne!(h, link_hash(GENESIS, 1, "c", "{ }"));
        assert_ne!(h, link_hash(&h, 1, "c", "{}"));
    }
}
