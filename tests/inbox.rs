//! The approval inbox in a real browser (headless Chromium): an approver signs in with their
//! key file, reads a held call and approves or denies it there; an MCP client that can open a
//! URL (the Python SDK, URL-mode elicitation) waits for that decision and gets the call's
//! result. What an attacker tries is refused: an agent's key, no or a forged sign-in, an
//! approval whose stored input was altered, a request from another origin or host.

use crate::common::*;
use crate::mcp::{assertion, client, fixture};
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use serde_json::{Value, json};

/// Whether headless Chromium and its driver are installed (`.ci/run` installs them).
fn browser() -> bool {
    installed(&["chromium", "chromedriver"], "an approval inbox test")
}

/// The MCP fixture (tester may invoke anything; deleting a note needs carol's approval) with
/// an inbox, served by `warden serve`.
fn serving() -> (Fixture, Node) {
    let f = fixture();
    std::fs::write(f.path().join("notes/b"), "b").unwrap();
    f.extend_deployment("[approvals.inbox]\nlisten = \"127.0.0.1:0\"\n");
    let mut cli = f.cli();
    cli.args(["serve", "--addr", "127.0.0.1:0", "--drain", "2s"]);
    let node = Node::start(cli);
    assert!(node.inbox.is_some(), "the node names no inbox");
    (f, node)
}

fn key(f: &Fixture, name: &str) -> String {
    f.key_file(name).to_str().unwrap().to_string()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh challenge from the inbox at `origin`.
fn challenge(origin: &str) -> String {
    let from = [("origin", origin)];
    let (status, _, body) = http_request(origin, "POST", "/api/challenge", &from, Some(&json!({})));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["challenge"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Signs in to the inbox at `origin` as the page does, with `challenge` signed by the key
/// named `name`: (status, answer).
fn sign_in_with(origin: &str, name: &str, challenge: &str) -> (u16, Value) {
    let key = agent_key(name);
    let signed = key.sign(format!("warden-inbox-sign-in-v1\n{challenge}\n{origin}").as_bytes());
    let answer = json!({
        "challenge": challenge,
        "public_key": warden::identity::keys::format_public(&key.verifying_key()),
        "signature": b64(&signed.to_bytes()),
    });
    let from = [("origin", origin)];
    let (status, _, body) = http_request(origin, "POST", "/api/sign-in", &from, Some(&answer));
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn sign_in(origin: &str, name: &str) -> (u16, Value) {
    sign_in_with(origin, name, &challenge(origin))
}

fn plan(f: &Fixture, node: &Node, decision: &str, screenshot: Option<&str>, steps: Value) -> Value {
    json!({
        "transport": "http",
        "url": node.url,
        "token": assertion(f, "tester"),
        "elicit": { "key": key(f, "carol"), "decision": decision, "screenshot": screenshot },
        "steps": steps,
    })
}

fn stored_approval(f: &Fixture, id: &str) -> warden::state::Approval {
    let deployment = warden::deployment::Deployment::load(&f.config()).unwrap();
    warden::state::open(&deployment)
        .unwrap()
        .approval(id)
        .unwrap()
        .unwrap()
}

#[test]
fn an_approver_approves_in_the_browser_and_the_held_mcp_call_completes_once() {
    if !browser() {
        return;
    }
    let (f, node) = serving();
    let origin = node.inbox.clone().unwrap();
    // WARDEN_INBOX_SCREENSHOT=path keeps a screenshot of the inbox with the call pending (the
    // README's).
    let screenshot = std::env::var("WARDEN_INBOX_SCREENSHOT").ok();
    let out = client(plan(
        &f,
        &node,
        "approve",
        screenshot.as_deref(),
        json!([
            { "op": "call", "tool": "delete-note", "arguments": { "name": "a" } },
            { "op": "inbox", "url": origin, "key": key(&f, "carol") },
        ]),
    ));
    let elicited = &out[0]["elicited"];
    assert!(elicited.is_object(), "no elicitation: {out:?}");
    let url = elicited["url"].as_str().unwrap();
    let id = url.rsplit_once("#approval=").unwrap().1.to_string();
    assert!(url.starts_with(&format!("{origin}/")), "{url}");
    // carol saw the exact call before deciding: who, which tool, the input, why it waits.
    let seen = &elicited["seen"];
    assert_eq!(seen["id"], id.as_str());
    assert!(
        seen["focused"].as_bool().unwrap(),
        "the linked approval is not the one shown"
    );
    assert!(
        seen["status"].as_str().unwrap().starts_with("pending"),
        "{seen}"
    );
    assert!(
        seen["input"].as_str().unwrap().contains(r#""name": "a""#),
        "{seen}"
    );
    let text = seen["text"].as_str().unwrap();
    assert!(
        text.contains("tester") && text.contains("delete-note"),
        "{text}"
    );
    assert!(
        text.contains("needs a human approval"),
        "the reasons are not shown: {text}"
    );
    assert!(text.contains("left"), "the time left is not shown: {text}");
    assert!(seen["verifiable"].as_bool().unwrap());
    assert!(
        seen["after"].as_str().unwrap().starts_with("approved"),
        "{seen}"
    );
    // The held call ran once approved, and its result is the call's answer.
    let call = &out[1];
    assert_eq!(call["is_error"], false, "{call}");
    assert!(
        !f.path().join("notes/a").exists(),
        "the note was not deleted"
    );
    // The approval was used by that call, and shows so.
    let stored = stored_approval(&f, &id);
    assert_eq!(stored.status, warden::state::ApprovalStatus::Used);
    assert_eq!(stored.approver.as_deref(), Some("carol"));
    assert_eq!(stored.used_by.as_deref(), call["call"].as_str());
    let shown = out[2]["cards"].as_array().unwrap();
    let card = shown.iter().find(|c| c["id"] == id.as_str()).unwrap();
    assert!(
        card["status"].as_str().unwrap().starts_with("used"),
        "{card}"
    );
    // The browser's signature is the one `warden approve` makes: the approval verifies as any.
    let deployment = warden::deployment::Deployment::load(&f.config()).unwrap();
    let mut as_approved = stored.clone();
    as_approved.status = warden::state::ApprovalStatus::Approved;
    warden::approval::check(&as_approved, &deployment, &stored.digest, 0).unwrap();
}

#[test]
fn denying_in_the_browser_ends_the_held_call_as_denied() {
    if !browser() {
        return;
    }
    let (f, node) = serving();
    let out = client(plan(
        &f,
        &node,
        "deny",
        None,
        json!([{ "op": "call", "tool": "delete-note", "arguments": { "name": "b" } }]),
    ));
    assert!(
        out[0]["elicited"]["seen"]["after"]
            .as_str()
            .unwrap()
            .starts_with("denied")
    );
    let call = &out[1];
    assert_eq!(call["is_error"], true, "{call}");
    assert!(
        call["text"].as_str().unwrap().contains("denied by `carol`"),
        "{call}"
    );
    assert!(f.path().join("notes/b").exists(), "a denied call ran");
}

#[test]
fn the_inbox_refuses_agents_forgeries_altered_approvals_and_other_origins() {
    if !browser() {
        return;
    }
    let (f, node) = serving();
    let origin = node.inbox.clone().unwrap();
    // A call held through the CLI; then its stored input is altered behind Warden's back.
    let out = f.call_cli(
        "delete-note",
        &json!({ "name": "a" }).to_string(),
        &["--json"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let id = serde_json::from_str::<Value>(&stdout(&out)).unwrap()["approval"]
        .as_str()
        .unwrap()
        .to_string();
    let db = rusqlite::Connection::open(f.path().join("state/warden.db")).unwrap();
    db.execute(
        "UPDATE approvals SET input = ?1 WHERE id = ?2",
        rusqlite::params![r#"{"name":"harmless"}"#, id],
    )
    .unwrap();

    // In the browser: carol sees it as not verifiable and cannot approve it; an agent's key
    // is refused at sign-in.
    let out = client(json!({
        "transport": "http", "url": node.url, "token": assertion(&f, "tester"),
        "steps": [
            { "op": "inbox", "url": origin, "key": key(&f, "carol") },
            { "op": "inbox", "url": origin, "key": key(&f, "tester") },
        ],
    }));
    let card = out[0]["cards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(card["verifiable"], false, "{card}");
    assert_eq!(card["approve_enabled"], false, "{card}");
    let refused = out[1]["sign_in_error"].as_str().unwrap();
    assert!(refused.contains("agent `tester`"), "{refused}");
    assert!(out[1]["cards"].as_array().unwrap().is_empty());

    // Without a sign-in, or with a made-up token: nothing is shown.
    for auth in [None, Some("Bearer made-up")] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let (status, _, body) = http_request(&origin, "GET", "/api/approvals", &headers, None);
        assert_eq!(status, 401, "{body}");
        assert!(!body.contains(&id) && !body.contains("harmless"), "{body}");
    }
    // A challenge signed by a key of no approver, or by an agent, opens nothing.
    let (status, answer) = sign_in(&origin, "mallory");
    assert_eq!(status, 401);
    assert!(
        answer["error"].as_str().unwrap().contains("no approver"),
        "{answer}"
    );
    let (status, answer) = sign_in(&origin, "tester");
    assert_eq!(status, 401);
    assert!(
        answer["error"].as_str().unwrap().contains("agent"),
        "{answer}"
    );

    // carol's real sign-in; its challenge, replayed, opens nothing more, nor one made up.
    let used = challenge(&origin);
    let (status, session) = sign_in_with(&origin, "carol", &used);
    assert_eq!(status, 200, "{session}");
    let (status, replayed) = sign_in_with(&origin, "carol", &used);
    assert_eq!(status, 401, "{replayed}");
    assert_eq!(sign_in_with(&origin, "carol", "made-up").0, 401);
    let token = format!("Bearer {}", session["token"].as_str().unwrap());
    let pending = stored_approval(&f, &id);
    let signature = b64(&agent_key("carol")
        .sign(&warden::approval::message(&pending))
        .to_bytes());
    let decide = json!({ "id": id, "decision": "approve", "signature": signature });
    let carol = [
        ("origin", origin.as_str()),
        ("authorization", token.as_str()),
    ];
    let (status, _, body) = http_request(&origin, "POST", "/api/decide", &carol, Some(&decide));
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("cannot be approved"), "{body}");
    assert_eq!(
        stored_approval(&f, &id).status,
        warden::state::ApprovalStatus::Pending
    );

    // Another held call: a deny's signature does not approve it, nor a signature by another
    // key; once denied, it cannot be decided again.
    let out = f.call_cli(
        "delete-note",
        &json!({ "name": "b" }).to_string(),
        &["--json"],
    );
    let other = serde_json::from_str::<Value>(&stdout(&out)).unwrap()["approval"]
        .as_str()
        .unwrap()
        .to_string();
    let held = stored_approval(&f, &other);
    let signed = |name: &str, message: Vec<u8>| b64(&agent_key(name).sign(&message).to_bytes());
    let deny_signature = signed("carol", warden::approval::deny_message(&held));
    let foreign = signed("mallory", warden::approval::message(&held));
    for signature in [&deny_signature, &foreign] {
        let approve = json!({ "id": other, "decision": "approve", "signature": signature });
        let (status, _, body) =
            http_request(&origin, "POST", "/api/decide", &carol, Some(&approve));
        assert_eq!(status, 400, "{body}");
    }
    let deny = json!({ "id": other, "decision": "deny", "signature": deny_signature });
    let (status, _, body) = http_request(&origin, "POST", "/api/decide", &carol, Some(&deny));
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = http_request(&origin, "POST", "/api/decide", &carol, Some(&deny));
    assert_eq!(status, 409, "{body}");
    let denied = stored_approval(&f, &other);
    assert_eq!(denied.status, warden::state::ApprovalStatus::Denied);
    assert_eq!(denied.signature.as_deref(), Some(deny_signature.as_str()));
    // The altered one may be denied, never approved.
    let deny = json!({ "id": id, "decision": "deny",
                       "signature": signed("carol", warden::approval::deny_message(&pending)) });
    let (status, _, body) = http_request(&origin, "POST", "/api/decide", &carol, Some(&deny));
    assert_eq!(status, 200, "{body}");

    // A state-changing request from another origin, or none, is refused; so is another host.
    for from in [vec![("origin", "http://evil.example")], vec![]] {
        let mut headers = from.clone();
        headers.push(("authorization", token.as_str()));
        let (status, _, body) =
            http_request(&origin, "POST", "/api/decide", &headers, Some(&decide));
        assert_eq!(status, 403, "{body}");
        let (status, _, _) =
            http_request(&origin, "POST", "/api/challenge", &from, Some(&json!({})));
        assert_eq!(status, 403);
    }
    let (status, _, _) = http_request(&origin, "GET", "/", &[("host", "evil.example")], None);
    assert_eq!(status, 421);

    // The page: no inline script, nothing from elsewhere, never framed.
    let (status, head, page) = http_request(&origin, "GET", "/", &[], None);
    assert_eq!(status, 200);
    for header in [
        "content-security-policy: default-src 'none'; script-src 'self'",
        "frame-ancestors 'none'",
        "x-frame-options: deny",
        "x-content-type-options: nosniff",
    ] {
        assert!(head.contains(header), "{header} missing: {head}");
    }
    let handlers = page
        .split_whitespace()
        .any(|w| w.starts_with("on") && w.contains('='));
    assert!(!page.contains("<script>") && !handlers, "{page}");
}

/// Waits (at most 30 s) until `server` has received `count` requests.
fn wait_received(server: &warden_test_support::loopback::LoopbackServer, count: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.received().len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "only {:?}",
            server.received()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_held_call_is_announced_once_to_the_webhook_retried_and_audited_without_secrets() {
    use warden_test_support::loopback::{LoopbackServer, Reply};
    let hook = LoopbackServer::start().await.unwrap();
    // A chat webhook's URL carries its token in the path.
    let secret_path = "/collect/hook/T0/s3cret-path-token";
    let f = fixture();
    std::fs::write(f.path().join("notes/b"), "b").unwrap();
    f.extend_deployment(&format!(
        "[approvals.inbox]\nlisten = \"127.0.0.1:0\"\n[approvals.notify]\nwebhook = \"{}\"\n",
        hook.url(secret_path)
    ));
    let mut cli = f.cli();
    cli.args(["serve", "--addr", "127.0.0.1:0", "--drain", "2s"]);
    let mut node = Node::start(cli);
    let origin = node.inbox.clone().unwrap();
    // The webhook fails at first: the announcement is tried again.
    hook.reply(
        "/collect/hook",
        Reply {
            status: 503,
            headers: vec![],
            body: "busy".into(),
        },
    );
    let call = |name: &str, times: usize| {
        let steps: Vec<Value> = (0..times)
            .map(|_| json!({ "op": "call", "tool": "delete-note", "arguments": { "name": name } }))
            .collect();
        let plan = json!({ "transport": "http", "url": node.url, "token": assertion(&f, "tester"), "steps": steps });
        let out = client(plan);
        out[0]["structured"]["approval"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // The same call held twice is one approval, announced once.
    let a = tokio::task::block_in_place(|| call("a", 2));
    tokio::task::block_in_place(|| wait_received(&hook, 1));
    hook.clear_replies();
    tokio::task::block_in_place(|| wait_received(&hook, 2));
    let b = tokio::task::block_in_place(|| call("b", 1));
    tokio::task::block_in_place(|| wait_received(&hook, 3));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let received = hook.received();
    assert_eq!(received.len(), 3, "{received:?}");
    let messages: Vec<Value> = received
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(messages[0], messages[1], "a retry is the same message");
    for (message, id) in [(&messages[1], &a), (&messages[2], &b)] {
        assert_eq!(message["approval"]["id"], id.as_str(), "{message}");
        assert_eq!(message["approval"]["tool"], "delete-note");
        assert_eq!(message["link"], format!("{origin}/#approval={id}").as_str());
        let text = message["text"].as_str().unwrap();
        assert!(
            text.contains("`tester`") && text.contains(id.as_str()),
            "{text}"
        );
        // The input is read in the inbox, never sent.
        assert!(
            message.get("input").is_none() && !message["approval"].to_string().contains("\"name\"")
        );
    }
    assert!(
        received
            .iter()
            .all(|r| r.method == "POST" && r.path == secret_path)
    );

    // Each announcement is in the audit, which shows the webhook without its token; so do
    // the node's logs.
    let tail = stdout(&f.run(&["audit", "tail", "-n", "50"]));
    let shown = format!("http://{}/…", hook.addr);
    assert!(
        tail.contains(&format!("approval {a} announced to {shown} (2 attempt(s))")),
        "{tail}"
    );
    assert!(
        tail.contains(&format!("approval {b} announced to {shown} (1 attempt(s))")),
        "{tail}"
    );
    assert_exit(&f.run(&["audit", "verify"]), 0);
    let _ = node.child.kill();
    let _ = node.child.wait();
    let said = node.said();
    for place in [&tail, &said] {
        assert!(
            !place.contains("s3cret-path-token"),
            "the webhook's token shows: {place}"
        );
    }
}
