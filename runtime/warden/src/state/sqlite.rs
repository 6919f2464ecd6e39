//! The state store in one SQLite file (`<state_dir>/warden.db`, WAL), its schema versioned
//! (`PRAGMA user_version`) and migrated forward when a process opens it. Every write that
//! must be atomic across processes is one IMMEDIATE transaction: SQLite's write lock makes
//! concurrent processes take turns.

use super::*;
use anyhow::{Context as _, Result};
use rusqlite::{Connection, OptionalExtension as _, Row, params};
use std::path::Path;
use std::sync::Mutex;

pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Writes that added a row an agent can grow, since this process opened the file.
    growth: std::sync::atomic::AtomicU64,
    /// `PRAGMA data_version` when the revocations were last seen to be none: until another
    /// connection commits (the number changes) or this one revokes, none is revoked, and the
    /// check on every call and request skips its query.
    none_revoked_at: Mutex<Option<i64>>,
}

/// The schema, one migration per version: a state file at version N has had the first N
/// applied. Append, never edit: files in the field are at every earlier version.
const MIGRATIONS: &[&str] = &[
    "
-- Version 1. `IF NOT EXISTS`: files made before versioning already hold `nonces`.
CREATE TABLE IF NOT EXISTS nonces (
    nonce   TEXT PRIMARY KEY,
    expires INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id           TEXT PRIMARY KEY,
    agent        TEXT NOT NULL,
    user         TEXT,
    delegation   TEXT,
    scope        TEXT NOT NULL,
    created      INTEGER NOT NULL,
    expires      INTEGER NOT NULL,
    tainted      INTEGER NOT NULL DEFAULT 0,
    taint_reason TEXT,
    calls        INTEGER NOT NULL DEFAULT 0
);
-- Calls per agent and second: a minute's count reads at most 60 rows, however busy.
CREATE TABLE IF NOT EXISTS call_counts (
    agent  TEXT NOT NULL,
    second INTEGER NOT NULL,
    calls  INTEGER NOT NULL,
    PRIMARY KEY (agent, second)
) WITHOUT ROWID;
",
    "
-- Version 2: the audit chain, approvals, revocations.
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY,
    call_id   TEXT NOT NULL,
    body      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_call ON audit (call_id);
CREATE TABLE approvals (
    id           TEXT PRIMARY KEY,
    digest       TEXT NOT NULL,
    agent        TEXT NOT NULL,
    user         TEXT,
    tool         TEXT NOT NULL,
    tool_digest  TEXT NOT NULL,
    input_digest TEXT NOT NULL,
    input        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    created      INTEGER NOT NULL,
    expires      INTEGER NOT NULL,
    status       TEXT NOT NULL,
    approver     TEXT,
    signature    TEXT,
    used_by      TEXT
);
CREATE INDEX approvals_by_digest ON approvals (digest, status);
CREATE TABLE revocations (
    kind   TEXT NOT NULL,
    id     TEXT NOT NULL,
    at     INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
",
    "
-- Version 3: what pruning and the cap on pending approvals look up.
CREATE INDEX nonces_expiry ON nonces (expires);
CREATE INDEX sessions_expiry ON sessions (expires);
CREATE INDEX approvals_pending ON approvals (status, agent, expires);
",
    "
-- Version 4: revocation events for downstream receivers, kept until each is acknowledged.
-- Times in unix ms; `held_until`: a process is delivering it until then.
CREATE TABLE revocation_events (
    seq          INTEGER PRIMARY KEY,
    receiver     TEXT NOT NULL,
    jti          TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    id           TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL DEFAULT 0,
    held_until   INTEGER NOT NULL DEFAULT 0,
    delivered    INTEGER,
    last_error   TEXT
);
CREATE INDEX revocation_events_due ON revocation_events (delivered, next_attempt);
",
    "
-- Version 5: the session and delegation of a held call, for the approver to see.
ALTER TABLE approvals ADD COLUMN session TEXT;
ALTER TABLE approvals ADD COLUMN delegation TEXT;
",
];

/// Opens the deployment's SQLite state store, shared.
pub fn open(state_dir: &Path) -> Result<std::sync::Arc<dyn StateStore>> {
    Ok(std::sync::Arc::new(SqliteStore::open(state_dir)?))
}

impl SqliteStore {
    pub fn open(state_dir: &Path) -> Result<SqliteStore> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let path = state_dir.join("warden.db");
        let mut conn =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        // Every statement this file prepares stays prepared (rusqlite keeps 16 by default:
        // fewer than there are, so a busy server would prepare some again and again).
        conn.set_prepared_statement_cache_capacity(64);
        // WAL with NORMAL sync: a committed transaction survives the process being killed
        // (the OS holds the write); only a power loss can take the commits since the log was
        // last moved into the file, never a revocation, a decision, an approval's use or a
        // taint (`write_synced`). The log is kept under 8 MiB when it is emptied.
        // A 16 MiB page cache keeps the tables' hot pages (the ends of the audit chain and its
        // index, the counters) in memory however long the chain grows.
        // Switching a new file to WAL takes an exclusive lock that SQLite does not wait for:
        // processes opening the same new file at once retry, as the busy timeout would.
        let settings = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-16384; \
             PRAGMA journal_size_limit=8388608;";
        // Commits stay in the log when the process exits (moved into the file once the log
        // holds 1000 pages): a `warden call` process would otherwise copy its pages and sync
        // the file at every exit. Backups must take the log too (the README says how).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while let Err(e) = conn.execute_batch(settings) {
            let busy = e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy);
            if !busy || std::time::Instant::now() > give_up {
                return Err(e).with_context(|| format!("setting up {}", path.display()));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        migrate(&mut conn).with_context(|| format!("preparing {}", path.display()))?;
        let store = SqliteStore {
            conn: Mutex::new(conn),
            growth: std::sync::atomic::AtomicU64::new(0),
            none_revoked_at: Mutex::new(None),
        };
        store
            .prune(crate::identity::jwt::now())
            .with_context(|| format!("pruning {}", path.display()))?;
        Ok(store)
    }

    /// Deletes what no decision and no person needs any more, as of `now` (unix seconds):
    /// expired nonces (an expired assertion is refused before its nonce is looked at), the
    /// rate counters of past minutes, and sessions and pending approvals `PRUNE_AFTER` past
    /// their expiry. Approvals a person decided (approved, denied, used) are kept: they are
    /// the signed evidence the audit points to, and only people add them.
    pub fn prune(&self, now: i64) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM nonces WHERE expires < ?1")?
                .execute(params![now])?;
            tx.prepare_cached("DELETE FROM call_counts WHERE second <= ?1")?
                .execute(params![now - RATE_WINDOW])?;
            tx.prepare_cached("DELETE FROM sessions WHERE expires < ?1")?
                .execute(params![now - PRUNE_AFTER])?;
            tx.prepare_cached("DELETE FROM approvals WHERE status = 'pending' AND expires < ?1")?
                .execute(params![now - PRUNE_AFTER])?;
            Ok(())
        })
    }

    /// Counts a write that added a row an agent can grow, and prunes every `PRUNE_EVERY`-th.
    /// A failed pruning is logged, never the caller's failure: the next one catches up.
    fn grew(&self) {
        let count = self
            .growth
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if count.is_multiple_of(PRUNE_EVERY)
            && let Err(e) = self.prune(crate::identity::jwt::now())
        {
            tracing::warn!(error = %format!("{e:#}"), "pruning the state file failed");
        }
    }

    fn none_revoked(&self) -> std::sync::MutexGuard<'_, Option<i64>> {
        self.none_revoked_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connection. A thread that panicked while holding it left no transaction open
    /// (an unfinished one rolls back when dropped), so the lock is taken back, not refused:
    /// one panic does not take every later call of the process down with it.
    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` in one write transaction (`transaction`).
    fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        transaction(&mut self.conn(), f)
    }

    /// `write`, synced to the disk before it returns: for what a power loss must not undo
    /// once a caller was told it happened (a revocation, a person's decision, an approval
    /// spent, a session's taint). Other commits reach the disk when SQLite next moves the
    /// log into the file.
    fn write_synced<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.conn();
        conn.pragma_update(None, "synchronous", "FULL")?;
        let out = transaction(&mut conn, f);
        // Left at FULL only costs later commits a sync each: logged, not the caller's failure.
        if let Err(e) = conn.pragma_update(None, "synchronous", "NORMAL") {
            tracing::warn!(error = %e, "the state file stays synced at every commit");
        }
        out
    }
}

impl StateStore for SqliteStore {
    fn ping(&self) -> Result<()> {
        self.conn()
            .prepare_cached("SELECT count(*) FROM sqlite_master")?
            .query_row([], |_| Ok(()))?;
        Ok(())
    }

    fn use_nonce(&self, nonce: &str, expires: i64) -> Result<bool> {
        let inserted = self
            .conn()
            .prepare_cached("INSERT OR IGNORE INTO nonces (nonce, expires) VALUES (?1, ?2)")?
            .execute(params![nonce, expires])?;
        self.grew();
        Ok(inserted == 1)
    }

    fn start_session(&self, session: &Session) -> Result<()> {
        let now = crate::identity::jwt::now();
        // Counted and inserted under the write lock: concurrent starts cannot overshoot.
        self.write(|tx| {
            let live: i64 = tx
                .prepare_cached(
                    "SELECT COUNT(*) FROM sessions WHERE agent = ?1 AND expires > ?2
                     AND id NOT IN (SELECT id FROM revocations WHERE kind = 'session')",
                )?
                .query_row(params![session.agent, now], |r| r.get(0))?;
            if u64::try_from(live).unwrap_or(u64::MAX) >= MAX_LIVE_SESSIONS {
                return Err(TooManySessions {
                    agent: session.agent.clone(),
                    max: MAX_LIVE_SESSIONS,
                }
                .into());
            }
            tx.prepare_cached(
                "INSERT INTO sessions (id, agent, user, delegation, scope, created, expires)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                session.id,
                session.agent,
                session.user,
                session.delegation,
                serde_json::to_string(&session.scope)?,
                now,
                session.expires
            ])?;
            Ok(())
        })?;
        self.grew();
        Ok(())
    }

    fn session(&self, id: &str) -> Result<Option<Session>> {
        let conn = self.conn();
        let mut query = conn.prepare_cached(
            "SELECT id, agent, user, delegation, scope, expires, tainted, taint_reason, calls
             FROM sessions WHERE id = ?1",
        )?;
        let mut rows = query.query(params![id])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let scope: String = row.get(4)?;
        Ok(Some(Session {
            id: row.get(0)?,
            agent: row.get(1)?,
            user: row.get(2)?,
            delegation: row.get(3)?,
            scope: serde_json::from_str(&scope).context("a session's scope")?,
            expires: row.get(5)?,
            tainted: row.get(6)?,
            taint_reason: row.get(7)?,
            calls: row.get::<_, i64>(8)? as u64,
        }))
    }

    fn taint(&self, session: &str, reason: &str) -> Result<()> {
        // Synced: a session a power loss found clean again would let its agent, which still
        // holds what tainted it, past the policies on tainted sessions. A session already
        // tainted with a reason is left as it is, and costs no write and no sync.
        self.write_synced(|tx| {
            tx.prepare_cached(
                "UPDATE sessions SET tainted = 1, taint_reason = COALESCE(taint_reason, ?2)
                 WHERE id = ?1 AND (tainted = 0 OR taint_reason IS NULL)",
            )?
            .execute(params![session, reason])?;
            Ok(())
        })
    }

    fn record_call(
        &self,
        agent: &str,
        session: Option<&str>,
        now_ms: i64,
        start: &mut dyn FnMut(CallCounts) -> Result<Vec<AuditEntry>>,
    ) -> Result<CallCounts> {
        let counts = self.write(|tx| {
            let last_minute = count_recent(tx, agent, now_ms)?;
            let counts = CallCounts {
                last_minute,
                in_session: count(tx, agent, session, now_ms)?,
            };
            append_audit(tx, &start(counts)?)?;
            Ok(counts)
        })?;
        self.grew();
        Ok(counts)
    }

    fn count_call(
        &self,
        agent: &str,
        session: Option<&str>,
        now_ms: i64,
        records: &[AuditEntry],
    ) -> Result<()> {
        // The counts before the call are not read: nothing decides with them.
        self.write(|tx| {
            count(tx, agent, session, now_ms)?;
            append_audit(tx, records)
        })?;
        self.grew();
        Ok(())
    }

    fn recent_calls(&self, agent: &str, now_ms: i64) -> Result<u64> {
        Ok(count_recent(&self.conn(), agent, now_ms)?)
    }

    fn append_audit(&self, entries: &[AuditEntry]) -> Result<()> {
        self.write(|tx| append_audit(tx, entries))
    }

    fn audit_records(&self, after: u64, limit: usize) -> Result<Vec<AuditLink>> {
        let conn = self.conn();
        let mut query = conn.prepare_cached(
            "SELECT seq, call_id, body, prev_hash, hash FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = query.query_map(params![after as i64, limit as i64], audit_link)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn audit_of_call(&self, call_id: &str) -> Result<Vec<AuditLink>> {
        let conn = self.conn();
        let mut query = conn.prepare_cached(
            "SELECT seq, call_id, body, prev_hash, hash FROM audit WHERE call_id = ?1 ORDER BY seq",
        )?;
        let rows = query.query_map(params![call_id], audit_link)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn audit_tail(&self, count: usize) -> Result<Vec<AuditLink>> {
        let conn = self.conn();
        let mut query = conn.prepare_cached(
            "SELECT seq, call_id, body, prev_hash, hash FROM
             (SELECT * FROM audit ORDER BY seq DESC LIMIT ?1) ORDER BY seq",
        )?;
        let rows = query.query_map(params![count as i64], audit_link)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn request_approval(&self, request: &Approval, max_pending: u64) -> Result<Approval> {
        let stored = self.write(|tx| {
            let pending = tx
                .prepare_cached(&format!(
                    "{APPROVAL_COLUMNS} WHERE digest = ?1 AND status = 'pending' AND expires > ?2
                     ORDER BY created DESC LIMIT 1"
                ))?
                .query_row(
                    params![request.digest, crate::identity::jwt::now()],
                    approval,
                )
                .optional()?;
            if let Some(pending) = pending {
                return pending;
            }
            let waiting: i64 = tx
                .prepare_cached(
                    "SELECT COUNT(*) FROM approvals
                     WHERE status = 'pending' AND agent = ?1 AND expires > ?2",
                )?
                .query_row(params![request.agent, request.created], |row| row.get(0))?;
            if waiting as u64 >= max_pending {
                return Err(TooManyPending {
                    agent: request.agent.clone(),
                    max: max_pending,
                }
                .into());
            }
            tx.prepare_cached(
                "INSERT INTO approvals (id, digest, agent, user, tool, tool_digest, input_digest,
                 input, reason, created, expires, status, session, delegation)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'pending', ?12, ?13)",
            )?
            .execute(params![
                request.id,
                request.digest,
                request.agent,
                request.user,
                request.tool,
                request.tool_digest,
                request.input_digest,
                request.input.to_string(),
                request.reason,
                request.created,
                request.expires,
                request.session,
                request.delegation,
            ])?;
            Ok(request.clone())
        })?;
        self.grew();
        Ok(stored)
    }

    fn approval(&self, id: &str) -> Result<Option<Approval>> {
        let conn = self.conn();
        conn.prepare_cached(&format!("{APPROVAL_COLUMNS} WHERE id = ?1"))?
            .query_row(params![id], approval)
            .optional()?
            .transpose()
    }

    fn approvals(&self, all: bool) -> Result<Vec<Approval>> {
        let conn = self.conn();
        let filter = if all { "" } else { "WHERE status = 'pending'" };
        let mut query = conn.prepare(&format!(
            "{APPROVAL_COLUMNS} {filter} ORDER BY created DESC"
        ))?;
        let rows = query.query_map([], approval)?;
        rows.map(|row| row?).collect()
    }

    fn decided_approvals(&self, limit: u32) -> Result<Vec<Approval>> {
        let conn = self.conn();
        let mut query = conn.prepare_cached(&format!(
            "{APPROVAL_COLUMNS} WHERE status != 'pending' ORDER BY created DESC LIMIT ?1"
        ))?;
        let rows = query.query_map(params![limit], approval)?;
        rows.map(|row| row?).collect()
    }

    fn decide_approval(&self, id: &str, decision: &ApprovalDecision) -> Result<bool> {
        let (status, approver, signature) = match decision {
            ApprovalDecision::Approved {
                approver,
                signature,
            } => (ApprovalStatus::Approved, approver, Some(signature)),
            ApprovalDecision::Denied { by, signature } => {
                (ApprovalStatus::Denied, by, signature.as_ref())
            }
        };
        let changed = self.write_synced(|tx| {
            Ok(tx
                .prepare_cached(
                    "UPDATE approvals SET status = ?2, approver = ?3, signature = ?4
                     WHERE id = ?1 AND status = 'pending'",
                )?
                .execute(params![id, status.as_str(), approver, signature])?)
        })?;
        Ok(changed == 1)
    }

    fn use_approval(&self, id: &str, call_id: &str) -> Result<bool> {
        // One statement under the write lock: two processes cannot both see `approved`.
        let changed = self.write_synced(|tx| {
            Ok(tx
                .prepare_cached(
                    "UPDATE approvals SET status = 'used', used_by = ?2
                     WHERE id = ?1 AND status = 'approved'",
                )?
                .execute(params![id, call_id])?)
        })?;
        Ok(changed == 1)
    }

    fn revoke(&self, revocation: &Revocation, receivers: &[&str]) -> Result<bool> {
        checkable(&[(revocation.kind, &revocation.id)])?;
        let kind = revocation.kind.as_str();
        let inserted = self.write_synced(|tx| {
            let inserted = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO revocations (kind, id, at, reason) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![kind, revocation.id, revocation.at, revocation.reason])?;
            if inserted == 1 {
                for receiver in receivers {
                    tx.prepare_cached(
                        "INSERT INTO revocation_events (receiver, jti, kind, id) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![receiver, super::event_jti(), kind, revocation.id])?;
                }
            }
            Ok(inserted == 1)
        })?;
        *self.none_revoked() = None;
        Ok(inserted)
    }

    fn revoked(&self, ids: &[(RevocationKind, &str)]) -> Result<Option<Revocation>> {
        checkable(ids)?;
        if ids.is_empty() {
            return Ok(None);
        }
        let conn = self.conn();
        // Read first: a revocation committed after this read changes it for the next check.
        let version: i64 = conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |row| row.get(0))?;
        if *self.none_revoked() == Some(version) {
            return Ok(None);
        }
        let none: bool = conn
            .prepare_cached("SELECT NOT EXISTS (SELECT 1 FROM revocations)")?
            .query_row([], |row| row.get(0))?;
        if none {
            *self.none_revoked() = Some(version);
            return Ok(None);
        }
        // One query for all of a call's ids (it runs on every call and every request).
        let pairs = vec!["(?, ?)"; ids.len()].join(", ");
        let mut query = conn.prepare_cached(&format!(
            "SELECT kind, id, at, reason FROM revocations WHERE (kind, id) IN (VALUES {pairs})
             ORDER BY at LIMIT 1"
        ))?;
        let params = ids.iter().flat_map(|(kind, id)| [kind.as_str(), *id]);
        query
            .query_row(rusqlite::params_from_iter(params), revocation)
            .optional()?
            .transpose()
    }

    fn revocations(&self) -> Result<Vec<Revocation>> {
        let conn = self.conn();
        let mut query =
            conn.prepare("SELECT kind, id, at, reason FROM revocations ORDER BY at, kind, id")?;
        let rows = query.query_map([], revocation)?;
        rows.map(|row| row?).collect()
    }

    fn claim_events(
        &self,
        receivers: &[&str],
        now_ms: i64,
        hold_ms: i64,
        limit: usize,
    ) -> Result<Vec<RevocationEvent>> {
        if receivers.is_empty() {
            return Ok(vec![]);
        }
        let held_until = now_ms.saturating_add(hold_ms);
        // In one write transaction: two processes claiming at once take turns.
        self.write(|tx| {
            let names = vec!["?"; receivers.len()].join(", ");
            let mut query = tx.prepare_cached(&format!(
                "SELECT r.kind, r.id, r.at, r.reason, e.seq, e.receiver, e.jti, e.attempts
                 FROM revocation_events e JOIN revocations r ON r.kind = e.kind AND r.id = e.id
                 WHERE e.delivered IS NULL AND e.next_attempt <= ? AND e.held_until <= ?
                   AND e.receiver IN ({names})
                 ORDER BY e.seq LIMIT ?"
            ))?;
            let mut values: Vec<rusqlite::types::Value> = vec![now_ms.into(), now_ms.into()];
            values.extend(receivers.iter().map(|r| r.to_string().into()));
            values.push((limit as i64).into());
            let rows = query.query_map(rusqlite::params_from_iter(values), |row| {
                let seq: i64 = row.get(4)?;
                let read = || -> Result<RevocationEvent> {
                    Ok(RevocationEvent {
                        seq,
                        receiver: row.get(5)?,
                        jti: row.get(6)?,
                        attempts: row.get(7)?,
                        held_until,
                        revocation: revocation(row)??,
                    })
                };
                Ok((seq, read().ok()))
            })?;
            let rows: Vec<(i64, Option<RevocationEvent>)> =
                rows.collect::<rusqlite::Result<_>>()?;
            for (seq, event) in &rows {
                match event {
                    Some(_) => tx
                        .prepare_cached(
                            "UPDATE revocation_events SET held_until = ?2 WHERE seq = ?1",
                        )?
                        .execute(params![seq, held_until])?,
                    None => tx
                        .prepare_cached(
                            "UPDATE revocation_events SET next_attempt = ?2,
                             last_error = 'this version of Warden cannot read it' WHERE seq = ?1",
                        )?
                        .execute(params![seq, now_ms + UNREADABLE_EVENT_DELAY_MS])?,
                };
            }
            Ok(rows.into_iter().filter_map(|(_, event)| event).collect())
        })
    }

    fn event_attempted(&self, event: &RevocationEvent, attempt: &Attempt) -> Result<bool> {
        let (delivered, next_attempt, error) = attempt.columns();
        let changed = self
            .conn()
            .prepare_cached(
                "UPDATE revocation_events SET attempts = attempts + 1, delivered = ?3,
                 next_attempt = ?4, last_error = ?5, held_until = 0
                 WHERE seq = ?1 AND held_until = ?2 AND delivered IS NULL",
            )?
            .execute(params![
                event.seq,
                event.held_until,
                delivered,
                next_attempt,
                error
            ])?;
        Ok(changed == 1)
    }

    fn pending_events(&self, receivers: &[&str]) -> Result<u64> {
        if receivers.is_empty() {
            return Ok(0);
        }
        let names = vec!["?"; receivers.len()].join(", ");
        let pending: i64 = self
            .conn()
            .prepare_cached(&format!(
                "SELECT count(*) FROM revocation_events
                 WHERE delivered IS NULL AND receiver IN ({names})"
            ))?
            .query_row(rusqlite::params_from_iter(receivers), |row| row.get(0))?;
        Ok(pending as u64)
    }
}

/// Appends `entries` after the chain's last record, each linked to the one before.
fn append_audit(tx: &Connection, entries: &[AuditEntry]) -> Result<()> {
    let last: Option<(i64, String)> = tx
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let (mut seq, mut prev) = match last {
        Some((seq, hash)) => (seq as u64, hash),
        None => (0, super::GENESIS.to_string()),
    };
    let mut insert = tx.prepare_cached(
        "INSERT INTO audit (seq, call_id, body, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for entry in entries {
        seq += 1;
        let hash = super::link_hash(&prev, seq, &entry.call_id, &entry.body);
        insert.execute(params![seq as i64, entry.call_id, entry.body, prev, hash])?;
        prev = hash;
    }
    Ok(())
}

fn audit_link(row: &Row) -> rusqlite::Result<AuditLink> {
    Ok(AuditLink {
        seq: row.get::<_, i64>(0)? as u64,
        call_id: row.get(1)?,
        body: row.get(2)?,
        prev_hash: row.get(3)?,
        hash: row.get(4)?,
    })
}

const APPROVAL_COLUMNS: &str = "SELECT id, digest, agent, user, tool, tool_digest, input_digest,
    input, reason, created, expires, status, approver, signature, used_by, session, delegation
    FROM approvals";

/// A row of `APPROVAL_COLUMNS`; the inner error is a row that does not parse.
fn approval(row: &Row) -> rusqlite::Result<Result<Approval>> {
    let id: String = row.get(0)?;
    let (input, status) = match approval_fields(&id, row.get(7)?, row.get(11)?) {
        Ok(parsed) => parsed,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(Approval {
        id,
        digest: row.get(1)?,
        agent: row.get(2)?,
        user: row.get(3)?,
        tool: row.get(4)?,
        tool_digest: row.get(5)?,
        input_digest: row.get(6)?,
        input,
        reason: row.get(8)?,
        created: row.get(9)?,
        expires: row.get(10)?,
        status,
        approver: row.get(12)?,
        signature: row.get(13)?,
        used_by: row.get(14)?,
        session: row.get(15)?,
        delegation: row.get(16)?,
    }))
}

fn revocation(row: &Row) -> rusqlite::Result<Result<Revocation>> {
    let kind = match revocation_kind(row.get(0)?) {
        Ok(kind) => kind,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(Revocation {
        kind,
        id: row.get(1)?,
        at: row.get(2)?,
        reason: row.get(3)?,
    }))
}

/// Runs `f` in one IMMEDIATE transaction (the write lock taken up front, so that concurrent
/// processes queue instead of failing on upgrade). Its BEGIN and COMMIT stay prepared: they
/// run at every call.
fn transaction<T>(conn: &mut Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    // A transaction a failed rollback left open is ended first, not joined.
    drop(Open(conn));
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let open = Open(conn);
    let out = f(open.0)?;
    open.0.prepare_cached("COMMIT")?.execute([])?;
    Ok(out)
}

/// A transaction begun on the connection: rolled back unless it was committed, however `f`
/// ended (an error, a panic), so that the connection is never left in it.
struct Open<'c>(&'c Connection);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if !self.0.is_autocommit() {
            let _ = self.0.execute_batch("ROLLBACK");
        }
    }
}

/// Brings the file to the current schema version, in one transaction that concurrent
/// processes take in turn (each re-reads the version inside it).
fn migrate(conn: &mut Connection) -> Result<()> {
    // A file at this version is read, not written: every process opens the file, and the
    // write lock and a commit of the header page would cost each one.
    let version = |conn: &Connection| {
        conn.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))
            .map(|v| v as usize)
    };
    if version(conn)? == MIGRATIONS.len() {
        return Ok(());
    }
    transaction(conn, |tx| {
        let version = version(tx)?;
        if version > MIGRATIONS.len() {
            anyhow::bail!(
                "the state file is at schema version {version}, newer than this Warden knows ({}); \
                 use a newer warden",
                MIGRATIONS.len()
            );
        }
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(migration)
                .with_context(|| format!("migrating the state file to schema version {}", i + 1))?;
        }
        tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
        Ok(())
    })
}

/// Counts a call by `agent` (in `session`, which must exist) at `now_ms`; returns the
/// session's calls before it (0 without a session).
fn count(tx: &Connection, agent: &str, session: Option<&str>, now_ms: i64) -> Result<u64> {
    // Counters of past minutes are not counted (`count_recent`) and go with the pruning.
    tx.prepare_cached(
        "INSERT INTO call_counts (agent, second, calls) VALUES (?1, ?2, 1)
         ON CONFLICT (agent, second) DO UPDATE SET calls = calls + 1",
    )?
    .execute(params![agent, now_ms.div_euclid(1000)])?;
    let Some(id) = session else {
        return Ok(0);
    };
    let before = tx
        .prepare_cached("UPDATE sessions SET calls = calls + 1 WHERE id = ?1 RETURNING calls - 1")?
        .query_row(params![id], |row| row.get::<_, i64>(0))?;
    Ok(u64::try_from(before).unwrap_or(0))
}

fn count_recent(conn: &Connection, agent: &str, now_ms: i64) -> rusqlite::Result<u64> {
    let count: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(calls), 0) FROM call_counts WHERE agent = ?1 AND second > ?2",
        )?
        .query_row(
            params![agent, now_ms.div_euclid(1000) - RATE_WINDOW],
            |row| row.get(0),
        )?;
    Ok(count as u64)
}

#[cfg(test)]
mod tests {
    use super::super::StateStore as _;
    use super::super::conformance::{approval, session};

    /// Processes that start at once open a new state file at once: none is refused.
    #[test]
    fn many_openers_of_a_new_file_all_succeed() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let start = std::sync::Arc::new(std::sync::Barrier::new(8));
            let openers: Vec<_> = (0..8)
                .map(|_| {
                    let (dir, start) = (dir.path().to_path_buf(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        super::SqliteStore::open(&dir).map(|_| ())
                    })
                })
                .collect();
            for opener in openers {
                opener.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn the_schema_is_versioned_and_a_newer_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // A file from before versioning, holding a nonce, is adopted with its data.
        let old = rusqlite::Connection::open(dir.path().join("warden.db")).unwrap();
        old.execute_batch(
            "CREATE TABLE nonces (nonce TEXT PRIMARY KEY, expires INTEGER NOT NULL);",
        )
        .unwrap();
        let exp = crate::identity::jwt::now() + 60;
        old.execute("INSERT INTO nonces VALUES ('seen', ?1)", [exp])
            .unwrap();
        drop(old);
        let db = super::SqliteStore::open(dir.path()).unwrap();
        assert!(!db.use_nonce("seen", exp).unwrap());
        drop(db);
        // Opening again applies nothing twice.
        drop(super::SqliteStore::open(dir.path()).unwrap());
        let conn = rusqlite::Connection::open(dir.path().join("warden.db")).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, super::MIGRATIONS.len());
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let e = super::SqliteStore::open(dir.path()).err().unwrap();
        assert!(format!("{e:#}").contains("schema version 99"), "{e:#}");
    }

    /// Every `warden call` process opens the file: opening a current one commits nothing, and
    /// what a process committed is there for the next though it left it in the log.
    #[test]
    fn opening_a_current_file_commits_nothing_and_closing_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::SqliteStore::open(dir.path()).unwrap();
        assert!(
            db.use_nonce("kept", crate::identity::jwt::now() + 60)
                .unwrap()
        );
        drop(db);
        assert!(dir.path().join("warden.db-wal").exists(), "the log is left");
        let watcher = rusqlite::Connection::open(dir.path().join("warden.db")).unwrap();
        // Changes when another connection commits.
        let commits = || -> i64 {
            watcher
                .query_row("PRAGMA data_version", [], |r| r.get(0))
                .unwrap()
        };
        let before = commits();
        let db = super::SqliteStore::open(dir.path()).unwrap();
        assert_eq!(commits(), before, "opening a current file committed");
        assert!(
            !db.use_nonce("kept", crate::identity::jwt::now() + 60)
                .unwrap()
        );
    }

    #[test]
    fn pruning_removes_expired_rows_and_keeps_live_and_decided_ones() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::SqliteStore::open(dir.path()).unwrap();
        let now = crate::identity::jwt::now();
        // Pruned a week from now.
        let then = now + 7 * 24 * 3600;
        let long_gone = then - super::PRUNE_AFTER - 1;
        assert!(db.use_nonce("gone", then - 1).unwrap());
        assert!(db.use_nonce("live", then + 60).unwrap());
        for (id, expires) in [
            ("old", long_gone),
            ("lapsed", then - 10),
            ("open", then + 10),
        ] {
            db.start_session(&session(id, "a", expires)).unwrap();
        }
        for (id, expires) in [
            ("stale", long_gone),
            ("used", long_gone),
            ("waiting", then + 10),
        ] {
            db.request_approval(&approval(id, "a", expires), 100)
                .unwrap();
        }
        let decided = super::ApprovalDecision::Approved {
            approver: "carol".into(),
            signature: "sig".into(),
        };
        assert!(db.decide_approval("used", &decided).unwrap());
        assert!(db.use_approval("used", "call-1").unwrap());
        db.record_call("a", None, (then - 120) * 1000, &mut |_| Ok(vec![]))
            .unwrap();
        db.record_call("b", None, (then - 5) * 1000, &mut |_| Ok(vec![]))
            .unwrap();

        db.prune(then).unwrap();

        // An expired nonce is gone (so it could be recorded again); a live one is kept.
        assert!(db.use_nonce("gone", then - 1).unwrap());
        assert!(!db.use_nonce("live", then + 60).unwrap());
        // Sessions: gone a day after they expired, not before.
        assert!(db.session("old").unwrap().is_none());
        assert!(db.session("lapsed").unwrap().is_some());
        assert!(db.session("open").unwrap().is_some());
        // Approvals: a lapsed request goes; the live one and the one a person decided stay.
        assert!(db.approval("stale").unwrap().is_none());
        assert!(db.approval("waiting").unwrap().is_some());
        assert_eq!(
            db.approval("used").unwrap().unwrap().status,
            super::ApprovalStatus::Used
        );
        // Counters of past minutes go; the last minute's stay.
        let counted = |agent| db.recent_calls(agent, then * 1000).unwrap();
        assert_eq!((counted("a"), counted("b")), (0, 1));
        let rows: i64 = db
            .conn()
            .query_row("SELECT COUNT(*) FROM call_counts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    /// The check skips its query while nothing is revoked, and sees a revocation made through
    /// another connection (another process) or this one at once.
    #[test]
    fn a_revocation_is_seen_at_the_next_check_by_every_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (one, other) = (
            super::SqliteStore::open(dir.path()).unwrap(),
            super::SqliteStore::open(dir.path()).unwrap(),
        );
        let ids = [
            (super::RevocationKind::Agent, "a"),
            (super::RevocationKind::Tool, "t"),
        ];
        let revoke = |store: &super::SqliteStore, kind, id: &str| {
            store
                .revoke(
                    &super::Revocation {
                        kind,
                        id: id.into(),
                        at: 1,
                        reason: String::new(),
                    },
                    &[],
                )
                .unwrap()
        };
        assert!(one.revoked(&ids).unwrap().is_none());
        assert!(one.revoked(&ids).unwrap().is_none());
        assert!(revoke(&other, super::RevocationKind::Agent, "a"));
        assert_eq!(one.revoked(&ids).unwrap().unwrap().id, "a");
        // And by this connection, after a check that found none.
        let dir = tempfile::tempdir().unwrap();
        let fresh = super::SqliteStore::open(dir.path()).unwrap();
        let others = [(super::RevocationKind::Session, "s")];
        assert!(fresh.revoked(&others).unwrap().is_none());
        assert!(revoke(&fresh, super::RevocationKind::Session, "s"));
        assert_eq!(fresh.revoked(&others).unwrap().unwrap().id, "s");
    }
}
