//! The state behind replay protection (and, later, audit, approvals, revocations): one
//! SQLite file in the state directory, shared by every `warden` process using it.

use anyhow::{Context as _, Result};
use rusqlite::{Connection, params};
use std::path::Path;
use std::sync::Mutex;

pub struct StateDb {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS nonces (
    nonce   TEXT PRIMARY KEY,
    expires INTEGER NOT NULL
);
";

impl StateDb {
    pub fn open(state_dir: &Path) -> Result<StateDb> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let path = state_dir.join("warden.db");
        let conn =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")?;
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("preparing {}", path.display()))?;
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
}
