//! The library as an orchestrator uses it: a runtime built on a state store of the caller's
//! choosing, and a store that fails is Warden's failure (internal), never a denial.

use crate::common::*;
use serde_json::json;
use std::sync::Arc;
use warden::call::Caller;
use warden::identity::assertion;
use warden::state::*;
use warden::{Deployment, ErrorKind, Runtime, Secret};

/// The fixture's SQLite store, with one kind of read made to fail.
struct Failing {
    inner: Arc<dyn StateStore>,
    nonces: bool,
    revocations: bool,
}

fn broken() -> anyhow::Error {
    anyhow::anyhow!("the store is unreachable (test)")
}

impl StateStore for Failing {
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
    fn decide_approval(&self, id: &str, decision: &ApprovalDecision) -> anyhow::Result<bool> {
        self.inner.decide_approval(id, decision)
    }
    fn use_approval(&self, id: &str, call_id: &str) -> anyhow::Result<bool> {
        self.inner.use_approval(id, call_id)
    }
    fn revoke(&self, revocation: &Revocation) -> anyhow::Result<bool> {
        self.inner.revoke(revocation)
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
}

fn runtime_on(f: &Fixture, nonces: bool, revocations: bool) -> Runtime {
    let deployment = Deployment::load(&f.config()).unwrap();
    let store = Failing {
        inner: sqlite::open(&deployment.state_dir).unwrap(),
        nonces,
        revocations,
    };
    Runtime::builder(deployment)
        .state_store(Arc::new(store))
        .build()
        .unwrap()
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
