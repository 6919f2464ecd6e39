//! Several `warden serve` nodes of one deployment on one PostgreSQL state (`[state] url`):
//! every control that holds across processes holds across nodes, driven by the official
//! Python MCP SDK. Each test has a schema of its own on the test server
//! (`warden_test_support::postgres`); without a server they are skipped loudly, and fail
//! under `CI=true`.

use crate::common::*;
use crate::mcp::{assertion, client, client_cmd, fixture, raw_status};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden::deployment::Deployment;
use warden_test_support::loopback::{Hold, LoopbackServer};

/// The MCP tests' deployment on a PostgreSQL state, and a second node's configuration beside
/// it (the same deployment with a state directory of its own).
struct Deployed {
    f: Fixture,
    /// Node B's `warden.toml`.
    other: PathBuf,
}

/// Puts `f`'s state on `url` (its password, if any, in an owner-only file).
fn state_on(f: &Fixture, url: &str, password: Option<&str>) {
    let mut state = format!("[state]\nurl = \"{url}\"\n");
    if let Some(password) = password {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(f.path().join("state-password"))
            .unwrap();
        std::io::Write::write_all(&mut file, password.as_bytes()).unwrap();
        state = format!(
            "[secrets.state-password]\nfile = \"state-password\"\n\n{state}password = \"state-password\"\n"
        );
    }
    f.extend_deployment(&state);
}

fn deployed() -> Option<Deployed> {
    let schema = warden_test_support::postgres::postgres()?.schema();
    let f = fixture();
    state_on(&f, &schema.url, Some(&schema.password));
    let other = f.path().join("node-b.toml");
    edit_to(&f.config(), &other, |t| {
        t.replace("state_dir = \"state\"", "state_dir = \"state-b\"")
    });
    Some(Deployed { f, other })
}

fn edit_to(from: &Path, to: &Path, change: impl FnOnce(String) -> String) {
    std::fs::write(to, change(std::fs::read_to_string(from).unwrap())).unwrap();
}

/// `warden --config CONFIG serve` on a free port.
fn serve(config: &Path) -> Node {
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_warden"));
    cli.arg("--config")
        .arg(config)
        .env_remove("WARDEN_LOG")
        .args(["serve", "--addr", "127.0.0.1:0", "--drain", "5s"]);
    Node::start(cli)
}

/// Waits until `node`'s readiness is `ready` (true: 200), at most a minute.
fn wait_ready(node: &Node, ready: bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while (node.status("/readyz") == 200) != ready {
        assert!(Instant::now() < deadline, "readiness never became {ready}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The hex digest `tools/TOOL/tool.toml` pins.
fn pinned_digest(f: &Fixture, tool: &str) -> String {
    let manifest =
        std::fs::read_to_string(f.path().join(format!("tools/{tool}/tool.toml"))).unwrap();
    manifest.split("sha256:").nth(1).unwrap()[..64].to_string()
}

/// Whether the compile cache of the node whose state directory is `state` holds `tool`.
fn compiled(f: &Fixture, state: &str, tool: &str) -> bool {
    let digest = pinned_digest(f, tool);
    std::fs::read_dir(f.path().join(state).join("cache"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(&digest))
}

/// Waits (at most 15 s) until that node has dropped `tool`'s compiled form.
fn wait_evicted(f: &Fixture, state: &str, tool: &str, failure: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while compiled(f, state, tool) {
        assert!(Instant::now() < deadline, "{failure}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn calls(url: &str, token: &str, tag: &str, count: usize) -> Value {
    let steps: Vec<Value> = (0..count)
        .map(|i| json!({ "op": "call", "tool": "hello", "arguments": { "name": format!("{tag}-{i}") } }))
        .collect();
    json!({ "transport": "http", "url": url, "token": token, "steps": steps })
}

/// Every call id on the deployment's chain, which must verify.
fn chained_calls(config: &Path) -> HashSet<String> {
    let store = warden::state::open(&Deployment::load(config).unwrap()).unwrap();
    assert!(
        warden::audit::verify(store.as_ref()).unwrap().is_ok(),
        "the chain is broken"
    );
    let mut calls = HashSet::new();
    let mut after = 0;
    loop {
        let page = store.audit_records(after, 1000).unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        calls.extend(page.into_iter().map(|link| link.call_id));
    }
    calls
}

#[test]
fn two_nodes_serve_a_thousand_calls_onto_one_chain() {
    let Some(d) = deployed() else { return };
    let (a, b) = (serve(&d.f.config()), serve(&d.other));
    let token_a = assertion(&d.f, AGENT);
    // An assertion is used once, on any node: A's, replayed to B, is refused.
    let first = client(calls(&a.url, &token_a, "first", 1));
    assert_eq!(first[0]["is_error"], false, "{first:?}");
    assert!(raw_status(&b.url, Some(&format!("Bearer {token_a}"))).contains("401"));
    let plan_a = calls(&a.url, &token_a, "a", 500);
    let plan_b = calls(&b.url, &assertion(&d.f, AGENT), "b", 500);
    let burst = Instant::now();
    let on_a = std::thread::spawn(move || client(plan_a));
    let on_b = std::thread::spawn(move || client(plan_b));
    let mut results = on_a.join().unwrap();
    results.extend(on_b.join().unwrap());
    assert_eq!(results.len(), 1000);
    let returned: HashSet<String> = results
        .iter()
        .map(|r| {
            assert_eq!(r["is_error"], false, "{r}");
            r["call"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(returned.len(), 1000, "every call has an id of its own");

    // One chain, with exactly these calls (and the first), verified by the CLI too.
    let chained = chained_calls(&d.f.config());
    assert_eq!(chained.len(), 1001);
    assert!(returned.is_subset(&chained));
    let out = d.f.run(&["audit", "verify"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("(1001 calls)"), "{}", stdout(&out));
    // Rate counts are shared: the agent's calls of both nodes are counted together.
    let store = warden::state::open(&Deployment::load(&d.other).unwrap()).unwrap();
    let counted = store
        .recent_calls(AGENT, warden::identity::jwt::now() * 1000 + 1000)
        .unwrap();
    // (Counts are of the last minute: a burst that took longer has had its start forgotten.)
    if burst.elapsed() < Duration::from_secs(50) {
        assert!(counted >= 1000, "{counted}");
    }
}

#[test]
fn an_approval_raced_from_both_nodes_runs_once() {
    let Some(d) = deployed() else { return };
    let (a, b) = (serve(&d.f.config()), serve(&d.other));
    let warden = env!("CARGO_BIN_EXE_warden");
    // Asked for on A, approved by a person.
    let asked = client(json!({
        "transport": "http", "url": a.url, "token": assertion(&d.f, AGENT),
        "steps": [
            { "op": "call", "tool": "delete-note", "arguments": { "name": "a" } },
            { "op": "run", "command": [warden, "--config", d.f.config(), "approve", "{approval}",
                                       "--key", d.f.key_file("carol")] },
        ],
    }));
    let approval = asked[0]["structured"]["approval"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(asked[1]["code"], 0, "{}", asked[1]);
    // The same call with it, in the session it was asked in (an approval is for that
    // session), from both nodes at once, three times each.
    let session = asked[0]["session"].as_str().unwrap().to_string();
    let racers: Vec<_> = [&a, &b, &a, &b, &a, &b]
        .into_iter()
        .map(|node| {
            let plan = json!({
                "transport": "http", "url": node.url, "token": assertion(&d.f, AGENT),
                "stateless": true,
                "steps": [{ "op": "call", "tool": "delete-note", "arguments": { "name": "a" },
                            "meta": { "warden/approval": approval, "warden/session": session } }],
            });
            std::thread::spawn(move || client(plan))
        })
        .collect();
    let results: Vec<Value> = racers.into_iter().flat_map(|r| r.join().unwrap()).collect();
    let ran: Vec<&Value> = results.iter().filter(|r| r["is_error"] == false).collect();
    assert_eq!(ran.len(), 1, "{results:?}");
    assert!(!d.f.path().join("notes/a").exists());
    for refused in results.iter().filter(|r| r["is_error"] == true) {
        assert!(
            refused["text"].as_str().unwrap().contains("used"),
            "{refused}"
        );
    }
    let store = warden::state::open(&Deployment::load(&d.f.config()).unwrap()).unwrap();
    let used = store.approval(&approval).unwrap().unwrap();
    assert_eq!(used.used_by.as_deref(), ran[0]["call"].as_str());
}

/// A tool on node B holds its first request at the upstream; the tool is revoked on node A;
/// B's next request is refused, and B drops the tool's warm forms on the announcement.
#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_on_one_node_stops_the_next_request_on_the_other() {
    let Some(d) = deployed() else { return };
    let (arrived, mut arrivals) = tokio::sync::mpsc::channel(1);
    let hold: Hold = Arc::new(move |_| {
        let arrived = arrived.clone();
        Box::pin(async move {
            let (release, released) = tokio::sync::oneshot::channel::<()>();
            if arrived.send(release).await.is_ok() {
                let _ = released.await;
            }
        })
    });
    let upstream = LoopbackServer::start_with(Some(hold)).await.unwrap();
    let origin = upstream.url("");
    d.f.install_tool(
        "hostile-http",
        Some(&loopback_rule(&origin, &["GET"], None)),
    );
    std::fs::write(
        d.f.path().join("policies/http.cedar"),
        r#"permit(principal == Agent::"tester", action == Action::"invoke", resource == Tool::"hostile-http");"#,
    )
    .unwrap();
    let b = serve(&d.other);
    let plan = json!({
        "transport": "http", "url": b.url, "token": assertion(&d.f, AGENT),
        "steps": [{ "op": "call", "tool": "hostile-http", "arguments": {
            "url": format!("{origin}/first/hold"), "then": [{ "url": format!("{origin}/after") }] } }],
    });
    let running = tokio::task::spawn_blocking(move || client(plan));
    let release = tokio::time::timeout(Duration::from_secs(60), arrivals.recv())
        .await
        .expect("the first request reached the upstream")
        .unwrap();
    assert!(
        compiled(&d.f, "state-b", "hostile-http"),
        "B keeps the tool compiled while it runs"
    );
    let out =
        d.f.run(&["revoke", "tool", "hostile-http", "--reason", "node test"]);
    assert_exit(&out, 0);
    // B drops the tool's compiled form when A announces the revocation, before any call or
    // request of B asks the store.
    wait_evicted(
        &d.f,
        "state-b",
        "hostile-http",
        "B kept the revoked tool's compiled form",
    );
    release.send(()).unwrap();
    let result = running.await.unwrap();
    assert!(
        !upstream.received().iter().any(|r| r.path == "/after"),
        "the request after the revocation reached the upstream: {result:?}"
    );
    let call = result[0]["call"].as_str().unwrap().to_string();
    let store = warden::state::open(&Deployment::load(&d.other).unwrap()).unwrap();
    let records: String = store
        .audit_of_call(&call)
        .unwrap()
        .into_iter()
        .map(|l| l.body)
        .collect();
    assert!(records.contains("revoked"), "{records}");
}

/// `kill -9` of node A during a burst: every call either node returned is on the chain, the
/// chain verifies, and B serves its whole burst.
#[test]
fn a_node_killed_mid_burst_loses_no_returned_call() {
    let Some(d) = deployed() else { return };
    let (mut a, b) = (serve(&d.f.config()), serve(&d.other));
    let plan_b = calls(&b.url, &assertion(&d.f, AGENT), "b", 300);
    let mut on_a = client_cmd(&calls(&a.url, &assertion(&d.f, AGENT), "a", 300))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let on_b = std::thread::spawn(move || client(plan_b));
    let mut returned_by_a = vec![];
    for line in BufReader::new(on_a.stdout.take().unwrap()).lines() {
        let result: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if result["is_error"] == false {
            returned_by_a.push(result["call"].as_str().unwrap().to_string());
        }
        if returned_by_a.len() == 40 {
            a.child.kill().unwrap();
        }
    }
    let _ = on_a.wait();
    assert!(
        returned_by_a.len() >= 40 && returned_by_a.len() < 300,
        "{}",
        returned_by_a.len()
    );
    let on_b = on_b.join().unwrap();
    assert_eq!(on_b.len(), 300);
    assert!(
        on_b.iter().all(|r| r["is_error"] == false),
        "B stopped serving"
    );
    let chained = chained_calls(&d.other);
    for call in returned_by_a.iter().chain(
        on_b.iter()
            .map(|r| r["call"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .iter(),
    ) {
        assert!(chained.contains(call), "returned call {call} has no record");
    }
}

/// Readiness follows the server: false while PostgreSQL is stopped, true once it is back; a
/// call meanwhile does not succeed (its records could not be written), and the calls before
/// and after are on a chain that verifies. The node hears revocations again after the
/// outage: its listener reconnected.
#[test]
fn readiness_follows_postgres_and_no_call_succeeds_while_it_is_down() {
    let Some(cluster) = warden_test_support::postgres::Cluster::start() else {
        return;
    };
    let f = fixture();
    state_on(&f, &cluster.url(), None);
    let node = serve(&f.config());
    wait_ready(&node, true);
    let (down, up) = (f.path().join("down"), f.path().join("up"));
    let hello = json!({ "op": "call", "tool": "hello", "arguments": { "name": "Ada" } });
    let mut session = client_cmd(&json!({
        "transport": "http", "url": node.url, "token": assertion(&f, AGENT),
        "steps": [hello, { "op": "wait", "file": down }, hello, { "op": "wait", "file": up }, hello],
    }))
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(session.stdout.take().unwrap()).lines();
    let mut next = || serde_json::from_str::<Value>(&lines.next().unwrap().unwrap()).unwrap();
    let before = next();
    assert_eq!(before["is_error"], false, "{before}");

    cluster.stop().unwrap();
    wait_ready(&node, false);
    std::fs::write(&down, "").unwrap();
    assert_eq!(next()["waited"], true);
    let meanwhile = next();
    assert_ne!(
        meanwhile["is_error"], false,
        "a call succeeded without its record: {meanwhile}"
    );

    cluster.start_again().unwrap();
    wait_ready(&node, true);
    std::fs::write(&up, "").unwrap();
    assert_eq!(next()["waited"], true);
    let after = next();
    assert_eq!(after["is_error"], false, "{after}");
    assert!(session.wait().unwrap().success());
    let chained = chained_calls(&f.config());
    for call in [&before, &after] {
        assert!(chained.contains(call["call"].as_str().unwrap()));
    }

    // hello, compiled in the node's cache, revoked by another process with a state directory
    // of its own (so only the announcement can reach the node's cache).
    let other = f.path().join("other.toml");
    edit_to(&f.config(), &other, |t| {
        t.replace("state_dir = \"state\"", "state_dir = \"state-other\"")
    });
    assert!(compiled(&f, "state", "hello"));
    let digest = pinned_digest(&f, "hello");
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("--config")
        .arg(&other)
        .args(["revoke", "tool", &format!("sha256:{digest}")])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    wait_evicted(
        &f,
        "state",
        "hello",
        "the node did not hear the revocation after the outage",
    );
}

/// `warden drill revocation --other-node`: the drill's calls run on this node, its revocations
/// are made on the other, and every row passes.
#[test]
fn the_revocation_drill_runs_across_two_nodes() {
    let Some(d) = deployed() else { return };
    let out = d.f.run(&[
        "drill",
        "revocation",
        "--json",
        "--other-node",
        d.other.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    let rows: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rows.len(), 7);
    assert!(rows.iter().all(|r| r["passed"] == true), "{rows:?}");
    // A configuration on another store is not another node.
    let elsewhere = d.f.path().join("elsewhere.toml");
    edit_to(&d.f.config(), &elsewhere, |t| {
        t.split("[secrets.state-password]")
            .next()
            .unwrap()
            .to_string()
    });
    let out = d.f.run(&[
        "drill",
        "revocation",
        "--other-node",
        elsewhere.to_str().unwrap(),
    ]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("not another node of this deployment"),
        "{}",
        stderr(&out)
    );
}

/// `SIGHUP` to every node: a new permit takes effect on the next call on both; a broken policy
/// file is refused and calls are decided by the set in force; a tool whose component was
/// replaced is run in its new form at once; each reload is on the chain.
#[test]
fn a_reload_on_every_node_applies_a_valid_set_and_refuses_a_broken_one() {
    let Some(d) = deployed() else { return };
    let nodes = [serve(&d.f.config()), serve(&d.other)];
    let call = |node: &Node, tool: &str, arguments: Value| {
        let plan = json!({
            "transport": "http", "url": node.url, "token": assertion(&d.f, AGENT),
            "steps": [{ "op": "call", "tool": tool, "arguments": arguments }],
        });
        client(plan).remove(0)
    };
    let note = || json!({ "name": "reloaded", "text": "yes" });
    let reload_all = |applied: u32, refused: u32| {
        for node in &nodes {
            let pid = rustix::process::Pid::from_child(&node.child);
            rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
        }
        let want = [
            format!("warden_reloads_total{{result=\"applied\"}} {applied}"),
            format!("warden_reloads_total{{result=\"refused\"}} {refused}"),
        ];
        for node in &nodes {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !want
                .iter()
                .all(|w| node.get("/metrics").1.contains(w.as_str()))
            {
                assert!(
                    Instant::now() < deadline,
                    "the reload was not counted: {want:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    for node in &nodes {
        assert_eq!(
            call(node, "write-note", note())["is_error"],
            true,
            "not yet permitted"
        );
    }
    std::fs::write(
        d.f.path().join("policies/notes.cedar"),
        r#"permit(principal == Agent::"tester", action == Action::"invoke", resource == Tool::"write-note");"#,
    )
    .unwrap();
    reload_all(1, 0);
    for node in &nodes {
        let wrote = call(node, "write-note", note());
        assert_eq!(wrote["is_error"], false, "{wrote}");
        assert_eq!(
            call(node, "hello", json!({ "name": "Ada" }))["is_error"],
            false
        );
    }

    // A broken file beside the permit's removal: refused whole, the set in force kept.
    std::fs::write(
        d.f.path().join("policies/broken.cedar"),
        "permit(principal,",
    )
    .unwrap();
    let permit = std::fs::read_to_string(d.f.path().join("policies/notes.cedar")).unwrap();
    std::fs::remove_file(d.f.path().join("policies/notes.cedar")).unwrap();
    reload_all(1, 1);
    for node in &nodes {
        assert_eq!(
            call(node, "write-note", note())["is_error"],
            false,
            "the old set decides"
        );
    }
    std::fs::remove_file(d.f.path().join("policies/broken.cedar")).unwrap();
    std::fs::write(d.f.path().join("policies/notes.cedar"), permit).unwrap();

    // hello (warm on both nodes) replaced by another build: its new digest runs at once.
    let dir = d.f.path().join("tools/hello");
    let mut component = std::fs::read(dir.join("hello.wasm")).unwrap();
    let (name, tag) = (b"warden-test", b"reloaded");
    component.extend([0, (1 + name.len() + tag.len()) as u8, name.len() as u8]);
    component.extend(name);
    component.extend(tag);
    std::fs::write(dir.join("hello.wasm"), &component).unwrap();
    let digest = warden::manifest::Digest::of(&component).to_string();
    edit(&dir.join("tool.toml"), |t| {
        let old = t
            .split("digest = \"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        t.replace(&old, &digest)
    });
    reload_all(2, 1);
    let store = warden::state::open(&Deployment::load(&d.f.config()).unwrap()).unwrap();
    for node in &nodes {
        let hello = call(node, "hello", json!({ "name": "Ada" }));
        assert_eq!(hello["is_error"], false, "{hello}");
        let records: String = store
            .audit_of_call(hello["call"].as_str().unwrap())
            .unwrap()
            .into_iter()
            .map(|l| l.body)
            .collect();
        assert!(records.contains(&digest), "{records}");
    }
    // Six reloads on the chain (three per node), one refused per node; the chain verifies.
    let out = d.f.run(&["audit", "tail", "--count", "100"]);
    assert_exit(&out, 0);
    let tail = stdout(&out);
    assert_eq!(tail.matches("reloaded:").count(), 4, "{tail}");
    assert_eq!(tail.matches("reload refused").count(), 2, "{tail}");
    assert_exit(&d.f.run(&["audit", "verify"]), 0);
}
