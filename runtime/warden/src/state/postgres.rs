//! The state store on a PostgreSQL server, shared by every Warden node of a deployment
//! (`[state] url = "postgres://…"`). Its schema is versioned (`warden_schema`) and migrated
//! forward when a node opens it, as the SQLite file's is.
//!
//! How the guarantees hold across nodes:
//! - single rows (a nonce, an approval's use, a revocation) change in one statement, which
//!   PostgreSQL makes atomic however many nodes race;
//! - counts that decide (live sessions, pending approvals) are read and written under an
//!   advisory lock on the agent, for the transaction;
//! - the audit chain is one chain: every append takes the chain's advisory lock, so records
//!   of all nodes are linked in one order. A node appends in *group commits*: the call starts
//!   and records queued while a transaction runs are written together in the next one, and
//!   each caller is answered only after its commit. A call start counts the agent's calls,
//!   hands the counts to the caller, which decides the call, and writes the counts and its
//!   start records together, all under the chain's lock, so that calls are counted in the
//!   order they are chained; a call that decided with no count is counted with its records;
//! - a revocation is announced (`NOTIFY warden_revocations`) in the transaction that stores
//!   it; nodes listen, and drop what they keep warm of it (`StateStore::on_revocation`).
//!   Checks still ask the store every time: a node whose listener is down is only slower.
//!
//! The trait is synchronous and is called from inside other runtimes' tasks, so the store
//! drives its connections on a small runtime of its own and waits for the answers; the two
//! waits of every call (its revocation check, and the commit of a call counted at its end)
//! also have forms a task awaits (`revoked_in_task`, `count_call_in_task`).

use super::*;
use crate::deployment::parse_state_url;
use anyhow::{Result, anyhow, bail};
use futures_util::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, GenericClient, NoTls, Row, Statement};

/// Where a deployment's PostgreSQL state lives: the URL (no password in it) and the password,
/// read from the deployment's secrets.
#[derive(Clone)]
pub struct PostgresSettings {
    pub url: String,
    pub password: Option<crate::credentials::Secret>,
    /// The most connections this node opens.
    pub connections: usize,
}

/// How long one operation may wait for the server before it fails (and the call with it):
/// a server that stopped answering must not stall the node.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a batch waits for its callers to decide, once they have their counts: the chain
/// is locked for every node meanwhile.
const CALLER_DEADLINE: Duration = Duration::from_secs(2);
/// The most queued call starts and record appends one group commit writes.
const MAX_BATCH: usize = 64;
/// Advisory lock keys (`pg_advisory_xact_lock`): the audit chain, and migrations.
const CHAIN_LOCK: i64 = 0x5741_5244_454e_0001;
const MIGRATION_LOCK: i64 = 0x5741_5244_454e_0002;
/// The longest announcement sent (PostgreSQL refuses payloads of 8000 bytes or more).
const MAX_ANNOUNCEMENT: usize = 4000;
/// The channel revocations are announced on.
const REVOCATIONS_CHANNEL: &str = "warden_revocations";

pub struct PostgresStore {
    /// Kept only to be shut down without blocking when the store is dropped (which may
    /// happen inside another runtime).
    runtime: Option<tokio::runtime::Runtime>,
    handle: Handle,
    pool: Arc<Pool>,
    commits: mpsc::UnboundedSender<Commit>,
    checks: mpsc::UnboundedSender<Check>,
    /// Writes that added a row an agent can grow, since this node opened the store.
    growth: AtomicU64,
    watchers: Arc<Mutex<Vec<RevocationWatcher>>>,
    listening: std::sync::Once,
}

/// The schema, one migration per version; append, never edit.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE nonces (
    nonce   TEXT PRIMARY KEY,
    expires BIGINT NOT NULL
);
CREATE INDEX nonces_expiry ON nonces (expires);
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    agent        TEXT NOT NULL,
    user_name    TEXT,
    delegation   TEXT,
    scope        TEXT NOT NULL,
    created      BIGINT NOT NULL,
    expires      BIGINT NOT NULL,
    tainted      BOOLEAN NOT NULL DEFAULT false,
    taint_reason TEXT,
    calls        BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sessions_live ON sessions (agent, expires);
CREATE INDEX sessions_expiry ON sessions (expires);
CREATE TABLE call_counts (
    agent  TEXT NOT NULL,
    second BIGINT NOT NULL,
    calls  BIGINT NOT NULL,
    PRIMARY KEY (agent, second)
);
CREATE TABLE audit (
    seq       BIGINT PRIMARY KEY,
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
    user_name    TEXT,
    tool         TEXT NOT NULL,
    tool_digest  TEXT NOT NULL,
    input_digest TEXT NOT NULL,
    input        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    created      BIGINT NOT NULL,
    expires      BIGINT NOT NULL,
    status       TEXT NOT NULL,
    approver     TEXT,
    signature    TEXT,
    used_by      TEXT
);
CREATE INDEX approvals_by_digest ON approvals (digest, status);
CREATE INDEX approvals_pending ON approvals (status, agent, expires);
CREATE TABLE revocations (
    kind   TEXT NOT NULL,
    id     TEXT NOT NULL,
    at     BIGINT NOT NULL,
    reason TEXT NOT NULL,
        PRIMARY KEY (kind, id)
);
",
    "
-- Version 2: revocation events for downstream receivers, kept until each is acknowledged.
-- Times in unix ms; `held_until`: a node is delivering it until then.
CREATE TABLE revocation_events (
    seq          BIGSERIAL PRIMARY KEY,
    receiver     TEXT NOT NULL,
    jti          TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    id           TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt BIGINT NOT NULL DEFAULT 0,
    held_until   BIGINT NOT NULL DEFAULT 0,
    delivered    BIGINT,
    last_error   TEXT
);
CREATE INDEX revocation_events_due ON revocation_events (next_attempt) WHERE delivered IS NULL;
",
    "
-- Version 3: the session and delegation of a held call, for the approver to see.
ALTER TABLE approvals ADD COLUMN session TEXT;
ALTER TABLE approvals ADD COLUMN delegation TEXT;
",
];

/// Opens the deployment's PostgreSQL state store, shared.
pub fn open(settings: &PostgresSettings) -> Result<Arc<dyn StateStore>> {
    Ok(Arc::new(PostgresStore::open(settings)?))
}

impl PostgresStore {
    /// Connects, migrates the schema and prunes, or says why not.
    pub fn open(settings: &PostgresSettings) -> Result<PostgresStore> {
        let mut config = parse_state_url(&settings.url).map_err(|e| anyhow!("`state.url` {e}"))?;
        if let Some(password) = &settings.password {
            config.password(password.expose());
        }
        // The server ends what this node left hanging: a statement or a lock wait that outlasts
        // the node's own timeout, a transaction left open by a node that stopped answering.
        // Transactions read what was committed before each statement, whatever the server's
        // default: a read after an advisory lock sees what the lock's last holder wrote.
        let limits = format!(
            "-c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout={ms} \
             -c default_transaction_isolation=read\\ committed",
            ms = OPERATION_TIMEOUT.as_millis()
        );
        let options = match config.get_options() {
            Some(given) => format!("{given} {limits}"),
            None => limits,
        };
        config
            .options(options)
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .tcp_user_timeout(OPERATION_TIMEOUT)
            .application_name("warden");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("warden-postgres")
            .enable_all()
            .build()
            .context("starting the PostgreSQL store's threads")?;
        let handle = runtime.handle().clone();
        let pool = Arc::new(Pool {
            config,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(settings.connections.max(2))),
        });
        let (commits, queue) = mpsc::unbounded_channel();
        handle.spawn(group_commits(pool.clone(), queue));
        let (checks, queue) = mpsc::unbounded_channel();
        handle.spawn(group_checks(pool.clone(), queue));
        let store = PostgresStore {
            runtime: Some(runtime),
            handle,
            pool,
            commits,
            checks,
            growth: AtomicU64::new(0),
            watchers: Arc::default(),
            listening: std::sync::Once::new(),
        };
        let pool = store.pool.clone();
        store
            .block(async move { migrate(&mut *pool.get().await?).await })
            .context("preparing the PostgreSQL state store")?;
        store
            .prune(crate::identity::jwt::now())
            .context("pruning the PostgreSQL state store")?;
        Ok(store)
    }

    /// Runs `work` on the store's runtime and waits for it, at most `OPERATION_TIMEOUT`.
    fn block<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let out = match tokio::time::timeout(OPERATION_TIMEOUT, work).await {
                Ok(out) => out,
                Err(_) => Err(no_answer()),
            };
            let _ = answer.send(out);
        });
        answer_of(&answered)
    }

    /// Deletes what no decision and no person needs any more, as `SqliteStore::prune` does.
    pub fn prune(&self, now: i64) -> Result<()> {
        self.statement(move |mut conn| async move {
            let tx = read_committed(&mut conn).await?;
            tx.execute("DELETE FROM nonces WHERE expires < $1", &[&now])
                .await?;
            tx.execute(
                "DELETE FROM call_counts WHERE second <= $1",
                &[&(now - RATE_WINDOW)],
            )
            .await?;
            tx.execute(
                "DELETE FROM sessions WHERE expires < $1",
                &[&(now - PRUNE_AFTER)],
            )
            .await?;
            tx.execute(
                "DELETE FROM approvals WHERE status = 'pending' AND expires < $1",
                &[&(now - PRUNE_AFTER)],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Counts a write that added a row an agent can grow, and prunes every `PRUNE_EVERY`-th,
    /// in the background: no call waits for it.
    fn grew(&self) {
        let count = self.growth.fetch_add(1, Ordering::Relaxed) + 1;
        if count.is_multiple_of(PRUNE_EVERY) {
            let pool = self.pool.clone();
            let now = crate::identity::jwt::now();
            self.handle.spawn(async move {
                let pruned = tokio::time::timeout(OPERATION_TIMEOUT, async {
                    let conn = pool.get().await?;
                    conn.execute("DELETE FROM nonces WHERE expires < $1", &[&now])
                        .await?;
                    conn.execute(
                        "DELETE FROM call_counts WHERE second <= $1",
                        &[&(now - RATE_WINDOW)],
                    )
                    .await?;
                    anyhow::Ok(())
                });
                if let Err(e) = pruned.await.unwrap_or_else(|_| Err(no_answer())) {
                    tracing::warn!(error = %format!("{e:#}"), "pruning the PostgreSQL state failed");
                }
            });
        }
    }

    /// Queues `commit` for the next group commit.
    fn enqueue(&self, commit: Commit) -> Result<()> {
        self.commits
            .send(commit)
            .map_err(|_| anyhow!("the PostgreSQL store's writer stopped"))
    }

    /// Queues a call to count with its records for the next group commit.
    fn enqueue_count(
        &self,
        agent: &str,
        session: Option<&str>,
        now_ms: i64,
        records: &[AuditEntry],
        done: Reply<()>,
    ) -> Result<()> {
        self.enqueue(Commit::Count {
            agent: agent.to_string(),
            session: session.map(str::to_string),
            now_ms,
            entries: records.to_vec(),
            done,
        })
    }

    /// Queues a revocation check (every call's, every request's) for the next group read
    /// (`group_checks`). A check naming an id the server cannot hold is refused here: sent,
    /// it would fail the read of every check in the group.
    fn enqueue_check(
        &self,
        ids: &[(RevocationKind, &str)],
        answer: Reply<Option<Revocation>>,
    ) -> Result<()> {
        checkable(ids)?;
        let ids: Vec<(RevocationKind, String)> = ids
            .iter()
            .map(|(kind, id)| (*kind, id.to_string()))
            .collect();
        if ids.is_empty() {
            answer.send(Ok(None));
            return Ok(());
        }
        self.checks
            .send(Check { ids, answer })
            .map_err(|_| anyhow!("the PostgreSQL store's revocation reader stopped"))
    }

    /// Runs `work` on a pooled connection and waits for it.
    fn statement<T, F, Fut>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Pooled) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let pool = self.pool.clone();
        self.block(async move { work(pool.get().await?).await })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Waits for an answer from the store's runtime. On a worker of a multi-threaded runtime the
/// wait lets that runtime move its other tasks elsewhere meanwhile.
fn wait<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The answer on `channel`: a caller waits at most twice `OPERATION_TIMEOUT` (its write may
/// queue behind one batch), whatever becomes of the store's own threads.
fn answer_of<T>(channel: &std::sync::mpsc::Receiver<Result<T>>) -> Result<T> {
    wait(|| {
        channel
            .recv_timeout(2 * OPERATION_TIMEOUT)
            .map_err(|_| unanswered())?
    })
}

/// `answer_of` for a caller in a task: it waits without holding its thread.
async fn answer_in_task<T>(channel: oneshot::Receiver<Result<T>>) -> Result<T> {
    match tokio::time::timeout(2 * OPERATION_TIMEOUT, channel).await {
        Ok(Ok(answer)) => answer,
        _ => Err(unanswered()),
    }
}

/// Where the store's threads answer a caller: one waiting on its thread (the synchronous
/// trait), or in its task (`count_call_in_task`, `revoked_in_task`).
enum Reply<T> {
    Thread(std::sync::mpsc::SyncSender<Result<T>>),
    Task(oneshot::Sender<Result<T>>),
}

impl<T> Reply<T> {
    /// A reply to a caller waiting on its thread, and where it waits (`answer_of`).
    fn to_thread() -> (Reply<T>, std::sync::mpsc::Receiver<Result<T>>) {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        (Reply::Thread(reply), answer)
    }

    /// A reply to a caller waiting in its task, and where it waits (`answer_in_task`).
    fn to_task() -> (Reply<T>, oneshot::Receiver<Result<T>>) {
        let (reply, answer) = oneshot::channel();
        (Reply::Task(reply), answer)
    }

    /// Whether the caller stopped waiting (known of a task only).
    fn abandoned(&self) -> bool {
        match self {
            Reply::Thread(_) => false,
            Reply::Task(reply) => reply.is_closed(),
        }
    }

    /// Answers; a caller that stopped waiting is not an error (a commit it queued stands).
    fn send(self, answer: Result<T>) {
        let _ = match self {
            Reply::Thread(reply) => reply.send(answer).map_err(drop),
            Reply::Task(reply) => reply.send(answer).map_err(drop),
        };
    }
}

fn no_answer() -> anyhow::Error {
    anyhow!(
        "the PostgreSQL state store did not answer within {}s",
        OPERATION_TIMEOUT.as_secs()
    )
}

/// A caller's wait ended without an answer: what it queued may still be done.
fn unanswered() -> anyhow::Error {
    anyhow!(
        "the PostgreSQL state store did not answer (in {}s at most): a write it was asked for \
         may or may not be made",
        (2 * OPERATION_TIMEOUT).as_secs()
    )
}

/// Connections to the server, opened when needed, at most `permits` at once. A connection
/// that broke, or was left in a transaction, is dropped, not reused (closing it rolls back
/// what it had not sent a commit for).
struct Pool {
    config: Config,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
}

/// A connection and the statements prepared on it (a statement not prepared costs a round
/// trip more each time it runs).
struct Conn {
    client: Client,
    prepared: HashMap<&'static str, Statement>,
}

struct Pooled {
    conn: Option<Conn>,
    /// In a transaction begun with a raw `BEGIN` and not yet committed: closed, not reused,
    /// if dropped so (a batch that failed or timed out halfway), which rolls it back.
    open_transaction: bool,
    pool: Arc<Pool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Pool {
    async fn get(self: &Arc<Pool>) -> Result<Pooled> {
        let permit = self.permits.clone().acquire_owned().await?;
        let idle = loop {
            let Some(conn) = self.idle().pop() else {
                break None;
            };
            if !conn.client.is_closed() {
                break Some(conn);
            }
        };
        let conn = match idle {
            Some(conn) => conn,
            None => Conn {
                client: connect(&self.config).await?,
                prepared: HashMap::new(),
            },
        };
        Ok(Pooled {
            conn: Some(conn),
            open_transaction: false,
            pool: self.clone(),
            _permit: permit,
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Pooled {
    /// `sql`, prepared on this connection the first time.
    async fn prepared(&mut self, sql: &'static str) -> Result<Statement> {
        let conn = self.conn.as_mut().expect("taken only on drop");
        if let Some(statement) = conn.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let statement = conn.client.prepare(sql).await?;
        conn.prepared.insert(sql, statement.clone());
        Ok(statement)
    }
}

/// A new connection, driven on the current (the store's) runtime.
async fn connect(config: &Config) -> Result<Client> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .context("connecting to the PostgreSQL state store")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}

impl std::ops::Deref for Pooled {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.conn.as_ref().expect("taken only on drop").client
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.conn.as_mut().expect("taken only on drop").client
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !conn.client.is_closed()
            && !self.open_transaction
        {
            self.pool.idle().push(conn);
        }
    }
}

/// Brings the schema to the current version, in one transaction that nodes starting at once
/// take in turn.
async fn migrate(client: &mut Client) -> Result<()> {
    let tx = read_committed(client).await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS warden_schema (version INTEGER NOT NULL)")
        .await?;
    let version = tx
        .query_opt("SELECT version FROM warden_schema", &[])
        .await?
        .map(|row| row.get::<_, i32>(0))
        .unwrap_or(0);
    let known = MIGRATIONS.len();
    let Ok(at) = usize::try_from(version) else {
        bail!("the PostgreSQL state is at schema version {version}, which no Warden wrote");
    };
    if at > known {
        bail!(
            "the PostgreSQL state is at schema version {at}, newer than this Warden knows \
             ({known}); use a newer warden"
        );
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(at) {
        tx.batch_execute(migration)
            .await
            .with_context(|| format!("migrating to schema version {}", i + 1))?;
    }
    tx.execute("DELETE FROM warden_schema", &[]).await?;
    tx.execute(
        "INSERT INTO warden_schema (version) VALUES ($1)",
        &[&(known as i32)],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One write waiting for the next group commit.
enum Commit {
    /// Records to append (`StateStore::append_audit`).
    Append {
        entries: Vec<AuditEntry>,
        done: Reply<()>,
    },
    /// A call to count with its records, deciding nothing (`StateStore::count_call`).
    Count {
        agent: String,
        session: Option<String>,
        now_ms: i64,
        entries: Vec<AuditEntry>,
        done: Reply<()>,
    },
    /// A call to count and start (`StateStore::record_call`).
    Call {
        agent: String,
        session: Option<String>,
        now_ms: i64,
        /// The counts, for the caller to decide with.
        counts: std::sync::mpsc::SyncSender<Result<CallCounts>>,
        /// The caller's start records, or None: the caller failed, write nothing.
        entries: oneshot::Receiver<Option<Vec<AuditEntry>>>,
        done: Reply<()>,
    },
}

impl Commit {
    /// The call it counts, if it counts one: agent, session, when.
    fn call(&self) -> Option<(&str, Option<&str>, i64)> {
        match self {
            Commit::Call {
                agent,
                session,
                now_ms,
                ..
            }
            | Commit::Count {
                agent,
                session,
                now_ms,
                ..
            } => Some((agent, session.as_deref(), *now_ms)),
            Commit::Append { .. } => None,
        }
    }
}

/// A write of the batch being committed, and what becomes of it.
struct Op {
    commit: Commit,
    /// Its own failure (the batch's failure is every op's).
    failed: Option<anyhow::Error>,
    /// A call counted (a call start: whose counts went to the caller).
    counted: bool,
    /// The records it appends, once known.
    records: Vec<AuditEntry>,
}

impl Op {
    fn new(mut commit: Commit) -> Op {
        // A call start's records come once its caller has decided.
        let records = match &mut commit {
            Commit::Append { entries, .. } | Commit::Count { entries, .. } => {
                std::mem::take(entries)
            }
            Commit::Call { .. } => vec![],
        };
        Op {
            commit,
            failed: None,
            counted: false,
            records,
        }
    }

    /// Answers the op's caller: after the commit, or with the batch's failure.
    fn answer(self, batch_failed: Option<&str>) {
        let outcome = match (batch_failed, self.failed) {
            (Some(e), _) => Err(anyhow!("writing to the PostgreSQL state store: {e}")),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(()),
        };
        let done = match self.commit {
            Commit::Append { done, .. } | Commit::Count { done, .. } => done,
            Commit::Call { counts, done, .. } => {
                if !self.counted
                    && let Err(e) = &outcome
                {
                    let _ = counts.send(Err(anyhow!("{e:#}")));
                }
                done
            }
        };
        done.send(outcome);
    }
}

/// A revocation check waiting for the next group read.
struct Check {
    ids: Vec<(RevocationKind, String)>,
    /// The first of `ids` revoked, if any.
    answer: Reply<Option<Revocation>>,
}

/// The node's revocation reader: answers every check queued while the last read ran with one
/// query, which starts after each of them was asked, so that each sees every revocation
/// committed before it asked.
async fn group_checks(pool: Arc<Pool>, mut queue: mpsc::UnboundedReceiver<Check>) {
    while let Some(first) = queue.recv().await {
        let mut checks = vec![first];
        while checks.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => checks.push(next),
                Err(_) => break,
            }
        }
        // A call that stopped waiting (cancelled) needs no answer.
        checks.retain(|check| !check.answer.abandoned());
        if checks.is_empty() {
            continue;
        }
        let (kinds, names): (Vec<&'static str>, Vec<&str>) = checks
            .iter()
            .flat_map(|check| &check.ids)
            .map(|(kind, id)| (kind.as_str(), id.as_str()))
            .unzip();
        let read = tokio::time::timeout(OPERATION_TIMEOUT, async {
            let mut conn = pool.get().await?;
            let revoked = conn.prepared(REVOKED).await?;
            let rows = conn.query(&revoked, &[&kinds, &names]).await?;
            rows.iter().map(revocation).collect::<Result<Vec<_>>>()
        })
        .await
        .unwrap_or_else(|_| Err(no_answer()));
        match read {
            // In order of time: each check's answer is the first that names one of its ids.
            Ok(revoked) => {
                for check in checks {
                    let first = revoked.iter().find(|revocation| {
                        check
                            .ids
                            .iter()
                            .any(|(kind, id)| *kind == revocation.kind && *id == revocation.id)
                    });
                    check.answer.send(Ok(first.cloned()));
                }
            }
            Err(e) => {
                let e = format!("{e:#}");
                for check in checks {
                    check.answer.send(Err(anyhow!("{e}")));
                }
            }
        }
    }
}

/// The node's writer: takes every write queued while the last transaction ran and commits
/// them in one, under the chain's lock, then answers their callers.
async fn group_commits(pool: Arc<Pool>, mut queue: mpsc::UnboundedReceiver<Commit>) {
    let mut head = Head::default();
    while let Some(first) = queue.recv().await {
        let mut ops = vec![Op::new(first)];
        while ops.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => ops.push(Op::new(next)),
                Err(_) => break,
            }
        }
        let failure = commit_batch(&pool, &mut ops, &mut head)
            .await
            .err()
            .map(|e| format!("{e:#}"));
        if failure.is_some() {
            head = Head::default();
        }
        for op in ops {
            op.answer(failure.as_deref());
        }
    }
}

/// The chain's head as this node's last commit left it, and whether this node found it there
/// when it last looked: then the next batch links to it without reading it first, and its
/// transaction checks that it still is the head (`HEAD_IS`) before writing.
#[derive(Default)]
struct Head {
    last: Option<(u64, String)>,
    alone: bool,
}

impl Head {
    /// Where `ops` link without reading the head: none if they need anything read first
    /// (counts to decide with, sessions to count in) or the head may have moved.
    fn guess(&self, ops: &[Op]) -> Option<(u64, String)> {
        let reads = ops.iter().any(|op| match &op.commit {
            Commit::Call { .. } => true,
            Commit::Count { session, .. } => session.is_some(),
            Commit::Append { .. } => false,
        });
        // An empty chain has no head to check: its first records are linked the usual way.
        let links = ops.iter().any(|op| !op.records.is_empty());
        match (reads, self.alone, &self.last) {
            (false, true, Some(last)) if last.0 > 0 || !links => Some(last.clone()),
            _ => None,
        }
    }
}

/// Whatever the server's default (a pooler may drop the connection's options): each statement
/// reads what was committed before it, so a read after the chain's lock sees what the lock's
/// last holder wrote.
const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
const LOCK_CHAIN: &str = "SELECT pg_advisory_xact_lock($1)";
/// Fails (`SqlState::DIVISION_BY_ZERO`) unless ($1, $2) is the chain's head: a batch linked
/// to the head its node left runs it after the chain's lock, before its writes, so that a
/// head moved by another node — or lost, as on a failover to a replica that lacked the
/// node's last commits — rolls the batch back instead of linking it wrongly.
const HEAD_IS: &str = "SELECT 1 / count(*)::INT
    FROM (SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1) AS head
    WHERE seq = $1 AND hash = $2";
const CHAIN_HEAD: &str = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1";
const CALLS_SINCE: &str =
    "SELECT agent, second, calls FROM call_counts WHERE agent = ANY($1) AND second > $2";
const SESSION_CALLS: &str = "SELECT id, calls FROM sessions WHERE id = ANY($1)";
const COUNT_CALLS: &str = "INSERT INTO call_counts (agent, second, calls)
    SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[])
    ON CONFLICT (agent, second) DO UPDATE SET calls = call_counts.calls + EXCLUDED.calls";
const COUNT_SESSION_CALLS: &str = "UPDATE sessions SET calls = sessions.calls + added.calls
    FROM unnest($1::TEXT[], $2::BIGINT[]) AS added (id, calls) WHERE sessions.id = added.id";
const APPEND: &str = "INSERT INTO audit (seq, call_id, body, prev_hash, hash)
    SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[])";

/// The statements of a group commit, prepared once per connection.
struct Statements {
    lock: Statement,
    head_is: Statement,
    head: Statement,
    calls_since: Statement,
    session_calls: Statement,
    count_calls: Statement,
    count_session_calls: Statement,
    append: Statement,
}

impl Statements {
    async fn prepare(conn: &mut Pooled, deadline: tokio::time::Instant) -> Result<Statements> {
        let all = [
            LOCK_CHAIN,
            HEAD_IS,
            CHAIN_HEAD,
            CALLS_SINCE,
            SESSION_CALLS,
            COUNT_CALLS,
            COUNT_SESSION_CALLS,
            APPEND,
        ];
        let mut prepared = Vec::with_capacity(all.len());
        for sql in all {
            prepared.push(within(deadline, conn.prepared(sql)).await?);
        }
        let [
            lock,
            head_is,
            head,
            calls_since,
            session_calls,
            count_calls,
            count_session_calls,
            append,
        ] = <[Statement; 8]>::try_from(prepared).expect("one per statement");
        Ok(Statements {
            lock,
            head_is,
            head,
            calls_since,
            session_calls,
            count_calls,
            count_session_calls,
            append,
        })
    }
}

/// Writes `ops` in one transaction. Where this node appended last and nothing needs reading
/// (`Head::guess`), in one round trip to the server: the chain's lock, the check that the
/// head is where this node left it (`HEAD_IS`), the counts, the records linked to that head,
/// and the commit. If another node appended meanwhile, the check fails, the transaction rolls
/// back, and the batch is written as below on the same connection.
///
/// Otherwise in two round trips: the chain's lock, its head, the counts the batch's call
/// starts decide with and the sessions its calls are counted in; then, once every call
/// start's caller has decided with the counts it was handed, the counts, the records and the
/// commit. Counts are handed out in batch order, each including the calls before it in the
/// batch (a caller that then fails leaves the later ones counting one call too many: never
/// too few).
///
/// Everything before the commit must end within `OPERATION_TIMEOUT` (a connection dropped
/// in its transaction is closed, which rolls it back). The commit is not cut short as early,
/// except where it was sent with the rest (a batch linked to the head its node left): once it
/// is sent the server may keep it, and a commit not confirmed is reported as possibly kept.
async fn commit_batch(pool: &Arc<Pool>, ops: &mut [Op], head: &mut Head) -> Result<()> {
    let deadline = tokio::time::Instant::now() + OPERATION_TIMEOUT;
    let mut conn = within(deadline, pool.get()).await?;
    let statements = Statements::prepare(&mut conn, deadline).await?;
    if let Some((seq, hash)) = head.guess(ops) {
        for op in ops.iter_mut() {
            op.counted = matches!(op.commit, Commit::Count { .. });
        }
        let writes = Writes::of(ops, (seq, hash.clone()))?;
        let seq = i64::try_from(seq)?;
        conn.open_transaction = true;
        let client: &Client = &conn;
        // Sent at once; every answer is read, so that the connection is out of its
        // transaction (committed or rolled back) whatever failed.
        let head_params: [&(dyn ToSql + Sync); 2] = [&seq, &hash];
        let written = committed(deadline, async {
            let (begun, locked, found, done) = tokio::join!(
                client.batch_execute(BEGIN),
                client.execute(&statements.lock, &[&CHAIN_LOCK]),
                // Nothing to check where no record is linked (a batch of counts).
                unless(
                    writes.seqs.is_empty(),
                    client.execute(&statements.head_is, &head_params)
                ),
                writes.commit(client, &statements),
            );
            begun.and(locked).and(found).and(done)
        })
        .await;
        match written {
            Ok(_) => {
                conn.open_transaction = false;
                head.last = Some(writes.head);
                return Ok(());
            }
            Err(CommitError::Refused(e)) if e.code() == Some(&SqlState::DIVISION_BY_ZERO) => {
                conn.open_transaction = false;
                head.alone = false;
            }
            Err(e) => return Err(e.into()),
        }
    }
    write_batch(&mut conn, ops, &statements, head, deadline).await
}

/// Waits for a batch's commit, at most until `until`.
async fn committed<T>(
    until: tokio::time::Instant,
    commit: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, CommitError> {
    match tokio::time::timeout_at(until, commit).await {
        Ok(Ok(done)) => Ok(done),
        // The server refused: nothing of the transaction was kept.
        Ok(Err(e)) if e.code().is_some() => Err(CommitError::Refused(e)),
        // The connection failed: the commit may have been made before it did.
        Ok(Err(e)) => Err(CommitError::Unconfirmed(format!(": {e}"))),
        Err(_) => Err(CommitError::Unconfirmed(" in time".into())),
    }
}

#[derive(Debug, thiserror::Error)]
enum CommitError {
    #[error(transparent)]
    Refused(tokio_postgres::Error),
    #[error("the server did not confirm the commit{0}: its records may or may not have been kept")]
    Unconfirmed(String),
}

/// What a batch writes once its records are linked: the counts of its counted calls and the
/// records of the ops that did not fail.
struct Writes<'a> {
    agents: Vec<&'a str>,
    seconds: Vec<i64>,
    added: Vec<i64>,
    sessions: Vec<&'a str>,
    session_added: Vec<i64>,
    seqs: Vec<i64>,
    calls: Vec<&'a str>,
    bodies: Vec<&'a str>,
    prevs: Vec<String>,
    hashes: Vec<String>,
    /// The chain's head after them.
    head: (u64, String),
}

impl<'a> Writes<'a> {
    /// `ops`' writes, the first record linked to `head`.
    fn of(ops: &'a [Op], head: (u64, String)) -> Result<Writes<'a>> {
        let (mut counted, mut session_counted) = (
            BTreeMap::<(&str, i64), i64>::new(),
            BTreeMap::<&str, i64>::new(),
        );
        for op in ops.iter().filter(|op| op.counted && op.failed.is_none()) {
            if let Some((agent, session, now_ms)) = op.commit.call() {
                *counted.entry((agent, now_ms.div_euclid(1000))).or_default() += 1;
                if let Some(id) = session {
                    *session_counted.entry(id).or_default() += 1;
                }
            }
        }
        let (mut seq, mut prev) = head;
        let (mut seqs, mut calls, mut bodies, mut prevs, mut hashes) =
            (vec![], vec![], vec![], vec![], vec![]);
        for entry in ops
            .iter()
            .filter(|op| op.failed.is_none())
            .flat_map(|op| &op.records)
        {
            seq += 1;
            let hash = link_hash(&prev, seq, &entry.call_id, &entry.body);
            seqs.push(i64::try_from(seq)?);
            calls.push(entry.call_id.as_str());
            bodies.push(entry.body.as_str());
            prevs.push(std::mem::replace(&mut prev, hash.clone()));
            hashes.push(hash);
        }
        let (agents, seconds, added) = counted
            .into_iter()
            .map(|((agent, second), n)| (agent, second, n))
            .collect();
        let (sessions, session_added) = session_counted.into_iter().unzip();
        Ok(Writes {
            agents,
            seconds,
            added,
            sessions,
            session_added,
            seqs,
            calls,
            bodies,
            prevs,
            hashes,
            head: (seq, prev),
        })
    }

    /// Sends the writes and the commit, pipelined.
    async fn commit(&self, client: &Client, s: &Statements) -> Result<(), tokio_postgres::Error> {
        let count_params: [&(dyn ToSql + Sync); 3] = [&self.agents, &self.seconds, &self.added];
        let session_params: [&(dyn ToSql + Sync); 2] = [&self.sessions, &self.session_added];
        let append_params: [&(dyn ToSql + Sync); 5] = [
            &self.seqs,
            &self.calls,
            &self.bodies,
            &self.prevs,
            &self.hashes,
        ];
        // Every answer is read, the commit's too: after a failed write it is a rollback.
        let (counted, session_counted, appended, done) = tokio::join!(
            unless(
                self.agents.is_empty(),
                client.execute(&s.count_calls, &count_params)
            ),
            unless(
                self.sessions.is_empty(),
                client.execute(&s.count_session_calls, &session_params)
            ),
            unless(
                self.seqs.is_empty(),
                client.execute(&s.append, &append_params)
            ),
            client.batch_execute("COMMIT"),
        );
        counted.and(session_counted).and(appended).and(done)
    }
}

/// `work`'s outcome, or a timeout's error at `deadline`.
async fn within<T, E: Into<anyhow::Error>>(
    deadline: tokio::time::Instant,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T> {
    match tokio::time::timeout_at(deadline, work).await {
        Ok(done) => done.map_err(Into::into),
        Err(_) => Err(no_answer()),
    }
}

async fn write_batch(
    conn: &mut Pooled,
    ops: &mut [Op],
    statements: &Statements,
    head: &mut Head,
    deadline: tokio::time::Instant,
) -> Result<()> {
    // What the batch reads first: the counts its call starts decide with, and the sessions
    // its calls are counted in.
    let (mut agents, mut sessions, mut since) = (vec![], vec![], i64::MAX);
    for op in ops.iter() {
        let Some((agent, session, now_ms)) = op.commit.call() else {
            continue;
        };
        if let Commit::Call { .. } = op.commit {
            agents.push(agent);
            since = since.min(now_ms.div_euclid(1000) - RATE_WINDOW);
        }
        sessions.extend(session);
    }
    conn.open_transaction = true;
    let client: &Client = conn;
    // Sent together, answered in order: one round trip.
    let since_params: [&(dyn ToSql + Sync); 2] = [&agents, &since];
    let session_params: [&(dyn ToSql + Sync); 1] = [&sessions];
    let (_, _, last, recent, known) = within(deadline, async {
        tokio::try_join!(
            client.batch_execute(BEGIN),
            client.execute(&statements.lock, &[&CHAIN_LOCK]),
            client.query_opt(&statements.head, &[]),
            unless(
                agents.is_empty(),
                client.query(&statements.calls_since, &since_params)
            ),
            unless(
                sessions.is_empty(),
                client.query(&statements.session_calls, &session_params)
            ),
        )
    })
    .await?;
    // Count each call, in batch order, and hand each call start its counts.
    let mut per_second: HashMap<(String, i64), i64> = recent
        .iter()
        .map(|row| Ok(((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?)))
        .collect::<Result<_, tokio_postgres::Error>>()?;
    let mut in_session: HashMap<String, i64> = known
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()?;
    for op in ops.iter_mut() {
        let Some((agent, session, now_ms)) = op.commit.call() else {
            continue;
        };
        let second = now_ms.div_euclid(1000);
        let before = match session {
            None => 0,
            Some(id) => match in_session.get_mut(id) {
                Some(calls) => {
                    *calls += 1;
                    *calls - 1
                }
                None => {
                    op.failed = Some(anyhow!("no session `{id}` in the state store"));
                    continue;
                }
            },
        };
        op.counted = match &op.commit {
            Commit::Call { counts, .. } => {
                let last_minute: i64 = per_second
                    .iter()
                    .filter(|((a, s), _)| a == agent && *s > second - RATE_WINDOW)
                    .map(|(_, calls)| calls)
                    .sum();
                counts
                    .send(Ok(CallCounts {
                        last_minute: u64::try_from(last_minute).unwrap_or(0),
                        in_session: u64::try_from(before).unwrap_or(0),
                    }))
                    .is_ok()
            }
            _ => true,
        };
        *per_second.entry((agent.to_string(), second)).or_default() += 1;
    }

    // The callers of call starts decide meanwhile (each has its counts now); then what each
    // op appends, in batch order. A caller that does not answer in time fails alone.
    let decided_by = (tokio::time::Instant::now() + CALLER_DEADLINE).min(deadline);
    for op in ops.iter_mut() {
        if let (Commit::Call { entries, .. }, true) = (&mut op.commit, op.counted) {
            match tokio::time::timeout_at(decided_by, entries).await {
                Ok(Ok(Some(start))) => op.records = start,
                _ => op.failed = Some(anyhow!("the call was not started")),
            }
        }
    }
    let found = match last {
        Some(row) => (
            u64::try_from(row.try_get::<_, i64>(0)?)?,
            row.try_get::<_, String>(1)?,
        ),
        None => (0, GENESIS.to_string()),
    };
    let alone = head.last.as_ref() == Some(&found);
    let writes = Writes::of(ops, found)?;
    committed(
        tokio::time::Instant::now() + OPERATION_TIMEOUT,
        writes.commit(client, statements),
    )
    .await?;
    conn.open_transaction = false;
    *head = Head {
        last: Some(writes.head),
        alone,
    };
    Ok(())
}

/// A transaction in which each statement reads what was committed before it, whatever the
/// server's default (`BEGIN`).
async fn read_committed(client: &mut Client) -> Result<tokio_postgres::Transaction<'_>> {
    Ok(client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
        .start()
        .await?)
}

/// `work`'s outcome, or nothing (the default) without sending it if `skip`: a statement with
/// nothing to read or write costs the server a parse and a plan.
async fn unless<T: Default, E>(
    skip: bool,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    if skip { Ok(T::default()) } else { work.await }
}

impl StateStore for PostgresStore {
    fn ping(&self) -> Result<()> {
        self.statement(|c| async move {
            c.query_one("SELECT 1", &[]).await?;
            Ok(())
        })
    }

    fn use_nonce(&self, nonce: &str, expires: i64) -> Result<bool> {
        let nonce = nonce.to_string();
        let inserted = self.statement(move |mut c| async move {
            let insert = c.prepared(USE_NONCE).await?;
            Ok(c.execute(&insert, &[&nonce, &expires]).await?)
        })?;
        self.grew();
        Ok(inserted == 1)
    }

    fn start_session(&self, session: &Session) -> Result<()> {
        let session = session.clone();
        let scope = serde_json::to_string(&session.scope)?;
        let now = crate::identity::jwt::now();
        self.statement(move |mut conn| async move {
            let tx = read_committed(&mut conn).await?;
            lock_agent(&tx, "sessions", &session.agent).await?;
            let live: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM sessions WHERE agent = $1 AND expires > $2
                     AND id NOT IN (SELECT id FROM revocations WHERE kind = 'session')",
                    &[&session.agent, &now],
                )
                .await?
                .get(0);
            if u64::try_from(live).unwrap_or(u64::MAX) >= MAX_LIVE_SESSIONS {
                return Err(TooManySessions {
                    agent: session.agent.clone(),
                    max: MAX_LIVE_SESSIONS,
                }
                .into());
            }
            tx.execute(
                "INSERT INTO sessions (id, agent, user_name, delegation, scope, created, expires)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &session.id,
                    &session.agent,
                    &session.user,
                    &session.delegation,
                    &scope,
                    &now,
                    &session.expires,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })?;
        self.grew();
        Ok(())
    }

    fn session(&self, id: &str) -> Result<Option<Session>> {
        let id = id.to_string();
        let row = self.statement(move |c| async move {
            Ok(c.query_opt(
                "SELECT id, agent, user_name, delegation, scope, expires, tainted, taint_reason,
                 calls FROM sessions WHERE id = $1",
                &[&id],
            )
            .await?)
        })?;
        let Some(row) = row else { return Ok(None) };
        let scope: String = row.try_get(4)?;
        Ok(Some(Session {
            id: row.try_get(0)?,
            agent: row.try_get(1)?,
            user: row.try_get(2)?,
            delegation: row.try_get(3)?,
            scope: serde_json::from_str(&scope).context("a session's scope")?,
            expires: row.try_get(5)?,
            tainted: row.try_get(6)?,
            taint_reason: row.try_get(7)?,
            calls: u64::try_from(row.try_get::<_, i64>(8)?).unwrap_or(0),
        }))
    }

    fn taint(&self, session: &str, reason: &str) -> Result<()> {
        let (session, reason) = (session.to_string(), reason.to_string());
        self.statement(move |c| async move {
            c.execute(
                "UPDATE sessions SET tainted = true, taint_reason = COALESCE(taint_reason, $2)
                 WHERE id = $1",
                &[&session, &reason],
            )
            .await?;
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
        let (counts_tx, counts_rx) = std::sync::mpsc::sync_channel(1);
        let (entries_tx, entries_rx) = oneshot::channel();
        let (done_tx, done_rx) = Reply::to_thread();
        self.enqueue(Commit::Call {
            agent: agent.to_string(),
            session: session.map(str::to_string),
            now_ms,
            counts: counts_tx,
            entries: entries_rx,
            done: done_tx,
        })?;
        let counts = answer_of(&counts_rx)?;
        match start(counts) {
            Ok(entries) => {
                let _ = entries_tx.send(Some(entries));
            }
            Err(e) => {
                let _ = entries_tx.send(None);
                return Err(e);
            }
        }
        answer_of(&done_rx)?;
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
        let (done, answered) = Reply::to_thread();
        self.enqueue_count(agent, session, now_ms, records, done)?;
        answer_of(&answered)?;
        self.grew();
        Ok(())
    }

    fn count_call_in_task<'a>(
        &'a self,
        agent: &'a str,
        session: Option<&'a str>,
        now_ms: i64,
        records: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<()>> {
        let (done, answered) = Reply::to_task();
        let queued = self.enqueue_count(agent, session, now_ms, records, done);
        Box::pin(async move {
            queued?;
            answer_in_task(answered).await?;
            self.grew();
            Ok(())
        })
    }

    fn recent_calls(&self, agent: &str, now_ms: i64) -> Result<u64> {
        let agent = agent.to_string();
        let since = now_ms.div_euclid(1000) - RATE_WINDOW;
        self.statement(move |c| async move {
            let count: i64 = c
                .query_one(
                    "SELECT COALESCE(SUM(calls), 0)::BIGINT FROM call_counts
                     WHERE agent = $1 AND second > $2",
                    &[&agent, &since],
                )
                .await?
                .get(0);
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }

    fn append_audit(&self, entries: &[AuditEntry]) -> Result<()> {
        let (done, answered) = Reply::to_thread();
        self.enqueue(Commit::Append {
            entries: entries.to_vec(),
            done,
        })?;
        answer_of(&answered)
    }

    fn audit_records(&self, after: u64, limit: usize) -> Result<Vec<AuditLink>> {
        let (after, limit) = (i64::try_from(after)?, i64::try_from(limit)?);
        let rows = self.statement(move |c| async move {
            Ok(c.query(
                "SELECT seq, call_id, body, prev_hash, hash FROM audit WHERE seq > $1
                 ORDER BY seq LIMIT $2",
                &[&after, &limit],
            )
            .await?)
        })?;
        rows.iter().map(audit_link).collect()
    }

    fn audit_of_call(&self, call_id: &str) -> Result<Vec<AuditLink>> {
        let call_id = call_id.to_string();
        let rows = self.statement(move |c| async move {
            Ok(c.query(
                "SELECT seq, call_id, body, prev_hash, hash FROM audit WHERE call_id = $1
                 ORDER BY seq",
                &[&call_id],
            )
            .await?)
        })?;
        rows.iter().map(audit_link).collect()
    }

    fn audit_tail(&self, count: usize) -> Result<Vec<AuditLink>> {
        let count = i64::try_from(count)?;
        let rows = self.statement(move |c| async move {
            Ok(c.query(
                "SELECT seq, call_id, body, prev_hash, hash FROM
                 (SELECT * FROM audit ORDER BY seq DESC LIMIT $1) AS tail ORDER BY seq",
                &[&count],
            )
            .await?)
        })?;
        rows.iter().map(audit_link).collect()
    }

    fn request_approval(&self, request: &Approval, max_pending: u64) -> Result<Approval> {
        let request = request.clone();
        let stored = self.statement(move |mut conn| async move {
            let tx = read_committed(&mut conn).await?;
            lock_agent(&tx, "approvals", &request.agent).await?;
            let now = crate::identity::jwt::now();
            let pending = tx
                .query_opt(
                    &format!(
                        "{APPROVAL_COLUMNS} WHERE digest = $1 AND status = 'pending'
                         AND expires > $2 ORDER BY created DESC LIMIT 1"
                    ),
                    &[&request.digest, &now],
                )
                .await?;
            if let Some(row) = pending {
                return approval(&row);
            }
            let waiting: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM approvals
                     WHERE status = 'pending' AND agent = $1 AND expires > $2",
                    &[&request.agent, &request.created],
                )
                .await?
                .get(0);
            if u64::try_from(waiting).unwrap_or(u64::MAX) >= max_pending {
                return Err(TooManyPending {
                    agent: request.agent.clone(),
                    max: max_pending,
                }
                .into());
            }
            tx.execute(
                "INSERT INTO approvals (id, digest, agent, user_name, tool, tool_digest,
                 input_digest, input, reason, created, expires, status, session, delegation)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', $12, $13)",
                &[
                    &request.id,
                    &request.digest,
                    &request.agent,
                    &request.user,
                    &request.tool,
                    &request.tool_digest,
                    &request.input_digest,
                    &request.input.to_string(),
                    &request.reason,
                    &request.created,
                    &request.expires,
                    &request.session,
                    &request.delegation,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(request)
        })?;
        self.grew();
        Ok(stored)
    }

    fn approval(&self, id: &str) -> Result<Option<Approval>> {
        let id = id.to_string();
        let row = self.statement(move |c| async move {
            Ok(
                c.query_opt(&format!("{APPROVAL_COLUMNS} WHERE id = $1"), &[&id])
                    .await?,
            )
        })?;
        row.as_ref().map(approval).transpose()
    }

    fn approvals(&self, all: bool) -> Result<Vec<Approval>> {
        let filter = if all { "" } else { "WHERE status = 'pending'" };
        let query = format!("{APPROVAL_COLUMNS} {filter} ORDER BY created DESC");
        let rows = self.statement(async move |c| Ok(c.query(&query, &[]).await?))?;
        rows.iter().map(approval).collect()
    }

    fn decided_approvals(&self, limit: u32) -> Result<Vec<Approval>> {
        let query =
            format!("{APPROVAL_COLUMNS} WHERE status != 'pending' ORDER BY created DESC LIMIT $1");
        let limit = i64::from(limit);
        let rows = self.statement(async move |c| Ok(c.query(&query, &[&limit]).await?))?;
        rows.iter().map(approval).collect()
    }

    fn decide_approval(&self, id: &str, decision: &ApprovalDecision) -> Result<bool> {
        let (status, approver, signature) = match decision {
            ApprovalDecision::Approved {
                approver,
                signature,
            } => (ApprovalStatus::Approved, approver, Some(signature.clone())),
            ApprovalDecision::Denied { by, signature } => {
                (ApprovalStatus::Denied, by, signature.clone())
            }
        };
        let (id, approver) = (id.to_string(), approver.clone());
        let changed = self.statement(move |c| async move {
            Ok(c.execute(
                "UPDATE approvals SET status = $2, approver = $3, signature = $4
                 WHERE id = $1 AND status = 'pending'",
                &[&id, &status.as_str(), &approver, &signature],
            )
            .await?)
        })?;
        Ok(changed == 1)
    }

    fn use_approval(&self, id: &str, call_id: &str) -> Result<bool> {
        // One statement: of nodes racing, the second re-reads the row after the first
        // commits and finds it `used`.
        let (id, call_id) = (id.to_string(), call_id.to_string());
        let changed = self.statement(move |c| async move {
            Ok(c.execute(
                "UPDATE approvals SET status = 'used', used_by = $2
                 WHERE id = $1 AND status = 'approved'",
                &[&id, &call_id],
            )
            .await?)
        })?;
        Ok(changed == 1)
    }

    fn revoke(&self, revocation: &Revocation, receivers: &[&str]) -> Result<bool> {
        checkable(&[(revocation.kind, &revocation.id)])?;
        let revocation = revocation.clone();
        let receivers: Vec<String> = receivers.iter().map(|r| r.to_string()).collect();
        self.statement(move |mut conn| async move {
            let tx = read_committed(&mut conn).await?;
            let inserted = tx
                .execute(
                    "INSERT INTO revocations (kind, id, at, reason) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[
                        &revocation.kind.as_str(),
                        &revocation.id,
                        &revocation.at,
                        &revocation.reason,
                    ],
                )
                .await?;
            if inserted == 1 {
                for receiver in &receivers {
                    tx.execute(
                        "INSERT INTO revocation_events (receiver, jti, kind, id)
                         VALUES ($1, $2, $3, $4)",
                        &[
                            receiver,
                            &super::event_jti(),
                            &revocation.kind.as_str(),
                            &revocation.id,
                        ],
                    )
                    .await?;
                }
            }
            // Delivered to every listening node when this commits, not before. An id too long
            // for a notification (8000 bytes) goes unannounced: checks ask the store anyway.
            let announcement = serde_json::json!({
                "kind": revocation.kind,
                "id": revocation.id,
            })
            .to_string();
            if announcement.len() < MAX_ANNOUNCEMENT {
                tx.execute(
                    "SELECT pg_notify($1, $2)",
                    &[&REVOCATIONS_CHANNEL, &announcement],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(inserted == 1)
        })
    }

    fn revoked(&self, ids: &[(RevocationKind, &str)]) -> Result<Option<Revocation>> {
        let (answer, answered) = Reply::to_thread();
        self.enqueue_check(ids, answer)?;
        answer_of(&answered)
    }

    fn revoked_in_task<'a>(
        &'a self,
        ids: &'a [(RevocationKind, &'a str)],
    ) -> BoxFuture<'a, Result<Option<Revocation>>> {
        let (answer, answered) = Reply::to_task();
        let queued = self.enqueue_check(ids, answer);
        Box::pin(async move {
            queued?;
            answer_in_task(answered).await
        })
    }

    fn revocations(&self) -> Result<Vec<Revocation>> {
        let rows = self.statement(|c| async move {
            Ok(c.query(
                "SELECT kind, id, at, reason FROM revocations ORDER BY at, kind, id",
                &[],
            )
            .await?)
        })?;
        rows.iter().map(revocation).collect()
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
        let receivers: Vec<String> = receivers.iter().map(|r| r.to_string()).collect();
        let (held_until, limit) = (now_ms.saturating_add(hold_ms), limit as i64);
        // One statement: the rows are locked first (rows another node is claiming now are
        // skipped, not waited for), then held.
        let rows = self.statement(move |c| async move {
            Ok(c.query(
                "WITH picked AS (
                     SELECT seq FROM revocation_events
                     WHERE delivered IS NULL AND next_attempt <= $1 AND held_until <= $1
                       AND receiver = ANY($3)
                     ORDER BY seq LIMIT $4 FOR UPDATE SKIP LOCKED),
                 claimed AS (
                     UPDATE revocation_events e SET held_until = $2 FROM picked
                     WHERE e.seq = picked.seq
                     RETURNING e.seq, e.receiver, e.jti, e.kind, e.id, e.attempts)
                 SELECT r.kind, r.id, r.at, r.reason, c.seq, c.receiver, c.jti, c.attempts
                 FROM claimed c LEFT JOIN revocations r ON r.kind = c.kind AND r.id = c.id
                 ORDER BY c.seq",
                &[&now_ms, &held_until, &receivers, &limit],
            )
            .await?)
        })?;
        let mut events = Vec::with_capacity(rows.len());
        let mut unreadable = vec![];
        for row in &rows {
            let seq: i64 = row.try_get(4)?;
            let read = || -> Result<RevocationEvent> {
                Ok(RevocationEvent {
                    seq,
                    receiver: row.try_get(5)?,
                    jti: row.try_get(6)?,
                    attempts: u32::try_from(row.try_get::<_, i32>(7)?)?,
                    held_until,
                    revocation: revocation(row)?,
                })
            };
            match read() {
                Ok(event) => events.push(event),
                Err(_) => unreadable.push(seq),
            }
        }
        if !unreadable.is_empty() {
            let later = now_ms + UNREADABLE_EVENT_DELAY_MS;
            self.statement(move |c| async move {
                c.execute(
                    "UPDATE revocation_events SET next_attempt = $2, held_until = 0,
                     last_error = 'this version of Warden cannot read it' WHERE seq = ANY($1)",
                    &[&unreadable, &later],
                )
                .await?;
                Ok(())
            })?;
        }
        Ok(events)
    }

    fn event_attempted(&self, event: &RevocationEvent, attempt: &Attempt) -> Result<bool> {
        let (delivered, next_attempt, error) = attempt.columns();
        let error = error.map(str::to_owned);
        let (seq, held_until) = (event.seq, event.held_until);
        let changed = self.statement(move |c| async move {
            Ok(c.execute(
                "UPDATE revocation_events SET attempts = attempts + 1, delivered = $3,
                 next_attempt = $4, last_error = $5, held_until = 0
                 WHERE seq = $1 AND held_until = $2 AND delivered IS NULL",
                &[&seq, &held_until, &delivered, &next_attempt, &error],
            )
            .await?)
        })?;
        Ok(changed == 1)
    }

    fn pending_events(&self, receivers: &[&str]) -> Result<u64> {
        let receivers: Vec<String> = receivers.iter().map(|r| r.to_string()).collect();
        let row = self.statement(move |c| async move {
            Ok(c.query_one(
                "SELECT count(*) FROM revocation_events
                 WHERE delivered IS NULL AND receiver = ANY($1)",
                &[&receivers],
            )
            .await?)
        })?;
        Ok(row.try_get::<_, i64>(0)?.max(0) as u64)
    }

    fn on_revocation(&self, watcher: RevocationWatcher) {
        self.watchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(watcher);
        self.listening.call_once(|| {
            self.handle
                .spawn(listen(self.pool.config.clone(), self.watchers.clone()));
        });
    }
}

const REVOKED: &str = "SELECT kind, id, at, reason FROM revocations
    WHERE (kind, id) IN (SELECT * FROM unnest($1::TEXT[], $2::TEXT[])) ORDER BY at";
const USE_NONCE: &str =
    "INSERT INTO nonces (nonce, expires) VALUES ($1, $2) ON CONFLICT DO NOTHING";

/// Serialises writers of `what` for `agent` until the transaction ends.
async fn lock_agent(tx: &impl GenericClient, what: &str, agent: &str) -> Result<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&format!("{what}:{agent}")],
    )
    .await?;
    Ok(())
}

/// Listens for revocations on a connection of its own, reconnecting (after a second) when
/// it breaks, and tells the watchers of each.
async fn listen(config: Config, watchers: Arc<Mutex<Vec<RevocationWatcher>>>) {
    // Unix seconds from which revocations may have gone unheard: set when a listening
    // connection is lost, kept through failed reconnections, cleared once caught up.
    let mut unheard_since = None;
    loop {
        let mut connected = false;
        if let Err(e) = listen_once(&config, &watchers, unheard_since, &mut connected).await {
            tracing::warn!(error = %format!("{e:#}"), "listening for revocations: reconnecting");
        }
        if connected {
            // Revocations carry their maker's clock: a margin for nodes' clocks disagreeing.
            unheard_since = Some(crate::identity::jwt::now() - CLOCK_MARGIN);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How far nodes' clocks may disagree, for catching up on revocations after a reconnect
/// (telling a watcher twice costs nothing: what it drops is dropped once).
const CLOCK_MARGIN: i64 = 300;

/// Listens on one connection until it breaks. Once it listens, it first tells the watchers of
/// the revocations made since `unheard_since` (those a lost connection may have missed).
async fn listen_once(
    config: &Config,
    watchers: &Arc<Mutex<Vec<RevocationWatcher>>>,
    unheard_since: Option<i64>,
    connected: &mut bool,
) -> Result<()> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (messages, mut received) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
            match message {
                Some(Ok(message)) => {
                    if messages.send(Ok(message)).is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    let _ = messages.send(Err(e));
                    return;
                }
                None => return,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {REVOCATIONS_CHANNEL}"))
        .await?;
    if let Some(since) = unheard_since {
        let missed = client
            .query(
                "SELECT kind, id, at, reason FROM revocations WHERE at >= $1",
                &[&since],
            )
            .await?;
        // A row that does not parse is skipped, not retried forever: checks read it anyway.
        let missed: Vec<Revocation> = missed
            .iter()
            .filter_map(|row| {
                revocation(row)
                    .inspect_err(
                        |e| tracing::warn!(error = %format!("{e:#}"), "an unreadable revocation"),
                    )
                    .ok()
            })
            .collect();
        if !missed.is_empty() {
            tracing::info!(count = missed.len(), "revocations made while not listening");
            tell(watchers, missed);
        }
    }
    // Caught up: from now on, what this connection misses is what it hears.
    *connected = true;
    while let Some(message) = received.recv().await {
        let tokio_postgres::AsyncMessage::Notification(note) = message? else {
            continue;
        };
        let Ok(announced) = serde_json::from_str::<Announced>(note.payload()) else {
            continue;
        };
        tell(
            watchers,
            vec![Revocation {
                kind: announced.kind,
                id: announced.id,
                at: crate::identity::jwt::now(),
                reason: String::new(),
            }],
        );
    }
    driver.abort();
    bail!("the connection ended")
}

/// Tells every watcher of `revocations`, off the store's thread (a watcher may take locks
/// and delete files).
fn tell(watchers: &Arc<Mutex<Vec<RevocationWatcher>>>, revocations: Vec<Revocation>) {
    let watchers = watchers.clone();
    tokio::task::spawn_blocking(move || {
        let watchers = watchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for revocation in &revocations {
            for watcher in watchers.iter() {
                watcher(revocation);
            }
        }
    });
}

#[derive(Deserialize)]
struct Announced {
    kind: RevocationKind,
    id: String,
}

fn audit_link(row: &Row) -> Result<AuditLink> {
    Ok(AuditLink {
        seq: u64::try_from(row.try_get::<_, i64>(0)?)?,
        call_id: row.try_get(1)?,
        body: row.try_get(2)?,
        prev_hash: row.try_get(3)?,
        hash: row.try_get(4)?,
    })
}

const APPROVAL_COLUMNS: &str = "SELECT id, digest, agent, user_name, tool, tool_digest,
    input_digest, input, reason, created, expires, status, approver, signature, used_by,
    session, delegation FROM approvals";

fn approval(row: &Row) -> Result<Approval> {
    let id: String = row.try_get(0)?;
    let (input, status) = approval_fields(&id, row.try_get(7)?, row.try_get(11)?)?;
    Ok(Approval {
        id,
        digest: row.try_get(1)?,
        agent: row.try_get(2)?,
        user: row.try_get(3)?,
        tool: row.try_get(4)?,
        tool_digest: row.try_get(5)?,
        input_digest: row.try_get(6)?,
        input,
        reason: row.try_get(8)?,
        created: row.try_get(9)?,
        expires: row.try_get(10)?,
        status,
        approver: row.try_get(12)?,
        signature: row.try_get(13)?,
        used_by: row.try_get(14)?,
        session: row.try_get(15)?,
        delegation: row.try_get(16)?,
    })
}

fn revocation(row: &Row) -> Result<Revocation> {
    Ok(Revocation {
        kind: revocation_kind(row.try_get(0)?)?,
        id: row.try_get(1)?,
        at: row.try_get(2)?,
        reason: row.try_get(3)?,
    })
}

/// Settings for a schema of the tests' local server.
#[cfg(test)]
impl PostgresSettings {
    pub(crate) fn of_test_schema(
        schema: &warden_test_support::postgres::Schema,
        connections: usize,
    ) -> PostgresSettings {
        PostgresSettings {
            url: schema.url.clone(),
            password: Some(crate::credentials::Secret::new(schema.password.clone())),
            connections,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_is_versioned_and_a_newer_one_is_refused() {
        let Some(server) = warden_test_support::postgres::postgres() else {
            return;
        };
        let schema = server.schema();
        let settings = PostgresSettings::of_test_schema(&schema, 2);
        let store = PostgresStore::open(&settings).unwrap();
        // Opening again applies nothing twice.
        drop(PostgresStore::open(&settings).unwrap());
        let version = |store: &PostgresStore| {
            store
                .statement(|c| async move {
                    Ok(c.query_one("SELECT version FROM warden_schema", &[])
                        .await?
                        .get::<_, i32>(0))
                })
                .unwrap()
        };
        assert_eq!(version(&store) as usize, MIGRATIONS.len());
        store
            .statement(|c| async move {
                Ok(c.execute("UPDATE warden_schema SET version = 99", &[])
                    .await?)
            })
            .unwrap();
        let e = PostgresStore::open(&settings).err().unwrap();
        assert!(format!("{e:#}").contains("schema version 99"), "{e:#}");
    }

    /// A node whose last records are lost (a failover to a replica that lacked them, a
    /// restore) links its next ones to the chain as it is, not to the head it remembers.
    #[test]
    fn a_node_whose_last_records_were_lost_links_to_the_chain_as_it_is() {
        let Some(server) = warden_test_support::postgres::postgres() else {
            return;
        };
        let schema = server.schema();
        let settings = PostgresSettings::of_test_schema(&schema, 2);
        let store = PostgresStore::open(&settings).unwrap();
        let entry = |call: &str| AuditEntry {
            call_id: call.into(),
            body: format!("{{\"call\":\"{call}\"}}"),
        };
        // Twice alone: the third batch links to the head this node left without reading it.
        for call in ["c1", "c2", "c3"] {
            store.append_audit(&[entry(call)]).unwrap();
        }
        store
            .statement(
                |c| async move { Ok(c.execute("DELETE FROM audit WHERE seq = 3", &[]).await?) },
            )
            .unwrap();
        store.append_audit(&[entry("c4")]).unwrap();
        let chain = super::super::conformance::whole_chain(&store);
        let calls: Vec<&str> = chain.iter().map(|l| l.call_id.as_str()).collect();
        assert_eq!(calls, ["c1", "c2", "c4"]);
    }

    /// A revocation made through one store is announced to the watchers of another.
    #[test]
    fn revocations_are_announced_to_other_nodes() {
        let Some(server) = warden_test_support::postgres::postgres() else {
            return;
        };
        let schema = server.schema();
        let settings = PostgresSettings::of_test_schema(&schema, 2);
        let (one, other) = (
            PostgresStore::open(&settings).unwrap(),
            PostgresStore::open(&settings).unwrap(),
        );
        let (heard, hear) = std::sync::mpsc::channel();
        let heard = Mutex::new(heard);
        let id = format!("sha256:{}", schema.name);
        let ours = id.clone();
        // Other tests revoke on the same database meanwhile: only this one's is listened for.
        one.on_revocation(Box::new(move |revoked| {
            if revoked.id == ours {
                let _ = heard
                    .lock()
                    .unwrap()
                    .send((revoked.kind, revoked.id.clone()));
            }
        }));
        // The listener subscribes in the background: revoke until it hears.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            other
                .revoke(
                    &Revocation {
                        kind: RevocationKind::Tool,
                        id: id.clone(),
                        at: 1,
                        reason: String::new(),
                    },
                    &[],
                )
                .unwrap();
            if let Ok(said) = hear.recv_timeout(Duration::from_millis(200)) {
                assert_eq!(said, (RevocationKind::Tool, id));
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never announced");
        }
    }

    #[test]
    fn a_url_with_a_password_or_without_a_database_is_refused_without_being_repeated() {
        for (url, says) in [
            ("postgres://warden:hunter2@db/warden", "carries a password"),
            ("postgres://warden@db", "names no database"),
            ("mysql://warden@db/warden", "must start with postgres://"),
            (
                "postgres://warden@db:notaport/x",
                "not a PostgreSQL connection URL",
            ),
        ] {
            let e = parse_state_url(url).err().unwrap();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("hunter2") && !e.contains("db"), "{e}");
        }
        assert!(parse_state_url("postgres://warden@127.0.0.1:5432/warden").is_ok());
    }
}
