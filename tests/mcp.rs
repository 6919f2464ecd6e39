//! `warden mcp` with real clients: the official Python SDK over stdio and streamable HTTP
//! (installed into `.venv` by `.ci/run`; `WARDEN_TEST_PYTHON` may name another interpreter),
//! and raw JSON-RPC for malformed requests, cancellation and a client that goes away.

use crate::common::*;
use serde_json::{Value, json};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use warden::identity::keys;
use warden_test_support::loopback::LoopbackServer;

/// tester may call hello and read-file (not hidden files) and delete notes with a person's
/// approval; nothing else.
const POLICIES: &str = r#"
@id("tester-tools")
permit(principal == Agent::"tester", action == Action::"invoke", resource)
when { resource == Tool::"hello" || resource == Tool::"read-file" || resource == Tool::"delete-note" };

@id("no-hidden-files")
@reason("hidden files stay hidden")
forbid(principal, action == Action::"invoke", resource == Tool::"read-file")
when { context.input has path && context.input.path like ".*" };

@id("deletes-need-approval")
forbid(principal, action == Action::"invoke", resource == Tool::"delete-note")
unless { context.approved };

@id("egress-as-manifests-ask")
permit(principal, action == Action::"egress", resource);
"#;

pub fn fixture() -> Fixture {
    let f = Fixture::new();
    f.set_policies(&[
        ("base.cedar", POLICIES),
        ("input.cedarschema", "type Input = { path?: String };"),
    ]);
    let carol = agent_key("carol");
    keys::write_private(&f.key_file("carol"), &carol).unwrap();
    f.extend_deployment(&format!(
        "[approvers.carol]\npublic_key = \"{}\"\n",
        keys::format_public(&carol.verifying_key())
    ));
    std::fs::write(f.path().join("notes/a"), "a").unwrap();
    f
}

pub fn python() -> PathBuf {
    std::env::var_os("WARDEN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"))
}

/// tests/mcp/client.py with `plan`, to be run.
pub fn client_cmd(plan: &Value) -> Command {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/mcp/client.py");
    let mut cmd = Command::new(python());
    cmd.arg(script).arg(plan.to_string());
    cmd
}

/// Runs tests/mcp/client.py with `plan`.
fn run_client(plan: Value) -> std::process::Output {
    client_cmd(&plan)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run .ci/run's setup first)", python().display()))
}

/// Runs tests/mcp/client.py with `plan`; one JSON value per step.
pub fn client(plan: Value) -> Vec<Value> {
    let out = run_client(plan);
    assert!(out.status.success(), "client failed: {}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The steps both transports run, and what they must show.
fn steps(f: &Fixture) -> Value {
    let warden = env!("CARGO_BIN_EXE_warden");
    json!([
        { "op": "list" },
        { "op": "call", "tool": "hello", "arguments": { "name": "Ada" } },
        { "op": "call", "tool": "read-file", "arguments": { "path": ".env" } },
        { "op": "call", "tool": "write-note", "arguments": { "name": "x", "text": "y" } },
        { "op": "call", "tool": "delete-note", "arguments": { "name": "a" } },
        { "op": "run", "command": [warden, "--config", f.config(), "approve", "{approval}",
                                   "--key", f.key_file("carol")] },
        { "op": "call", "tool": "delete-note", "arguments": { "name": "a" },
          "meta": { "warden/approval": "{approval}" } },
        { "op": "call", "tool": "no-such-tool", "arguments": {} },
    ])
}

fn assert_steps(f: &Fixture, results: &[Value]) {
    let [
        listed,
        hello,
        hidden,
        unlisted,
        held,
        approved,
        deleted,
        unknown,
    ] = results
    else {
        panic!("{results:?}");
    };
    // Only what policy lets tester call is listed, with schema and hints.
    let tools = listed["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["delete-note", "hello", "read-file"], "{listed}");
    let hello_tool = &tools[1];
    assert_eq!(hello_tool["read_only"], true);
    assert!(
        hello_tool["input_schema"]["properties"]["name"].is_object(),
        "{hello_tool}"
    );
    assert_eq!(tools[0]["destructive"], true);
    assert!(
        tools[0]["description"]
            .as_str()
            .unwrap()
            .contains("approval")
    );

    assert_eq!(hello["is_error"], false, "{hello}");
    assert!(hello["text"].as_str().unwrap().contains("Ada"), "{hello}");

    assert_eq!(hidden["is_error"], true);
    let text = hidden["text"].as_str().unwrap();
    assert!(
        text.contains("denied") && text.contains("hidden files stay hidden"),
        "{text}"
    );
    assert_eq!(unlisted["is_error"], true);
    assert!(
        unlisted["text"].as_str().unwrap().contains("denied"),
        "{unlisted}"
    );

    assert_eq!(held["is_error"], true);
    let id = held["structured"]["approval"].as_str().unwrap();
    let text = held["text"].as_str().unwrap();
    assert!(
        text.contains("a person must approve") && text.contains(id),
        "{text}"
    );
    assert_eq!(approved["code"], 0, "{approved}");
    assert_eq!(deleted["is_error"], false, "{deleted}");
    assert!(!f.path().join("notes/a").exists());
    assert!(
        unknown["rpc_error"]
            .as_str()
            .unwrap()
            .contains("unknown tool"),
        "{unknown}"
    );

    // Every call went through the audit, as an MCP call.
    let out = f.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let tail = stdout(&f.run(&["audit", "tail", "--json"]));
    let origins: Vec<Value> = tail
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["record"] == "call")
        .map(|r| r["origin"]["kind"].clone())
        .collect();
    assert!(
        !origins.is_empty() && origins.iter().all(|k| k == "mcp"),
        "{origins:?}"
    );
}

#[test]
fn the_python_sdk_lists_and_calls_over_stdio() {
    let f = fixture();
    let results = client(json!({
        "transport": "stdio",
        "command": [env!("CARGO_BIN_EXE_warden"), "--config", f.config(), "mcp",
                    "--agent", AGENT, "--agent-key", f.key_file(AGENT)],
        "steps": steps(&f),
    }));
    assert_steps(&f, &results);
}

/// `warden mcp --http 127.0.0.1:0`.
fn http_server(f: &Fixture) -> Node {
    let mut cli = f.cli();
    cli.args(["mcp", "--http", "127.0.0.1:0"]);
    Node::start(cli)
}

/// The status line of a raw `initialize` POST with `authorization`.
pub fn raw_status(url: &str, authorization: Option<&str>) -> String {
    let address = url.trim_start_matches("http://").split('/').next().unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}})
    .to_string();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let auth = authorization.map_or(String::new(), |a| format!("authorization: {a}\r\n"));
    write!(
        stream,
        "POST /mcp HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\n{auth}content-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.lines().next().unwrap_or("").to_string()
}

pub fn assertion(f: &Fixture, key: &str) -> String {
    let out = f.run(&[
        "assert",
        "--agent",
        AGENT,
        "--agent-key",
        f.key_file(key).to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

#[test]
fn the_python_sdk_lists_and_calls_over_http_with_a_signed_assertion() {
    let f = fixture();
    keys::write_private(&f.key_file("bob"), &agent_key("bob")).unwrap();
    let server = http_server(&f);

    // Without an assertion, with garbage, or signed by another key: refused before MCP.
    assert!(raw_status(&server.url, None).contains("401"));
    assert!(raw_status(&server.url, Some("Bearer garbage")).contains("401"));
    let forged = assertion(&f, "bob");
    assert!(raw_status(&server.url, Some(&format!("Bearer {forged}"))).contains("401"));
    // The SDK client with a bad assertion gets no session: it fails, having listed nothing.
    let refused = run_client(json!({
        "transport": "http", "url": server.url, "token": "garbage", "steps": [{ "op": "list" }],
    }));
    assert!(!refused.status.success());
    assert!(stdout(&refused).is_empty(), "{}", stdout(&refused));

    let results = client(json!({
        "transport": "http",
        "url": server.url,
        "token": assertion(&f, AGENT),
        "steps": steps(&f),
    }));
    assert_steps(&f, &results);
}

/// A stdio server spoken to in raw JSON-RPC lines.
struct RawStdio {
    child: std::process::Child,
    out: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl RawStdio {
    /// `warden mcp` for the tester, whom a policy lets do anything, past the handshake.
    fn start(f: &Fixture) -> RawStdio {
        RawStdio::start_as(f, f.cli())
    }

    /// The same, with `warden` run as `cli` (a command that execs it).
    fn start_as(f: &Fixture, mut cli: Command) -> RawStdio {
        f.set_policies(&[(
            "base.cedar",
            "permit(principal == Agent::\"tester\", action, resource);",
        )]);
        let mut child = cli
            .args(["mcp", "--agent", AGENT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut raw = RawStdio { child, out };
        raw.send(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"}}})
            .to_string(),
        );
        assert_eq!(raw.receive()["id"], 1);
        raw.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        raw
    }

    fn send(&mut self, message: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    }

    fn receive(&mut self) -> Value {
        serde_json::from_str(&self.out.next().unwrap().unwrap()).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_errors_and_a_cancelled_call_stops_its_tool() {
    let upstream = LoopbackServer::start().await.unwrap();
    let f = fixture();
    f.install_tool(
        "hostile-http",
        Some(&loopback_rule(&upstream.url(""), &[], None)),
    );
    let mut raw = RawStdio::start(&f);

    // A line that is not JSON, a request for a method that does not exist, and a call
    // without a tool name: errors (or nothing), and the server goes on.
    raw.send("this is not json");
    raw.send(r#"{"jsonrpc":"2.0","id":2,"method":"tools/explode","params":{}}"#);
    let answer = raw.receive();
    assert_eq!(answer["id"], 2);
    assert!(answer["error"]["code"].is_i64(), "{answer}");
    raw.send(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"arguments":{}}}"#);
    let answer = raw.receive();
    assert_eq!(answer["id"], 3);
    assert!(answer["error"]["code"].is_i64(), "{answer}");

    // A call that waits on a slow upstream, cancelled by the client.
    let slow = json!({"url": upstream.url("/slow")});
    raw.send(
        &json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                "params": {"name": "hostile-http", "arguments": slow}})
        .to_string(),
    );
    while !upstream.received().iter().any(|r| r.path == "/slow") {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    raw.send(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":4}}"#);

    // The server keeps serving.
    raw.send(r#"{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{}}"#);
    let answer = raw.receive();
    assert_eq!(answer["id"], 5, "{answer}");
    assert!(answer["result"]["tools"].is_array(), "{answer}");

    // The cancelled call ended as cancelled (its timeout is 3 s), and was audited.
    let mut kinds = Vec::new();
    for _ in 0..100 {
        let tail = stdout(&f.run(&["audit", "tail", "--json"]));
        kinds = tail
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["record"] == "call" && r["tool"] == "hostile-http")
            .map(|r| r["error"]["kind"].clone())
            .collect();
        if !kinds.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(kinds, [json!("cancelled")]);
    let _ = raw.child.kill();
    let _ = raw.child.wait();
}

/// The server raises its soft limit on open files to the hard one: calls that hold files
/// side by side (each up to its handle bound) must not starve the state file and sockets.
#[test]
fn the_server_may_open_as_many_files_as_the_system_allows() {
    let f = fixture();
    let warden = f.cli();
    let mut low = Command::new("prlimit");
    low.arg("--nofile=256:")
        .arg(warden.get_program())
        .args(warden.get_args());
    for (key, value) in warden.get_envs() {
        match value {
            Some(value) => low.env(key, value),
            None => low.env_remove(key),
        };
    }
    let mut raw = RawStdio::start_as(&f, low);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", raw.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    // `Max open files  SOFT  HARD  files`
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3], fields[4], "{line}");
    assert_ne!(fields[3], "256", "{line}");
    let _ = raw.child.kill();
    let _ = raw.child.wait();
}

/// The example policies as shipped, and tester (trusted high) may also read.
fn example_policies(f: &Fixture) {
    f.set_example_policies(&[(
        "tester.cedar",
        "permit(principal == Agent::\"tester\", action == Action::\"invoke\", resource) \
         when { resource.impact == \"read\" };",
    )]);
}

/// A page fetched over a connection taints that connection's session: deleting then needs a
/// person; a fresh connection is a fresh, clean session.
fn assert_connections_are_sessions(
    f: &Fixture,
    upstream: &LoopbackServer,
    run: impl Fn(Value) -> Vec<Value>,
) {
    let first = run(json!([
        { "op": "call", "tool": "http-get", "arguments": { "url": upstream.url("/page") } },
        { "op": "call", "tool": "delete-note", "arguments": { "name": "a" } },
    ]));
    let [fetched, held] = &first[..] else {
        panic!("{first:?}");
    };
    assert_eq!(fetched["is_error"], false, "{fetched}");
    assert_eq!(held["is_error"], true, "{held}");
    assert!(held["structured"]["approval"].is_string(), "{held}");
    assert!(
        held["structured"]["policies"]
            .as_array()
            .unwrap()
            .contains(&json!("irreversible-needs-clean-session")),
        "{held}"
    );
    assert!(f.path().join("notes/a").exists(), "nothing was deleted");
    let session = fetched["session"].as_str().unwrap();
    assert_eq!(held["session"], session, "one connection, one session");

    let second = run(json!([
        { "op": "call", "tool": "delete-note", "arguments": { "name": "a" } },
    ]));
    let [deleted] = &second[..] else {
        panic!("{second:?}");
    };
    assert_eq!(deleted["is_error"], false, "{deleted}");
    assert_ne!(
        deleted["session"], session,
        "a fresh connection, a fresh session"
    );
    assert!(!f.path().join("notes/a").exists());
}

fn provenance_fixture(upstream: &LoopbackServer) -> Fixture {
    let f = fixture();
    f.install_tool(
        "http-get",
        Some(&loopback_rule(&upstream.url(""), &[], None)),
    );
    example_policies(&f);
    f
}

#[tokio::test(flavor = "multi_thread")]
async fn over_stdio_each_connection_is_a_session_that_untrusted_content_taints() {
    let upstream = LoopbackServer::start().await.unwrap();
    let f = provenance_fixture(&upstream);
    // Outside any session, the example policies fail closed: an irreversible call needs a
    // person even though nothing untrusted is known to have come in.
    let out = f.call_cli("delete-note", r#"{"name":"a"}"#, &["--json"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(f.path().join("notes/a").exists());

    assert_connections_are_sessions(&f, &upstream, |steps| {
        client(json!({
            "transport": "stdio",
            "command": [env!("CARGO_BIN_EXE_warden"), "--config", f.config(), "mcp",
                        "--agent", AGENT, "--agent-key", f.key_file(AGENT)],
            "steps": steps,
        }))
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn over_http_each_mcp_session_is_a_session_that_untrusted_content_taints() {
    let upstream = LoopbackServer::start().await.unwrap();
    let f = provenance_fixture(&upstream);
    let server = http_server(&f);
    assert_connections_are_sessions(&f, &upstream, |steps| {
        client(json!({
            "transport": "http",
            "url": server.url,
            "token": assertion(&f, AGENT),
            "steps": steps,
        }))
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_stdin_lets_the_call_in_flight_finish_and_be_recorded() {
    // The upstream holds the tool's request until the test lets it go.
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let hold: warden_test_support::loopback::Hold = {
        let release = release.clone();
        Arc::new(move |_| {
            let release = release.clone();
            Box::pin(async move {
                let _ = release.acquire().await.map(|p| p.forget());
            })
        })
    };
    let upstream = LoopbackServer::start_with(Some(hold)).await.unwrap();
    let f = fixture();
    f.install_tool(
        "hostile-http",
        Some(&loopback_rule(&upstream.url(""), &[], None)),
    );
    // Longer than the transport's own grace for handlers (5 s), so that only waiting for the
    // call keeps it alive.
    let manifest = f.path().join("tools/hostile-http/tool.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("timeout = \"3s\"", "timeout = \"60s\""),
    )
    .unwrap();
    let mut raw = RawStdio::start(&f);
    raw.send(
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "hostile-http", "arguments": {"url": upstream.url("/hold")}}})
        .to_string(),
    );
    while !upstream.received().iter().any(|r| r.path == "/hold") {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The client goes away mid-call; the upstream answers well after the transport gave up.
    drop(raw.child.stdin.take());
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    release.add_permits(1);
    let status = tokio::task::spawn_blocking(move || raw.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");

    // The process ended after the call did, and recorded how it ended.
    let tail = stdout(&f.run(&["audit", "tail", "--json"]));
    let calls: Vec<Value> = tail
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["record"] == "call" && r["tool"] == "hostile-http")
        .collect();
    assert!(
        calls
            .iter()
            .any(|c| c["outcome"] == "ok" && c["error"].is_null()),
        "{tail}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stateless_http_call_runs_in_the_session_it_names_or_in_none() {
    let upstream = LoopbackServer::start().await.unwrap();
    let f = provenance_fixture(&upstream);
    let server = http_server(&f);
    let page = json!({ "url": upstream.url("/page") });
    let results = client(json!({
        "transport": "http",
        "stateless": true,
        "url": server.url,
        "token": assertion(&f, AGENT),
        "steps": [
            // Naming no session: outside any, where deleting needs a person.
            { "op": "call", "tool": "http-get", "arguments": page },
            { "op": "call", "tool": "delete-note", "arguments": { "name": "a" } },
            // A new session, which the page taints; the delete naming it needs a person.
            { "op": "call", "tool": "http-get", "arguments": page,
              "meta": { "warden/session": "new" } },
            { "op": "call", "tool": "delete-note", "arguments": { "name": "a" },
              "meta": { "warden/session": "{session}" } },
            // A session nobody started is refused.
            { "op": "call", "tool": "hello", "arguments": { "name": "x" },
              "meta": { "warden/session": "made-up" } },
        ],
    }));
    let [outside, held_outside, fetched, held, made_up] = &results[..] else {
        panic!("{results:?}");
    };
    assert_eq!(outside["is_error"], false, "{outside}");
    assert!(outside["session"].is_null(), "{outside}");
    assert_eq!(
        held_outside["structured"]["error"], "approval_required",
        "{held_outside}"
    );
    let session = fetched["session"].as_str().unwrap();
    assert_eq!(held["session"], session, "{held}");
    assert_eq!(held["structured"]["error"], "approval_required", "{held}");
    assert!(f.path().join("notes/a").exists());
    assert_eq!(made_up["is_error"], true, "{made_up}");
    assert!(
        made_up["text"].as_str().unwrap().contains("no session"),
        "{made_up}"
    );
    let shown = f.run(&["session", "show", session]);
    assert!(stdout(&shown).contains("http-get"), "{}", stdout(&shown));
}

/// `warden serve`, told to stop while a call runs: it takes no new connection, the call ends
/// and its client gets the result, the call is recorded, the process exits 0.
#[test]
fn a_terminated_node_finishes_the_call_in_flight() {
    let f = Fixture::new();
    // With a rate policy the call is counted, and on record as started, before its tool
    // runs: the test waits for that record.
    f.set_policies(&[(
        "all.cedar",
        r#"permit(principal == Agent::"tester", action, resource);
           forbid(principal, action == Action::"invoke", resource)
           when { context.calls_last_minute > 100 };"#,
    )]);
    // hostile-cpu's `sleep` runs until its timeout: 4 s in flight.
    edit(&f.path().join("tools/hostile-cpu/tool.toml"), |t| {
        assert!(t.contains("timeout = \"1s\""), "{t}");
        t.replace("timeout = \"1s\"", "timeout = \"4s\"")
    });
    let mut cli = f.cli();
    cli.args(["serve", "--addr", "127.0.0.1:0", "--drain", "20s"]);
    let mut node = Node::start(cli);
    let url = node.url.clone();
    let plan = json!({
        "transport": "http", "url": url, "token": assertion(&f, AGENT),
        "steps": [{ "op": "call", "tool": "hostile-cpu", "arguments": { "attack": "sleep" } }],
    });
    let client = std::thread::spawn(move || client(plan));

    // Once the call has started (its record is written before the tool runs), SIGTERM.
    let db = f.path().join("state/warden.db");
    let started = || {
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| {
                c.query_row(
                    "SELECT count(*) FROM audit WHERE body LIKE '%\"record\":\"started\"%'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while started() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the call never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid = rustix::process::Pid::from_child(&node.child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();

    // The client got the call's own end (its timeout), not a broken connection.
    let results = client.join().unwrap();
    assert_eq!(results[0]["is_error"], true, "{results:?}");
    assert!(
        results[0]["text"].as_str().unwrap().contains("timeout"),
        "{results:?}"
    );
    let status = node.child.wait().unwrap();
    let said = node.said();
    assert_eq!(status.code(), Some(0), "{said}");
    assert!(said.contains("stopping"), "{said}");
    // Its final record is on a chain that verifies.
    let out = f.run(&["audit", "verify"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("(1 calls)"), "{}", stdout(&out));
}

/// `warden serve`'s `/metrics` after a known set of calls: each counted once under its tool,
/// agent and result; a tool name nobody defined is not a label; latency histograms count the
/// decided calls; the gauges are read from the store.
#[test]
fn a_node_counts_its_calls_for_prometheus() {
    let f = fixture();
    let mut cli = f.cli();
    cli.args(["serve", "--addr", "127.0.0.1:0"]);
    let node = Node::start(cli);
    let hello = json!({ "op": "call", "tool": "hello", "arguments": { "name": "Ada" } });
    let results = client(json!({
        "transport": "http", "url": node.url, "token": assertion(&f, AGENT),
        "steps": [
            hello, hello, hello,
            { "op": "call", "tool": "read-file", "arguments": { "path": ".env" } },
            { "op": "call", "tool": "delete-note", "arguments": { "name": "a" } },
            { "op": "call", "tool": "no-such-tool-x7", "arguments": {} },
        ],
    }));
    assert_eq!(results.len(), 6);
    let (status, text) = node.get("/metrics");
    assert_eq!(status, 200, "{text}");
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    let calls = |tool: &str, result: &str| {
        value(&format!(
            "warden_calls_total{{tool=\"{tool}\",agent=\"tester\",result=\"{result}\"}}"
        ))
    };
    assert_eq!(calls("hello", "ok"), 3.0);
    assert_eq!(calls("read-file", "denied"), 1.0);
    assert_eq!(calls("delete-note", "approval_required"), 1.0);
    assert_eq!(calls("other", "unknown_tool"), 1.0);
    assert!(
        !text.contains("no-such-tool-x7"),
        "a caller's text became a label"
    );
    // Five calls were decided (the unknown tool never reached the decision).
    assert_eq!(value("warden_decision_duration_seconds_count"), 5.0);
    assert_eq!(
        value("warden_decision_duration_seconds_bucket{le=\"+Inf\"}"),
        5.0
    );
    assert!(value("warden_state_store_duration_seconds_count") >= 5.0);
    assert_eq!(value("warden_state_store_errors_total"), 0.0);
    assert_eq!(value("warden_state_store_up"), 1.0);
    assert_eq!(value("warden_approvals_pending"), 1.0);
    assert_eq!(value("warden_revocations"), 0.0);
    assert!(value("warden_tools_warm") >= 3.0);
    // Every line is a comment or `name{labels} value`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, number) = line.rsplit_once(' ').unwrap();
        assert!(series.starts_with("warden_"), "{line}");
        number.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
    }
}

/// With `[telemetry] otlp_endpoint`, each call reaches a (loopback) OTLP/HTTP collector as one
/// trace: the MCP server span, the decision, the tool's run and each request it sent, joined
/// to the client's trace when it sent a `traceparent`; no secret in any of it.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_exports_each_call_as_a_trace() {
    let upstream = LoopbackServer::start().await.unwrap();
    let collector = LoopbackServer::start().await.unwrap();
    let f = fixture();
    install_minted_http_get(&f, &upstream.url(""));
    f.set_policies(&[
        ("base.cedar", POLICIES),
        ("input.cedarschema", "type Input = { path?: String };"),
        (
            "fetch.cedar",
            "@id(\"tester-fetches\")\npermit(principal == Agent::\"tester\", action == Action::\"invoke\", resource == Tool::\"http-get\");",
        ),
    ]);
    f.extend_deployment(&format!(
        "[telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"warden-test\"\n",
        collector.url("/collect")
    ));
    let mut cli = f.cli();
    cli.args(["serve", "--addr", "127.0.0.1:0"]);
    let node = Node::start(cli);
    let token = assertion(&f, AGENT);
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let results = client(json!({
        "transport": "http", "url": node.url, "token": token,
        "steps": [
            { "op": "call", "tool": "hello", "arguments": { "name": "Ada" } },
            { "op": "call", "tool": "http-get", "arguments": { "url": upstream.url("/page") },
              "meta": { "traceparent": parent } },
            { "op": "call", "tool": "read-file", "arguments": { "path": ".env" } },
        ],
    }));
    assert_eq!(results.len(), 3);
    assert_eq!(results[1]["is_error"], false, "{}", results[1]);

    // Batches leave a second after their first span; wait for all three calls' roots.
    let spans = || -> Vec<Value> {
        collector
            .received()
            .iter()
            .filter(|r| r.path == "/collect/v1/traces")
            .flat_map(|r| {
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(
                    body["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
                    "warden-test"
                );
                body["resourceSpans"][0]["scopeSpans"][0]["spans"]
                    .as_array()
                    .unwrap()
                    .clone()
            })
            .collect()
    };
    let waited = std::time::Instant::now();
    while spans().iter().filter(|s| s["kind"] == 2).count() < 3 {
        assert!(waited.elapsed().as_secs() < 20, "no traces: {:?}", spans());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let spans = spans();
    let attr = |span: &Value, key: &str| -> Value {
        span["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| a["value"].clone())
            .unwrap_or(Value::Null)
    };
    let root = |tool: &str| -> Value {
        let roots: Vec<&Value> = spans
            .iter()
            .filter(|s| s["name"] == format!("tools/call {tool}"))
            .collect();
        assert_eq!(roots.len(), 1, "one trace per call: {roots:?}");
        roots[0].clone()
    };
    let children = |of: &Value| -> Vec<Value> {
        spans
            .iter()
            .filter(|s| s["parentSpanId"] == of["spanId"] && s["traceId"] == of["traceId"])
            .cloned()
            .collect()
    };
    let names = |spans: &[Value]| -> Vec<String> {
        let mut names: Vec<String> = spans
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };

    let hello = root("hello");
    assert_eq!(attr(&hello, "mcp.method.name")["stringValue"], "tools/call");
    assert_eq!(attr(&hello, "gen_ai.tool.name")["stringValue"], "hello");
    assert_eq!(
        attr(&hello, "gen_ai.operation.name")["stringValue"],
        "execute_tool"
    );
    assert_eq!(attr(&hello, "warden.decision")["stringValue"], "allow");
    assert!(attr(&hello, "jsonrpc.request.id")["stringValue"].is_string());
    assert_eq!(hello["status"]["code"], 0);
    assert!(hello.get("parentSpanId").is_none(), "{hello}");
    assert_eq!(
        names(&children(&hello)),
        ["execute_tool hello", "warden.decide"]
    );

    // The fetch joins the client's trace, under the client's span.
    let fetch = root("http-get");
    assert_eq!(fetch["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(fetch["parentSpanId"], "00f067aa0ba902b7");
    let run = children(&fetch)
        .into_iter()
        .find(|s| s["name"] == "execute_tool http-get")
        .unwrap();
    let [get] = &children(&run)[..] else {
        panic!("one request: {:?}", children(&run));
    };
    assert_eq!(get["name"], "GET");
    assert_eq!(get["kind"], 3);
    assert_eq!(attr(get, "server.address")["stringValue"], "127.0.0.1");
    assert_eq!(
        attr(get, "server.port")["intValue"],
        upstream.addr.port().to_string()
    );
    assert_eq!(attr(get, "url.path")["stringValue"], "/page");
    assert_eq!(attr(get, "http.response.status_code")["intValue"], "200");
    assert_eq!(attr(get, "warden.egress.decision")["stringValue"], "allow");
    assert_eq!(attr(get, "warden.credential")["stringValue"], "upstream");
    let nanos = |s: &Value, k: &str| s[k].as_str().unwrap().parse::<u128>().unwrap();
    assert!(nanos(get, "startTimeUnixNano") >= nanos(&run, "startTimeUnixNano"));
    assert!(nanos(get, "endTimeUnixNano") <= nanos(&fetch, "endTimeUnixNano"));

    // The denial is decided and ends there: no run, an error status.
    let denied = root("read-file");
    assert_eq!(names(&children(&denied)), ["warden.decide"]);
    assert_eq!(denied["status"]["code"], 2);
    assert_eq!(attr(&denied, "error.type")["stringValue"], "denied");
    assert_eq!(
        attr(&children(&denied)[0], "warden.policies")["arrayValue"]["values"][0]["stringValue"],
        "no-hidden-files"
    );

    // No secret anywhere: not the agent's assertion, not the token the host minted and added.
    let minted = tokens(&upstream);
    assert_eq!(minted.len(), 1);
    let exported: String = collector
        .received()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    for secret in minted.iter().chain([&token]) {
        assert!(!exported.contains(secret.as_str()), "a secret was exported");
        let middle = &secret[secret.len() / 3..secret.len() / 3 + 16];
        assert!(!exported.contains(middle), "part of a secret was exported");
    }

    // The metrics count what was exported.
    let (_, metrics) = node.get("/metrics");
    assert!(
        metrics.contains("warden_trace_spans_total{result=\"exported\"}"),
        "{metrics}"
    );
}

/// `SIGHUP` reads `warden.toml` again: a new agent can connect at once; a broken file, or a
/// change only a restart applies (`[state]`), is refused with a line naming the file and the
/// deployment in force kept; an agent whose key was changed is refused on its next call, even
/// in a session it opened before.
#[test]
fn a_reload_applies_a_new_deployment_file_and_refuses_a_broken_one() {
    let f = fixture();
    let newbie = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    keys::write_private(&f.key_file("newbie"), &newbie).unwrap();
    let mut cli = f.cli();
    cli.args(["serve", "--addr", "127.0.0.1:0"]);
    let mut node = Node::start(cli);
    let bearer = |agent: &str| {
        let out = f.run(&[
            "assert",
            "--agent",
            agent,
            "--agent-key",
            f.key_file(agent).to_str().unwrap(),
        ]);
        format!("Bearer {}", stdout(&out).trim())
    };
    let reload = |applied: u32, refused: u32| {
        let pid = rustix::process::Pid::from_child(&node.child);
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
        let want = [
            format!("warden_reloads_total{{result=\"applied\"}} {applied}"),
            format!("warden_reloads_total{{result=\"refused\"}} {refused}"),
        ];
        let waited = std::time::Instant::now();
        while !want
            .iter()
            .all(|w| node.get("/metrics").1.contains(w.as_str()))
        {
            assert!(waited.elapsed().as_secs() < 30, "not reloaded: {want:?}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let original = std::fs::read_to_string(f.config()).unwrap();
    assert!(raw_status(&node.url, Some(&bearer("newbie"))).contains("401"));

    // tester opens a session and calls; it calls again once the test says so.
    let (called, go_on) = (f.path().join("called"), f.path().join("go-on"));
    let plan = json!({
        "transport": "http", "url": node.url, "token": assertion(&f, AGENT),
        "steps": [
            { "op": "call", "tool": "hello", "arguments": { "name": "Ada" } },
            { "op": "run", "command": ["touch", called] },
            { "op": "wait", "file": go_on },
            { "op": "call", "tool": "hello", "arguments": { "name": "Ada" } },
        ],
    });
    let session = client_cmd(&plan)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waited = std::time::Instant::now();
    while !called.exists() {
        assert!(waited.elapsed().as_secs() < 60, "the session never called");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let newbie_entry = format!(
        "\n[agents.newbie]\npublic_key = \"{}\"\n",
        keys::format_public(&newbie.verifying_key())
    );
    std::fs::write(f.config(), format!("{original}{newbie_entry}")).unwrap();
    reload(1, 0);
    assert!(raw_status(&node.url, Some(&bearer("newbie"))).contains("200"));

    // Broken, then a change of where the state lives: both refused, newbie still in.
    std::fs::write(f.config(), format!("{original}{newbie_entry}[agents.x\n")).unwrap();
    reload(1, 1);
    std::fs::write(
        f.config(),
        format!("{original}{newbie_entry}[state]\nurl = \"postgres://w@127.0.0.1:1/w\"\n"),
    )
    .unwrap();
    reload(1, 2);
    assert!(raw_status(&node.url, Some(&bearer("newbie"))).contains("200"));

    // tester's key replaced: its open session's next call is refused.
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[77; 32]);
    let tester_key = keys::format_public(&agent_key(AGENT).verifying_key());
    let replaced = original.replace(
        &tester_key,
        &keys::format_public(&other_key.verifying_key()),
    );
    assert_ne!(replaced, original);
    std::fs::write(f.config(), replaced).unwrap();
    reload(2, 2);
    assert!(raw_status(&node.url, Some(&bearer("newbie"))).contains("401"));
    std::fs::write(&go_on, "").unwrap();
    let out = session.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let results: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results[0]["is_error"], false, "{results:?}");
    // Refused at its request's authentication (the bearer's agent no longer holds that key).
    assert!(results[3]["rpc_error"].is_string(), "{results:?}");

    let pid = rustix::process::Pid::from_child(&node.child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    node.child.wait().unwrap();
    let said = node.said();
    assert!(said.contains("reload refused"), "{said}");
    assert!(
        said.contains("warden.toml") && said.contains("line"),
        "{said}"
    );
    assert!(said.contains("`[state]` changed: restart"), "{said}");
}

/// A revoked tool is not offered: `tools/list` in the same session leaves it out once it is
/// revoked (listing it would load and describe revoked code; a call would be refused).
#[test]
fn a_revoked_tool_is_no_longer_listed() {
    let f = fixture();
    let warden = env!("CARGO_BIN_EXE_warden");
    let results = client(json!({
        "transport": "stdio",
        "command": [warden, "--config", f.config(), "mcp",
                    "--agent", AGENT, "--agent-key", f.key_file(AGENT)],
        "steps": [
            { "op": "list" },
            { "op": "run", "command": [warden, "--config", f.config(), "revoke", "tool", "hello"] },
            { "op": "list" },
        ],
    }));
    let names = |listed: &Value| -> Vec<String> {
        listed["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        names(&results[0]).contains(&"hello".to_string()),
        "{results:?}"
    );
    assert_eq!(results[1]["code"], 0, "{results:?}");
    assert!(
        !names(&results[2]).contains(&"hello".to_string()),
        "{results:?}"
    );
    assert!(
        names(&results[2]).contains(&"read-file".to_string()),
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_hears_the_decision_egress_stderr_and_progress_at_the_level_it_set() {
    // The upstream holds the tool's request 6 s: the call runs past a progress tick.
    let hold: warden_test_support::loopback::Hold =
        Arc::new(|_| Box::pin(tokio::time::sleep(std::time::Duration::from_secs(6))));
    let upstream = LoopbackServer::start_with(Some(hold)).await.unwrap();
    let f = fixture();
    f.install_tool(
        "http-get",
        Some(&loopback_rule(&upstream.url(""), &[], None)),
    );
    edit(&f.path().join("tools/http-get/tool.toml"), |t| {
        t.replace("timeout = \"10s\"", "timeout = \"30s\"")
    });
    f.install_tool("hostile-crash", None);
    example_policies(&f);
    let server = http_server(&f);
    let crash = json!({ "op": "call", "tool": "hostile-crash",
                        "arguments": { "lines": ["first line", "second line"] } });
    let out = tokio::task::block_in_place(|| {
        client(json!({
            "transport": "http", "url": server.url, "token": assertion(&f, AGENT),
            "steps": [
                { "op": "log_level", "level": "debug" },
                { "op": "call", "tool": "http-get", "progress": true,
                  "arguments": { "url": upstream.url("/hold?token=abc") } },
                crash,
                { "op": "log_level", "level": "warning" },
                crash,
            ],
        }))
    });
    let events = |step: &Value| -> Vec<Value> {
        step["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                assert_eq!(l["logger"], "warden");
                let mut data = l["data"].clone();
                data["level"] = l["level"].clone();
                data
            })
            .collect()
    };
    let fetched = events(&out[1]);
    let decision = fetched.iter().find(|e| e["event"] == "decision").unwrap();
    assert_eq!(
        (&decision["outcome"], &decision["level"]),
        (&json!("allow"), &json!("info"))
    );
    let egress = fetched.iter().find(|e| e["event"] == "egress").unwrap();
    assert_eq!(egress["method"], "GET");
    assert_eq!(egress["decision"], "allow");
    // Shown as the audit shows it: without the query.
    assert_eq!(egress["url"], upstream.url("/hold").as_str());
    assert!(!out[1].to_string().contains("token=abc"), "{}", out[1]);
    let progress = out[1]["progress"].as_array().unwrap();
    assert!(
        !progress.is_empty(),
        "no progress in a 6 s call: {}",
        out[1]
    );
    assert!(
        progress[0]["message"]
            .as_str()
            .unwrap()
            .contains("`http-get` runs")
    );
    // The tool's stderr lines, as it wrote them, at debug.
    let crashed = events(&out[2]);
    let lines: Vec<&Value> = crashed
        .iter()
        .filter(|e| e["event"] == "stderr")
        .map(|e| &e["line"])
        .collect();
    assert_eq!(lines[..2], [&json!("first line"), &json!("second line")]);
    assert!(
        crashed
            .iter()
            .all(|e| e["event"] != "stderr" || e["level"] == "debug")
    );
    // At warning, an allowed call's decision and its stderr are not sent.
    let quiet = events(&out[4]);
    assert!(
        quiet
            .iter()
            .all(|e| e["event"] != "stderr" && e["event"] != "decision"),
        "{quiet:?}"
    );
}
