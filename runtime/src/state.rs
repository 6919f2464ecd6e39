//! The state shared by every `warden` process of a deployment: replay protection, sessions
//! and their taint, call counts for rate policies (later: audit, approvals, revocations).
//! One SQLite file in the state directory, its schema versioned (`PRAGMA user_version`) and
//! migrated forward when a process opens it.

use anyhow::{Context as _, Result};
use rusqlite::{Connection, params};
use std::path::Path;
use std::sync::Mutex;

pub struct StateDb {
    conn: Mutex<Connection>,
}

/// The schema, one migration per version: a state file at version N has had the first N
/// applied. Append, never edit: files in the field are at every earlier version.
const MIGRATIONS: &[&str] = &["
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
"];

/// A session: calls of one agent (for one user) whose provenance is tracked together.
#[derive(Debug, Clone, serde::Serialize)]
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

/// The window of `CallCounts::last_minute`, in seconds.
const RATE_WINDOW: i64 = 60;

impl StateDb {
    pub fn open(state_dir: &Path) -> Result<StateDb> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let path = state_dir.join("warden.db");
        let mut conn =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")?;
        migrate(&mut conn).with_context(|| format!("preparing {}", path.display()))?;
        Ok(StateDb {
            conn: Mutex::new(conn),
        })
    }

    /// Records a nonce until `expires` (unix seconds). False if it was seen before.
    pub fn use_nonce(&self, nonce: &str, expires: i64) -> Result<bool> {
        let conn = self.conn.lock().unwrap();
        let now = crate::identity::jwt::now();
        conn.prepare_cached("DELETE FROM nonces WHERE expires < ?1")?
            .execute(params![now])?;
        let inserted = conn
            .prepare_cached("INSERT OR IGNORE INTO nonces (nonce, expires) VALUES (?1, ?2)")?
            .execute(params![nonce, expires])?;
        Ok(inserted == 1)
    }

    /// Creates a session (its id is fresh and random).
    pub fn start_session(&self, session: &Session) -> Result<()> {
        let conn = self.conn.lock().unwrap();
        conn.prepare_cached(
            "INSERT INTO sessions (id, agent, user, delegation, scope, created, expires)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            session.id,
            session.agent,
            session.user,
            session.delegation,
            serde_json::to_string(&session.scope)?,
            crate::identity::jwt::now(),
            session.expires
        ])?;
        Ok(())
    }

    pub fn session(&self, id: &str) -> Result<Option<Session>> {
        let conn = self.conn.lock().unwrap();
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

    /// Records a call by `agent` (in `session`) at `now_ms` and returns the counts before
    /// it, in one transaction so that concurrent processes count each call once.
    pub fn record_call(
        &self,
        agent: &str,
        session: Option<&str>,
        now_ms: i64,
    ) -> Result<CallCounts> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let second = now_ms.div_euclid(1000);
        tx.prepare_cached("DELETE FROM call_counts WHERE agent = ?1 AND second <= ?2")?
            .execute(params![agent, second - RATE_WINDOW])?;
        let last_minute = count_recent(&tx, agent, now_ms)?;
        tx.prepare_cached(
            "INSERT INTO call_counts (agent, second, calls) VALUES (?1, ?2, 1)
             ON CONFLICT (agent, second) DO UPDATE SET calls = calls + 1",
        )?
        .execute(params![agent, second])?;
        let in_session = match session {
            None => 0,
            Some(id) => tx
                .prepare_cached(
                    "UPDATE sessions SET calls = calls + 1 WHERE id = ?1 RETURNING calls - 1",
                )?
                .query_row(params![id], |row| row.get::<_, i64>(0))? as u64,
        };
        tx.commit()?;
        Ok(CallCounts {
            last_minute,
            in_session,
        })
    }

    /// Calls by `agent` in the last 60 s (to the second) before `now_ms`.
    pub fn recent_calls(&self, agent: &str, now_ms: i64) -> Result<u64> {
        Ok(count_recent(&self.conn.lock().unwrap(), agent, now_ms)?)
    }

    /// Marks a session tainted; the first reason is kept.
    pub fn taint(&self, session: &str, reason: &str) -> Result<()> {
        let conn = self.conn.lock().unwrap();
        conn.prepare_cached(
            "UPDATE sessions SET tainted = 1, taint_reason = COALESCE(taint_reason, ?2) WHERE id = ?1",
        )?
        .execute(params![session, reason])?;
        Ok(())
    }
}

/// Brings the file to the current schema version, in one transaction that concurrent
/// processes take in turn (each re-reads the version inside it).
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: usize =
        tx.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))? as usize;
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
    tx.commit()?;
    Ok(())
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
    #[test]
    fn a_nonce_is_accepted_once_across_connections() {
        let dir = tempfile::tempdir().unwrap();
        let a = super::StateDb::open(dir.path()).unwrap();
        let b = super::StateDb::open(dir.path()).unwrap();
        let exp = crate::identity::jwt::now() + 60;
        assert!(a.use_nonce("n1", exp).unwrap());
        assert!(!b.use_nonce("n1", exp).unwrap());
        assert!(b.use_nonce("n2", exp).unwrap());
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
        let db = super::StateDb::open(dir.path()).unwrap();
        assert!(!db.use_nonce("seen", exp).unwrap());
        drop(db);
        // Opening again applies nothing twice.
        drop(super::StateDb::open(dir.path()).unwrap());
        let conn = rusqlite::Connection::open(dir.path().join("warden.db")).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, super::MIGRATIONS.len());
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let e = super::StateDb::open(dir.path()).err().unwrap();
        assert!(format!("{e:#}").contains("schema version 99"), "{e:#}");
    }

    #[test]
    fn calls_are_counted_per_agent_within_the_last_minute() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::StateDb::open(dir.path()).unwrap();
        let counts = |agent, at| db.record_call(agent, None, at).unwrap().last_minute;
        assert_eq!(counts("a", 1_000_000), 0);
        assert_eq!(counts("a", 1_010_000), 1);
        assert_eq!(counts("b", 1_010_000), 0);
        assert_eq!(counts("a", 1_020_000), 2);
        // The first call is more than a minute old by now.
        assert_eq!(counts("a", 1_065_000), 2);
        // Calls within one second add up.
        assert_eq!(counts("a", 1_065_500), 3);
    }
}
