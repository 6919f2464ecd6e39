//! Revocation reaches every cache: the revocation drill in one process and across processes,
//! CLI calls refused after a CLI revocation, credentials revoked by name and by token id, and
//! introspection.

use crate::common::*;
use serde_json::json;
use warden::state::RevocationKind;
use warden_cli::drill::revocation::{self as drill, Revoker};
use warden_test_support::loopback::LoopbackServer;

fn assert_all_pass(rows: &[drill::Row]) {
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    for kind in RevocationKind::ALL
        .map(RevocationKind::as_str)
        .iter()
        .chain(&["event"])
    {
        assert!(kinds.contains(kind), "no row for {kind}: {rows:?}");
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
    assert!(stdout(&out).contains("(11 calls)"), "{}", stdout(&out));
}

#[test]
fn the_drill_passes_across_processes() {
    let f = Fixture::new();
    let out = f.run(&["drill", "revocation", "--json"]);
    assert_exit(&out, 0);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rows.len(), 7);
    assert!(rows.iter().all(|r| r["passed"] == true), "{rows:?}");
    assert_eq!(rows[6]["kind"], "event");
    assert_eq!(rows[6]["next_request"], "acknowledged");
    // And the table form says so per row.
    let table = stdout(&f.run(&["drill", "revocation"]));
    assert_eq!(table.matches(" pass").count(), 7, "{table}");
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

/// A revocation reaches a downstream receiver as a Security Event Token: `warden revoke` tries
/// at once (the receiver is down: 503), a `warden serve` node retries with backoff until it is
/// acknowledged, every attempt is the same event, signed so that `warden jwks` verifies it,
/// with the claims a receiver checks; once acknowledged it is audited and never sent again.
#[tokio::test(flavor = "multi_thread")]
async fn revocation_events_reach_a_receiver_that_comes_back() {
    use warden::security_events::{self as events, SESSION_REVOKED};
    let receiver = LoopbackServer::start().await.unwrap();
    let down = warden_test_support::loopback::Reply {
        status: 503,
        headers: vec![],
        body: "down for maintenance".into(),
    };
    receiver.reply("/collect", down);
    let f = Fixture::new();
    let url = receiver.url("/collect/events");
    f.extend_deployment(&format!("[event_receivers.idp]\nurl = \"{url}\"\n"));

    let out = f.run(&["revoke", "agent", "rogue", "--reason", "leaked key"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("not yet told `idp` of agent rogue") && stdout(&out).contains("503"),
        "{}",
        stdout(&out)
    );
    assert_eq!(receiver.received().len(), 1);

    let mut cli = f.cli();
    cli.args(["serve", "--addr", "127.0.0.1:0"]);
    let node = Node::start(cli);
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let waited = std::time::Instant::now();
        while !done() {
            assert!(
                waited.elapsed().as_secs() < 30,
                "{what}: {:?}",
                receiver.received()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    wait_for("the node retries", &|| receiver.received().len() >= 2);
    let (_, metrics) = node.get("/metrics");
    assert!(
        metrics.contains("warden_revocation_events_pending 1"),
        "{metrics}"
    );
    receiver.clear_replies();
    let state = warden::state::open(&warden::Deployment::load(&f.config()).unwrap()).unwrap();
    wait_for("the event is acknowledged", &|| {
        state.pending_events(&["idp"]).unwrap() == 0
    });

    let attempts = receiver.received();
    let jwks = f.run(&["jwks"]);
    assert_exit(&jwks, 0);
    let keys =
        warden::identity::jwks::KeySet::from_json(&serde_json::from_slice(&jwks.stdout).unwrap())
            .unwrap();
    let mut jtis = vec![];
    for attempt in &attempts {
        assert_eq!(attempt.method, "POST");
        assert!(
            attempt
                .headers
                .iter()
                .any(|(k, v)| k == "content-type" && v == "application/secevent+jwt"),
            "{attempt:?}"
        );
        let token = std::str::from_utf8(&attempt.body).unwrap();
        let claims = events::verify(token, &keys, &url).unwrap();
        assert_eq!(claims.iss, "warden");
        assert_eq!(claims.sub_id.id, "agent:rogue");
        let event = &claims.events[SESSION_REVOKED];
        assert_eq!(event["reason_admin"]["en"], "leaked key");
        assert_eq!(event["warden"], json!({ "kind": "agent", "id": "rogue" }));
        assert!(event["event_timestamp"].as_i64().unwrap() > 1_700_000_000);
        jtis.push(claims.jti);
        // The signature covers the claims: one changed byte and it no longer verifies.
        let mut forged = token.to_string().into_bytes();
        let middle = token.find('.').unwrap() + 5;
        forged[middle] = if forged[middle] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(events::verify(&forged, &keys, &url).is_err());
    }
    jtis.dedup();
    assert_eq!(jtis.len(), 1, "every attempt is the same event");

    // Acknowledged once: no more attempts, and the audit keeps the delivery.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(receiver.received().len(), attempts.len());
    let tail = f.run(&["audit", "tail"]);
    assert!(
        stdout(&tail).contains("revocation of agent `rogue` told to `idp`"),
        "{}",
        stdout(&tail)
    );
    assert_exit(&f.run(&["audit", "verify"]), 0);
    let (_, metrics) = node.get("/metrics");
    assert!(
        metrics.contains("warden_revocation_event_deliveries_total{result=\"acknowledged\"} 1"),
        "{metrics}"
    );
}
