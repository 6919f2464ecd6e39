//! Revocation reaches every cache: the revocation drill in one process and across processes,
//! CLI calls refused after a CLI revocation, credentials revoked by name and by token id, and
//! introspection.

use crate::common::*;
use serde_json::json;
use warden::state::RevocationKind;
use warden_cli::drill::revocation::{self as drill, Revoker};
use warden_test_support::loopback::LoopbackServer;

fn assert_all_pass(rows: &[drill::Row]) {
    let kinds: Vec<RevocationKind> = rows.iter().map(|r| r.kind).collect();
    for kind in RevocationKind::ALL {
        assert!(kinds.contains(&kind), "no row for {kind:?}: {rows:?}");
    }
    assert!(rows.iter().all(|r| r.passed), "{}", drill::table(rows));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_drill_passes_in_one_process() {
    let f = Fixture::new();
    let deployment = warden::Deployment::load(&f.config()).unwrap();
    let rows = drill::run(&deployment, Revoker::Runtime).await.unwrap();
    assert_all_pass(&rows);
    // The drill's calls went into the deployment's own audit chain.
    let out = f.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("(9 calls)"), "{}", stdout(&out));
}

#[test]
fn the_drill_passes_across_processes() {
    let f = Fixture::new();
    let out = f.run(&["drill", "revocation", "--json"]);
    assert_exit(&out, 0);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r["passed"] == true), "{rows:?}");
    // And the table form says so per row.
    let table = stdout(&f.run(&["drill", "revocation"]));
    assert_eq!(table.matches(" pass").count(), 5, "{table}");
}

#[test]
fn a_revocation_by_one_process_refuses_the_next_call_of_another() {
    let f = Fixture::new();
    let hello = |extra: &[&str]| f.call_cli("hello", r#"{"name":"x"}"#, extra);
    assert_eq!(hello(&[]).status.code(), Some(0));

    // A session.
    let session = stdout(&f.run(&["session", "start", "--agent", AGENT]))
        .trim()
        .to_string();
    assert_eq!(hello(&["--session", &session]).status.code(), Some(0));
    let revoked = f.run(&["revoke", "session", &session, "--reason", "leaked"]);
    assert_eq!(revoked.status.code(), Some(0), "{}", stderr(&revoked));
    let out = hello(&["--session", &session]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("was revoked (leaked)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(hello(&[]).status.code(), Some(0), "only that session");

    // A tool, by name: its digest is revoked and its compiled form leaves the cache.
    let cache = f.path().join("state/cache");
    assert!(std::fs::read_dir(&cache).unwrap().count() > 0);
    let out = f.run(&["revoke", "tool", "hello"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("revoked tool sha256:"),
        "{}",
        stdout(&out)
    );
    let out = hello(&[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("tool `sha256:"), "{}", stderr(&out));
    let digest = stdout(&f.run(&["revocations"]));
    let hex = digest.split("sha256:").nth(1).unwrap()[..64].to_string();
    assert!(
        !std::fs::read_dir(&cache).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(&hex)),
        "the revoked component is still compiled in the cache"
    );

    // An agent.
    let out = f.call_cli("read-file", r#"{"path":"hello.txt"}"#, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(f.run(&["revoke", "agent", AGENT]).status.code(), Some(0));
    let out = f.call_cli("read-file", r#"{"path":"hello.txt"}"#, &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("agent `tester` was revoked"),
        "{}",
        stderr(&out)
    );

    // Bad input changes nothing.
    let out = f.run(&["revoke", "tool", "sha256:nothex"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = f.run(&["revoke", "planet", "x"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_revoked_by_token_id_or_by_name_and_introspection_agrees() {
    let server = LoopbackServer::start().await.unwrap();
    let f = Fixture::new();
    install_minted_http_get(&f, &server.url(""));
    let fetch = || async {
        call(
            &f.runtime(),
            "http-get",
            json!({ "url": server.url("/page") }),
        )
        .await
    };
    ok(&fetch().await);
    let token = tokens(&server).remove(0);
    let introspect = |token: &str| f.run(&["introspect", token]);

    let out = introspect(&token);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["active"], true);
    assert_eq!(answer["act"]["sub"], AGENT);
    let jti = answer["jti"].as_str().unwrap().to_string();

    assert_eq!(
        f.run(&["revoke", "credential", &jti]).status.code(),
        Some(0)
    );
    let out = introspect(&token);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out).trim(), r#"{"active":false}"#);
    // Tokens Warden did not mint, or that are not tokens, are inactive too.
    let forged = warden::identity::jwt::sign(&agent_key("bob"), None, &answer);
    for other in [forged.as_str(), "not-a-token"] {
        assert_eq!(introspect(other).status.code(), Some(3));
    }
    // The next call mints a fresh token: the revoked one stopped only its own call.
    ok(&fetch().await);

    // By name: no request carries the credential any more.
    assert_eq!(
        f.run(&["revoke", "credential", "upstream"]).status.code(),
        Some(0)
    );
    let before = server.received().len();
    let report = fetch().await;
    let record = &report.egress[0];
    assert_eq!(record.decision.as_str(), "deny");
    assert!(
        record
            .reason
            .as_deref()
            .unwrap()
            .contains("credential `upstream` was revoked"),
        "{record:?}"
    );
    assert_eq!(server.received().len(), before, "the request never left");
}

/// A token minted for a call of `http-get` by the tester on alice's behalf, in a session: the
/// fixture, the token and its introspection while nothing is revoked.
struct MintedInSession {
    f: Fixture,
    _server: LoopbackServer,
    token: String,
    session: String,
    answer: serde_json::Value,
}

async fn minted_in_a_session() -> MintedInSession {
    use warden::credentials::Secret;
    let server = LoopbackServer::start().await.unwrap();
    let f = Fixture::new();
    install_minted_http_get(&f, &server.url(""));
    let delegation = warden::identity::delegation::issue(
        &agent_key("alice"),
        "alice",
        AGENT,
        &["http-get".to_string()],
        std::time::Duration::from_secs(600),
    );
    let runtime = f.runtime();
    let session = runtime
        .start_session(AGENT, Some(&Secret::new(delegation.clone())))
        .unwrap()
        .id;
    let mut request = request(
        AGENT,
        "http-get",
        json!({ "url": server.url("/page") }),
        Some(&delegation),
    );
    request.session = Some(session.clone());
    ok(&runtime.call(request).await);
    let token = tokens(&server).remove(0);
    let out = f.run(&["introspect", &token]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["active"], true);
    MintedInSession {
        f,
        _server: server,
        token,
        session,
        answer,
    }
}

/// After `warden revoke <kind> <id>`, introspection says the token is inactive.
fn revoked_token_is_inactive(m: &MintedInSession, kind: &str, id: &str) {
    let out = m.f.run(&["revoke", kind, id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = m.f.run(&["introspect", &m.token]);
    assert_eq!(out.status.code(), Some(3), "{kind} {id}: {}", stdout(&out));
    assert_eq!(stdout(&out).trim(), r#"{"active":false}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn introspection_names_what_a_token_can_be_revoked_by() {
    let m = minted_in_a_session().await;
    let a = &m.answer;
    assert_eq!(a["credential"], "upstream");
    assert_eq!(a["session"], m.session.as_str());
    assert!(
        a["delegation"].as_str().is_some_and(|d| !d.is_empty()),
        "{a}"
    );
    assert!(
        a["tool_digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{a}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_whose_credential_is_revoked_by_name_is_inactive() {
    let m = minted_in_a_session().await;
    revoked_token_is_inactive(&m, "credential", "upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_whose_agent_is_revoked_is_inactive() {
    let m = minted_in_a_session().await;
    revoked_token_is_inactive(&m, "agent", AGENT);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_whose_delegation_is_revoked_is_inactive() {
    let m = minted_in_a_session().await;
    // The delegation's id, as `warden delegate` prints it and the call's record names it.
    let id = m.answer["delegation"].as_str().unwrap().to_string();
    revoked_token_is_inactive(&m, "delegation", &id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_whose_session_is_revoked_is_inactive() {
    let m = minted_in_a_session().await;
    revoked_token_is_inactive(&m, "session", &m.session);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_whose_tool_is_revoked_is_inactive() {
    let m = minted_in_a_session().await;
    revoked_token_is_inactive(&m, "tool", "http-get");
}
