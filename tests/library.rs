//! The library as an orchestrator uses it: a runtime built on a state store of the caller's
//! choosing, and a store that fails is Warden's failure (internal), never a denial.

use crate::common::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use warden::call::Caller;
use warden::identity::assertion;
use warden::state::*;
use warden::{Deployment, ErrorKind, Runtime, Secret};

/// The fixture's SQLite store, with one kind of read made to fail.
struct Failing {
    inner: Arc<dyn StateStore>,
    nonces: bool,
    revocations: bool,
    /// Set: it fails pings (a server's readiness); switched while it runs.
    down: Arc<AtomicBool>,
}

fn broken() -> anyhow::Error {
    anyhow::anyhow!("the store is unreachable (test)")
}

impl StateStore for Failing {
    fn ping(&self) -> anyhow::Result<()> {
        match self.down.load(Ordering::SeqCst) {
            true => Err(broken()),
            false => self.inner.ping(),
        }
    }
    fn use_nonce(&self, nonce: &str, expires: i64) -> anyhow::Result<bool> {
        if self.nonces {
            return Err(broken());
        }
        self.inner.use_nonce(nonce, expires)
    }
    fn start_session(&self, session: &Session) -> anyhow::Result<()> {
        self.inner.start_session(session)
    }
    fn session(&self, id: &str) -> anyhow::Result<Option<Session>> {
        self.inner.session(id)
    }
    fn taint(&self, session: &str, reason: &str) -> anyhow::Result<()> {
        self.inner.taint(session, reason)
    }
    fn record_call(
        &self,
        agent: &str,
        session: Option<&str>,
        now_ms: i64,
        start: &mut dyn FnMut(CallCounts) -> anyhow::Result<Vec<AuditEntry>>,
    ) -> anyhow::Result<CallCounts> {
        self.inner.record_call(agent, session, now_ms, start)
    }
    fn recent_calls(&self, agent: &str, now_ms: i64) -> anyhow::Result<u64> {
        self.inner.recent_calls(agent, now_ms)
    }
    fn append_audit(&self, entries: &[AuditEntry]) -> anyhow::Result<()> {
        self.inner.append_audit(entries)
    }
    fn audit_records(&self, after: u64, limit: usize) -> anyhow::Result<Vec<AuditLink>> {
        self.inner.audit_records(after, limit)
    }
    fn audit_of_call(&self, call_id: &str) -> anyhow::Result<Vec<AuditLink>> {
        self.inner.audit_of_call(call_id)
    }
    fn audit_tail(&self, count: usize) -> anyhow::Result<Vec<AuditLink>> {
        self.inner.audit_tail(count)
    }
    fn request_approval(&self, request: &Approval, max: u64) -> anyhow::Result<Approval> {
        self.inner.request_approval(request, max)
    }
    fn approval(&self, id: &str) -> anyhow::Result<Option<Approval>> {
        self.inner.approval(id)
    }
    fn approvals(&self, all: bool) -> anyhow::Result<Vec<Approval>> {
        self.inner.approvals(all)
    }
    fn decided_approvals(&self, limit: u32) -> anyhow::Result<Vec<Approval>> {
        self.inner.decided_approvals(limit)
    }
    fn decide_approval(&self, id: &str, decision: &ApprovalDecision) -> anyhow::Result<bool> {
        self.inner.decide_approval(id, decision)
    }
    fn use_approval(&self, id: &str, call_id: &str) -> anyhow::Result<bool> {
        self.inner.use_approval(id, call_id)
    }
    fn revoke(&self, revocation: &Revocation, receivers: &[&str]) -> anyhow::Result<bool> {
        self.inner.revoke(revocation, receivers)
    }
    fn revoked(&self, ids: &[(RevocationKind, &str)]) -> anyhow::Result<Option<Revocation>> {
        if self.revocations {
            return Err(broken());
        }
        self.inner.revoked(ids)
    }
    fn revocations(&self) -> anyhow::Result<Vec<Revocation>> {
        self.inner.revocations()
    }
    fn claim_events(
        &self,
        receivers: &[&str],
        now_ms: i64,
        hold_ms: i64,
        limit: usize,
    ) -> anyhow::Result<Vec<RevocationEvent>> {
        self.inner.claim_events(receivers, now_ms, hold_ms, limit)
    }
    fn event_attempted(&self, event: &RevocationEvent, attempt: &Attempt) -> anyhow::Result<bool> {
        self.inner.event_attempted(event, attempt)
    }
    fn pending_events(&self, receivers: &[&str]) -> anyhow::Result<u64> {
        self.inner.pending_events(receivers)
    }
}

fn runtime_on(f: &Fixture, nonces: bool, revocations: bool) -> Runtime {
    runtime_with(f, nonces, revocations, Arc::default())
}

fn runtime_with(f: &Fixture, nonces: bool, revocations: bool, down: Arc<AtomicBool>) -> Runtime {
    let deployment = Deployment::load(&f.config()).unwrap();
    let store = Failing {
        inner: sqlite::open(&deployment.state_dir).unwrap(),
        nonces,
        revocations,
        down,
    };
    Runtime::builder(deployment)
        .state_store(Arc::new(store))
        .build()
        .unwrap()
}

/// A plain HTTP GET on loopback: the status code and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_is_ready_while_its_store_answers_and_stops_when_told() {
    let f = Fixture::new();
    let down = Arc::new(AtomicBool::new(false));
    let runtime = Arc::new(runtime_with(&f, false, false, down.clone()));
    let (tell, stopped) = tokio::sync::oneshot::channel::<()>();
    let (bound_tx, bound) = tokio::sync::oneshot::channel();
    let stop = warden_server::http::Stop {
        shutdown: async move {
            let _ = stopped.await;
        },
        drain: std::time::Duration::from_secs(5),
    };
    let addr = "127.0.0.1:0".parse().unwrap();
    let server = tokio::spawn(warden_server::http::serve(runtime, addr, stop, move |a| {
        let _ = bound_tx.send(a.mcp);
    }));
    let addr = bound.await.unwrap();

    // Readiness is asked of the store at most every 250 ms: wait for the answer to change.
    let readiness = |expected: u16| async move {
        for _ in 0..100 {
            let (status, body) = get(addr, "/readyz").await;
            if status == expected {
                return body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("/readyz never answered {expected}");
    };
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(readiness(200).await, r#"{"status":"ready"}"#);
    // The store stops answering: not ready, still live; the reason names no address.
    down.store(true, Ordering::SeqCst);
    let body = readiness(503).await;
    assert!(!body.contains("unreachable (test)"), "{body}");
    assert_eq!(get(addr, "/healthz").await.0, 200);
    // It answers again: ready again.
    down.store(false, Ordering::SeqCst);
    readiness(200).await;
    // The probes need no assertion; MCP still does.
    assert_eq!(get(addr, "/mcp").await.0, 401);

    // Told to stop: it returns.
    tell.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_runtime_uses_the_store_it_is_given() {
    let f = Fixture::new();
    let runtime = runtime_on(&f, false, false);
    let report = runtime
        .call(request(AGENT, "hello", json!({ "name": "Ada" }), None))
        .await;
    assert!(report.record.error.is_none(), "{:?}", report.record.error);
    // The call is on the store's chain.
    let store = sqlite::open(&f.path().join("state")).unwrap();
    assert!(
        !store
            .audit_of_call(&report.record.call_id)
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_failing_store_is_an_internal_error_never_a_denial() {
    let f = Fixture::new();
    // Authentication records the assertion's nonce.
    let runtime = runtime_on(&f, true, false);
    let report = runtime
        .call(request(AGENT, "hello", json!({ "name": "Ada" }), None))
        .await;
    let error = report.record.error.as_ref().unwrap();
    assert_eq!(error.kind, ErrorKind::Internal, "{error:?}");
    assert_eq!(report.exit_code(), 1);
    let proof = assertion::sign_session(&agent_key(AGENT), AGENT);
    match runtime.authenticate(&Secret::new(proof)) {
        Err(warden::Error::Internal(_)) => {}
        other => panic!("authentication with a failing store: {other:?}"),
    }
    // Revocations are checked before anything of the tool runs.
    let runtime = runtime_on(&f, false, true);
    let proof = assertion::sign_session(&agent_key(AGENT), AGENT);
    let agent = runtime.authenticate(&Secret::new(proof)).unwrap();
    let call = warden::CallRequest::new(
        "hello",
        json!({ "name": "Ada" }),
        Caller::Authenticated(agent),
    );
    let report = runtime.call(call).await;
    let error = report.record.error.as_ref().unwrap();
    assert_eq!(error.kind, ErrorKind::Internal, "{error:?}");
    assert_eq!(report.output, None);
}

#[test]
fn refusals_are_told_apart_from_failures() {
    let f = Fixture::new();
    let runtime = f.runtime();
    let forged = assertion::sign_session(&agent_key("nobody"), AGENT);
    match runtime.authenticate(&Secret::new(forged)) {
        Err(warden::Error::Refused(reason)) => assert!(reason.contains("tester"), "{reason}"),
        other => panic!("a forged assertion: {other:?}"),
    }
}

/// A reload that changes an agent's key ends what the agent authenticated with the old one: its
/// next call is refused, saying why; proven again with the new key, it calls. A tool loaded
/// before the reload is loaded again after it.
#[tokio::test]
async fn a_reload_that_changes_an_agents_key_ends_its_authentication() {
    let f = Fixture::new();
    let runtime = f.runtime();
    let hello = |agent| {
        warden::CallRequest::new(
            "hello",
            json!({ "name": "Ada" }),
            Caller::Authenticated(agent),
        )
    };
    let proof = assertion::sign_session(&agent_key(AGENT), AGENT);
    let agent = runtime.authenticate(&Secret::new(proof)).unwrap();
    assert_eq!(
        runtime
            .call(hello(agent.clone()))
            .await
            .record
            .error
            .map(|e| e.kind),
        None
    );
    assert_eq!(runtime.warm_tools(), 1);

    let new_key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let old = warden::identity::keys::format_public(&agent_key(AGENT).verifying_key());
    let new = warden::identity::keys::format_public(&new_key.verifying_key());
    edit(&f.config(), |t| t.replace(&old, &new));
    let reloaded = runtime.reload().unwrap();
    assert!(
        reloaded.applied && reloaded.deployment_changed,
        "{reloaded:?}"
    );
    assert_eq!(reloaded.tools_dropped, ["hello"]);
    assert_eq!(runtime.warm_tools(), 0);

    let refused = runtime.call(hello(agent)).await;
    let error = refused.record.error.unwrap();
    assert_eq!(error.kind, ErrorKind::Denied);
    assert!(
        error.message.contains("no longer in the deployment"),
        "{}",
        error.message
    );
    let old_proof = assertion::sign_session(&agent_key(AGENT), AGENT);
    assert!(runtime.authenticate(&Secret::new(old_proof)).is_err());
    let proof = assertion::sign_session(&new_key, AGENT);
    let agent = runtime.authenticate(&Secret::new(proof)).unwrap();
    assert_eq!(
        runtime
            .call(hello(agent))
            .await
            .record
            .error
            .map(|e| e.kind),
        None
    );
}
