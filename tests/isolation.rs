//! Every hostile tool in `tools/hostile/`, run through the real runtime: each test asserts the
//! specific containment — the error kind, and that nothing outside was touched or reached.

use crate::common::*;
use serde_json::json;
use std::net::{TcpListener, UdpSocket};
use std::time::Duration;
use warden::ErrorKind;
use warden_test_support::loopback::LoopbackServer;

// ---- filesystem ------------------------------------------------------------------------

async fn fs_attack(fixture: &Fixture, attack: &str) -> serde_json::Value {
    let runtime = fixture.runtime();
    let report = call(&runtime, "hostile-fs", json!({ "attack": attack })).await;
    let out = ok(&report).clone();
    assert_eq!(out["escaped"], false, "{attack} escaped: {out}");
    assert!(
        !out.to_string().contains(SECRET),
        "{attack} read the secret: {out}"
    );
    out
}

#[tokio::test]
async fn dotdot_out_of_a_mount_is_refused() {
    let f = Fixture::new();
    let out = fs_attack(&f, "dotdot").await;
    assert!(
        out["detail"].as_str().unwrap().contains("not permitted"),
        "{out}"
    );
    fs_attack(&f, "dotdot-relative").await;
}

#[tokio::test]
async fn absolute_paths_and_the_root_do_not_exist_for_the_tool() {
    let f = Fixture::new();
    fs_attack(&f, "absolute").await;
    fs_attack(&f, "list-root").await;
}

#[tokio::test]
async fn a_preplaced_symlink_out_of_a_mount_is_not_followed() {
    let f = Fixture::new();
    std::os::unix::fs::symlink(
        f.path().join("outside/secret.txt"),
        f.path().join("data/link-out"),
    )
    .unwrap();
    fs_attack(&f, "preplaced-symlink").await;
}

#[tokio::test]
async fn symlinks_the_tool_creates_do_not_lead_out() {
    let f = Fixture::new();
    let out = fs_attack(&f, "create-symlink").await;
    // No link is created at all, whatever its target.
    assert!(std::fs::symlink_metadata(f.path().join("scratch/abs-link")).is_err());
    assert!(std::fs::symlink_metadata(f.path().join("scratch/rel-link")).is_err());
    let detail = out["detail"].as_str().unwrap();
    assert_eq!(detail.matches("not-permitted").count(), 2, "{detail}");
}

// ---- disk quota ------------------------------------------------------------------------

/// `hostile-disk`'s quota (its manifest's `limits.disk`).
const QUOTA: u64 = 1 << 20;
/// What a created file or directory counts (`sandbox::fs::ENTRY_COST`).
const ENTRY: u64 = 4096;

/// A deployment where `hostile-disk` has `/scratch`, read-write.
fn disk_fixture() -> Fixture {
    let f = Fixture::new();
    f.extend_deployment(
        "[[mounts]]\ntool = \"hostile-disk\"\nguest = \"/scratch\"\nhost = \"scratch\"",
    );
    f
}

/// What is under `dir` as the quota counts it: every entry, and every file's length.
fn added(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        total += ENTRY;
        if meta.is_dir() {
            total += added(&path);
        } else {
            total += meta.len();
        }
    }
    total
}

/// Runs a `hostile-disk` attack that must hit the quota: the call fails with `DiskLimit`
/// saying so, the guest saw an error (printed on stdout) and the mount holds no more than the
/// quota. Returns what the guest saw.
async fn disk_attack(f: &Fixture, attack: &str) -> serde_json::Value {
    let report = call(&f.runtime(), "hostile-disk", json!({ "attack": attack })).await;
    assert_eq!(
        failed(&report),
        ErrorKind::DiskLimit,
        "{attack}: {:?}",
        report.record.error
    );
    let message = &report.record.error.as_ref().unwrap().message;
    assert!(message.contains("disk quota of 1MiB"), "{message}");
    let seen: serde_json::Value = serde_json::from_str(report.stdout.trim())
        .unwrap_or_else(|e| panic!("{attack}: stdout {:?}: {e}", report.stdout));
    assert!(
        seen["error"].is_string(),
        "{attack} was not stopped: {seen}"
    );
    let on_disk = added(&f.path().join("scratch"));
    assert!(on_disk <= QUOTA, "{attack} left {on_disk} bytes");
    seen
}

#[tokio::test]
async fn one_write_past_the_disk_quota_is_refused_whole() {
    let f = disk_fixture();
    let seen = disk_attack(&f, "big-write").await;
    assert_eq!(seen["error"], "insufficient-space");
    assert_eq!(
        std::fs::metadata(f.path().join("scratch/big"))
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn many_small_writes_stop_at_the_disk_quota() {
    for attack in ["stream-writes", "append-writes", "zeroes"] {
        let f = disk_fixture();
        let seen = disk_attack(&f, attack).await;
        assert_eq!(seen["error"], "insufficient-space", "{attack}");
        // The file's own entry, then 4KiB chunks until the quota is full: not one byte more.
        assert_eq!(seen["steps"], (QUOTA - ENTRY) / 4096, "{attack}: {seen}");
        assert_eq!(added(&f.path().join("scratch")), QUOTA, "{attack}");
    }
    // Rust's std over wasi-libc, as a tool author writes it. wasi-libc reports a failed
    // stream write as EIO without asking `filesystem-error-code`, so std sees an I/O error.
    let f = disk_fixture();
    let seen = disk_attack(&f, "std-writes").await;
    assert_eq!(seen["steps"], (QUOTA - ENTRY) / 4096, "{seen}");
    assert_eq!(added(&f.path().join("scratch")), QUOTA);
}

#[tokio::test]
async fn growing_a_file_without_writing_it_counts_against_the_disk_quota() {
    for (attack, file) in [("set-size", "sized"), ("seek-write", "sparse")] {
        let f = disk_fixture();
        let seen = disk_attack(&f, attack).await;
        assert_eq!(seen["error"], "insufficient-space", "{attack}");
        let len = std::fs::metadata(f.path().join("scratch").join(file))
            .unwrap()
            .len();
        assert_eq!(len, 0, "{attack}");
    }
}

#[tokio::test]
async fn creating_many_files_or_directories_stops_at_the_disk_quota() {
    for attack in ["many-files", "many-dirs"] {
        let f = disk_fixture();
        let seen = disk_attack(&f, attack).await;
        assert_eq!(seen["error"], "insufficient-space", "{attack}");
        assert_eq!(seen["steps"], QUOTA / ENTRY, "{attack}: {seen}");
        let entries = std::fs::read_dir(f.path().join("scratch")).unwrap().count() as u64;
        assert_eq!(entries, QUOTA / ENTRY, "{attack}");
    }
}

#[tokio::test]
async fn a_tool_cannot_create_symlinks_even_inside_its_mount() {
    let f = disk_fixture();
    let report = call(
        &f.runtime(),
        "hostile-disk",
        json!({ "attack": "symlinks" }),
    )
    .await;
    let out = ok(&report);
    for link in ["absolute", "relative", "inside"] {
        assert_eq!(out[link], "not-permitted", "{link}: {out}");
    }
    assert_eq!(
        files_under(&f.path().join("scratch")),
        vec![f.path().join("scratch/inside.txt")]
    );
}

#[tokio::test]
async fn a_read_only_mount_cannot_be_written_created_in_or_deleted_from() {
    let f = Fixture::new();
    let before = files_under(&f.path().join("data"));
    fs_attack(&f, "write-ro").await;
    fs_attack(&f, "mkdir-ro").await;
    fs_attack(&f, "delete-ro").await;
    fs_attack(&f, "rename-out").await;
    assert_eq!(files_under(&f.path().join("data")), before);
    assert_eq!(
        std::fs::read_to_string(f.path().join("data/hello.txt")).unwrap(),
        "hello from the data mount\n"
    );
}

#[tokio::test]
async fn a_hard_link_out_of_a_read_only_mount_is_refused() {
    let f = Fixture::new();
    fs_attack(&f, "hardlink-out").await;
    assert!(!f.path().join("scratch/hl").exists());
}

// ---- environment -----------------------------------------------------------------------

#[test]
fn the_environment_is_empty_even_when_the_host_has_secrets() {
    let f = Fixture::new();
    let out = f
        .call_cmd("hostile-env", "{}")
        .arg("--json")
        .env("WARDEN_TEST_SECRET", SECRET)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let envelope: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(envelope["output"]["env"], json!([]));
    assert_eq!(envelope["output"]["args"], json!(["hostile-env"]));
    assert!(!stdout(&out).contains(SECRET));
}

// ---- raw network -----------------------------------------------------------------------

async fn net_attack(attack: &str, target: &str) -> serde_json::Value {
    let f = Fixture::new();
    let runtime = f.runtime();
    let report = call(
        &runtime,
        "hostile-net",
        json!({ "attack": attack, "target": target }),
    )
    .await;
    let out = ok(&report).clone();
    assert_eq!(out["escaped"], false, "{attack}: {out}");
    out
}

#[tokio::test]
async fn raw_tcp_is_refused_and_nothing_connects() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let target = listener.local_addr().unwrap().to_string();
    net_attack("tcp", &target).await;
    net_attack("tcp-listen", "").await;
    assert!(
        listener.accept().is_err(),
        "a connection reached the listener"
    );
}

#[tokio::test]
async fn raw_udp_is_refused_and_nothing_arrives() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    net_attack("udp", &socket.local_addr().unwrap().to_string()).await;
    let mut buf = [0u8; 16];
    assert!(socket.recv_from(&mut buf).is_err(), "a datagram arrived");
}

#[tokio::test]
async fn name_lookups_are_refused() {
    let out = net_attack("dns", "localhost:80").await;
    assert!(out["detail"].as_str().unwrap().contains("lookup"), "{out}");
}

// ---- HTTP egress -----------------------------------------------------------------------

/// hostile-http may GET `/allowed/*` on the loopback server by IP, and anything on
/// `localhost` of the same port — but without allow_private, so that name must be refused.
async fn http_fixture() -> (Fixture, LoopbackServer) {
    let server = LoopbackServer::start().await.unwrap();
    let port = server.addr.port();
    let f = Fixture::new();
    f.install_tool(
        "hostile-http",
        Some(&format!(
            r#"[[egress]]
url = "http://127.0.0.1:{port}/allowed/*"
methods = ["GET"]
allow_private = true

[[egress]]
url = "http://localhost:{port}/*"
methods = ["GET"]
"#
        )),
    );
    (f, server)
}

async fn http_attack(f: &Fixture, input: serde_json::Value) -> warden::CallReport {
    let runtime = f.runtime();
    call(&runtime, "hostile-http", input).await
}

/// A request the mediator must refuse: the guest sees HttpRequestDenied, the record names
/// the reason, and the server receives nothing.
async fn assert_denied(
    f: &Fixture,
    server: &LoopbackServer,
    input: serde_json::Value,
    reason: &str,
) {
    let report = http_attack(f, input.clone()).await;
    let out = ok(&report);
    assert_eq!(out["sent"], false, "{input}: {out}");
    assert!(
        out["error"].as_str().unwrap().contains("HttpRequestDenied"),
        "{out}"
    );
    let record = report
        .egress
        .last()
        .unwrap_or_else(|| panic!("no egress record for {input}"));
    assert_eq!(record.decision.as_str(), "deny");
    let why = record.reason.as_deref().unwrap_or("");
    assert!(
        why.contains(reason),
        "{input}: reason `{why}` lacks `{reason}`"
    );
    assert!(
        server.received().is_empty(),
        "the server received {:?}",
        server.received()
    );
}

#[tokio::test]
async fn an_allowed_request_reaches_the_server() {
    let (f, server) = http_fixture().await;
    let report = http_attack(&f, json!({ "url": server.url("/allowed/ok") })).await;
    assert_eq!(ok(&report)["status"], 200);
    assert_eq!(report.egress[0].decision.as_str(), "allow");
    assert_eq!(
        report.egress[0].address.as_deref(),
        Some(server.addr.to_string().as_str())
    );
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn a_host_not_listed_is_refused() {
    let (f, server) = http_fixture().await;
    assert_denied(
        &f,
        &server,
        json!({ "url": "http://example.com/allowed/x" }),
        "not in any egress rule",
    )
    .await;
    assert_denied(
        &f,
        &server,
        json!({ "url": "http://169.254.169.254/latest/meta-data/" }),
        "not in any egress rule",
    )
    .await;
}

#[tokio::test]
async fn a_listed_host_on_another_port_path_or_method_is_refused() {
    let (f, server) = http_fixture().await;
    let other_port = LoopbackServer::start().await.unwrap();
    let url = format!("http://127.0.0.1:{}/allowed/x", other_port.addr.port());
    assert_denied(&f, &server, json!({ "url": url }), "no egress rule allows").await;
    assert!(other_port.received().is_empty());
    assert_denied(&f, &server, json!({ "url": server.url("/admin") }), "path").await;
    assert_denied(
        &f,
        &server,
        json!({ "url": server.url("/allowed/../admin") }),
        "..",
    )
    .await;
    assert_denied(
        &f,
        &server,
        json!({ "url": server.url("/allowed/x"), "method": "POST" }),
        "method POST",
    )
    .await;
    assert_denied(
        &f,
        &server,
        json!({ "url": server.url("/allowed/x"), "method": "DELETE" }),
        "method DELETE",
    )
    .await;
}

#[tokio::test]
async fn a_listed_name_that_resolves_to_a_private_address_is_refused() {
    let (f, server) = http_fixture().await;
    let url = format!("http://localhost:{}/anything", server.addr.port());
    assert_denied(&f, &server, json!({ "url": url }), "loopback address").await;
}

#[tokio::test]
async fn a_tool_cannot_set_its_own_credentials() {
    let (f, server) = http_fixture().await;
    for header in [
        "authorization",
        "Cookie",
        "proxy-authorization",
        "host",
        "x-forwarded-for",
    ] {
        let report = http_attack(
            &f,
            json!({ "url": server.url("/allowed/x"), "headers": [[header, "Bearer forged"]] }),
        )
        .await;
        let out = ok(&report);
        assert_eq!(out["sent"], false, "{header}: {out}");
        assert!(
            out["error"].as_str().unwrap().contains("rejected header"),
            "{header}: {out}"
        );
    }
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn the_request_budget_is_enforced() {
    let (f, server) = http_fixture().await;
    // Lower the budget to one request by rewriting the limits of the installed manifest.
    edit(&f.path().join("tools/hostile-http/tool.toml"), |text| {
        text.replace("[limits]", "[limits]\negress_requests = 0")
    });
    assert_denied(
        &f,
        &server,
        json!({ "url": server.url("/allowed/x") }),
        "request limit",
    )
    .await;
}

#[tokio::test]
async fn waiting_forever_on_a_slow_server_ends_at_the_timeout() {
    let (f, server) = http_fixture().await;
    let started = std::time::Instant::now();
    let report = http_attack(&f, json!({ "url": server.url("/allowed/slow") })).await;
    assert_eq!(failed(&report), ErrorKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(server.received().len(), 1);
}

// ---- CPU, memory, output ---------------------------------------------------------------

#[tokio::test]
async fn an_infinite_loop_is_stopped_by_the_cpu_limit() {
    let f = Fixture::new();
    // The wall deadline far past the CPU budget: a loaded machine, running the loop in
    // slices, still reaches the budget first.
    spinner_limits(&f, "60s", "300ms");
    let report = call(&f.runtime(), "hostile-cpu", json!({ "attack": "loop" })).await;
    assert_eq!(failed(&report), ErrorKind::CpuLimit);
}

#[tokio::test]
async fn deep_recursion_is_a_stack_overflow() {
    let f = Fixture::new();
    let report = call(
        &f.runtime(),
        "hostile-cpu",
        json!({ "attack": "recursion" }),
    )
    .await;
    assert_eq!(failed(&report), ErrorKind::StackOverflow);
}

#[tokio::test]
async fn a_memory_bomb_hits_the_memory_limit() {
    let f = Fixture::new();
    let runtime = f.runtime();
    // 16 MiB fits in the 32 MiB limit; 1 GiB does not.
    assert_eq!(
        ok(&call(&runtime, "hostile-memory", json!({ "megabytes": 16 })).await),
        &json!(16 << 20)
    );
    let report = call(&runtime, "hostile-memory", json!({ "megabytes": 1024 })).await;
    assert_eq!(failed(&report), ErrorKind::MemoryLimit);
}

#[tokio::test]
async fn a_stdout_flood_is_truncated_without_killing_the_tool() {
    let f = Fixture::new();
    let report = call(
        &f.runtime(),
        "hostile-flood",
        json!({ "attack": "stdout", "megabytes": 4 }),
    )
    .await;
    assert_eq!(ok(&report)["printed_megabytes"], 4);
    assert!(report.stdio_truncated);
    assert_eq!(report.stdout.len(), 16 << 10);
    assert_eq!(report.stderr.len(), 16 << 10);
}

#[tokio::test]
async fn an_oversized_output_hits_the_output_limit() {
    let f = Fixture::new();
    let report = call(
        &f.runtime(),
        "hostile-flood",
        json!({ "attack": "output", "megabytes": 1 }),
    )
    .await;
    assert_eq!(failed(&report), ErrorKind::OutputLimit);
}

#[tokio::test]
async fn the_sandbox_is_fresh_for_every_call() {
    // The same runtime runs a trapping call and then a healthy one: no state carries over.
    let f = Fixture::new();
    let runtime = f.runtime();
    assert_eq!(
        failed(&call(&runtime, "hostile-memory", json!({ "megabytes": 1024 })).await),
        ErrorKind::MemoryLimit
    );
    assert_eq!(
        ok(&call(&runtime, "hostile-memory", json!({ "megabytes": 8 })).await),
        &json!(8 << 20)
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (f, server) = http_fixture().await;
    let report = http_attack(&f, json!({ "url": server.url("/allowed/redirect") })).await;
    assert_eq!(ok(&report)["status"], 302);
    assert_eq!(report.egress.len(), 1, "{:?}", report.egress);
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn the_response_byte_budget_is_enforced() {
    let (f, server) = http_fixture().await;
    edit(&f.path().join("tools/hostile-http/tool.toml"), |text| {
        text.replace("[limits]", "[limits]\nresponse_bytes = \"1KiB\"")
    });
    let report = http_attack(&f, json!({ "url": server.url("/allowed/big") })).await;
    let out = ok(&report);
    assert!(out["body"].as_str().unwrap().starts_with("Err"), "{out}");
    let record = &report.egress[0];
    assert!(
        record
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("response byte limit"),
        "{record:?}"
    );
    assert!(record.response_bytes <= 64 * 1024);
}

// ---- raw request lines (hostile-egress) ------------------------------------------------

/// hostile-egress may GET anything under `prefix` (`/allowed/*`, or `/*` for ``) on the
/// loopback server.
async fn raw_fixture(prefix: &str) -> (Fixture, LoopbackServer) {
    let server = LoopbackServer::start().await.unwrap();
    let f = Fixture::new();
    f.install_tool(
        "hostile-egress",
        Some(&loopback_rule(&server.url(prefix), &[], None)),
    );
    (f, server)
}

/// The loopback server's authority, `127.0.0.1:PORT`.
fn authority(server: &LoopbackServer) -> String {
    server.addr.to_string()
}

/// The state directory's size in bytes (the SQLite file and its WAL).
fn state_bytes(f: &Fixture) -> u64 {
    files_under(&f.path().join("state"))
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

/// `warden call hostile-egress --json` and the envelope it printed.
fn raw_call_cli(
    f: &Fixture,
    requests: serde_json::Value,
) -> (std::process::Output, serde_json::Value) {
    let input = json!({ "requests": requests }).to_string();
    let out = f.call_cli("hostile-egress", &input, &["--json"]);
    let envelope = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| {
        panic!(
            "{e}: exit {:?}\n{}{}",
            out.status.code(),
            stdout(&out),
            stderr(&out)
        )
    });
    (out, envelope)
}

/// Odd request lines straight from `wasi:http`: none crashes `warden call` (a `?x` path once
/// panicked the host: exit 101 and no audit record), and the call is in the audit chain.
#[tokio::test(flavor = "multi_thread")]
async fn odd_request_lines_do_not_crash_the_host_and_the_call_is_audited() {
    let (f, server) = raw_fixture("").await;
    let here = authority(&server);
    let port = server.addr.port();
    let odd = |authority: &str, path: Option<&str>, method: &str| json!({ "authority": authority, "path": path, "method": method });
    let requests = json!([
        odd(&here, Some("?x"), "GET"),
        odd(&here, Some(""), "GET"),
        odd(&here, None, "GET"),
        odd(&here, Some("//x"), "GET"),
        odd(&here, Some("/allowed/../x"), "GET"),
        odd(
            &here,
            Some(&format!("/allowed/{}", "a".repeat(5_000))),
            "GET"
        ),
        odd(&format!("127.0.0.1.:{port}"), Some("/allowed/?x"), "get"),
        odd(
            &format!("[::ffff:127.0.0.1]:{port}"),
            Some("/allowed/x"),
            "GET"
        ),
        odd(&format!("127.0.0.1:{port}0"), Some("/allowed/x"), "GET"),
        odd(&format!("u@127.0.0.1:{port}"), Some("/allowed/x"), "GET"),
        odd("2130706433", Some("/allowed/x"), "GET"),
        odd(&here, Some("/allowed/x"), "bReW"),
        odd(&here, Some("/allowed/x"), &"G".repeat(10_000)),
    ]);
    let (out, envelope) = raw_call_cli(&f, requests);
    assert_exit(&out, 0);
    let results = envelope["output"].as_array().unwrap();
    assert_eq!(results[0]["status"], 200, "{envelope}");
    let verify = f.run(&["audit", "verify", "--json"]);
    assert_exit(&verify, 0);
    let answer: serde_json::Value = serde_json::from_str(&stdout(&verify)).unwrap();
    assert_eq!(answer["chain"]["calls"], 1, "{answer}");
}

/// What the upstream receives is the normal form the rule and the policy decided on: the
/// method in uppercase, the path decoded and resolved, `host` the authority the rule matched.
#[tokio::test]
async fn the_upstream_receives_the_normal_form_that_was_decided_on() {
    let (f, server) = raw_fixture("/allowed").await;
    let port = server.addr.port();
    let report = call(
        &f.runtime(),
        "hostile-egress",
        json!({ "requests": [
            { "authority": format!("127.0.0.1.:{port}"), "method": "get",
              "path": "//allowed/%61dmin/%7Euser?q=%61" },
            { "authority": format!("127.0.0.1:{port}"), "path": "/allowed/?x" },
        ]}),
    )
    .await;
    let out = ok(&report);
    assert_eq!(out[0]["status"], 200, "{out}");
    assert_eq!(out[1]["status"], 200, "{out}");
    let received = server.received();
    let [first, second] = received.as_slice() else {
        panic!("{received:?}")
    };
    assert_eq!(first.method, "GET");
    assert_eq!(first.path, "/allowed/admin/~user");
    assert_eq!(first.query.as_deref(), Some("q=%61"));
    let host = |r: &warden_test_support::loopback::Received| {
        r.headers
            .iter()
            .find(|(k, _)| k == "host")
            .map(|(_, v)| v.clone())
    };
    assert_eq!(host(first), Some(format!("127.0.0.1:{port}")));
    assert_eq!(
        (second.path.as_str(), second.query.as_deref()),
        ("/allowed/", Some("x"))
    );
    assert_eq!(report.egress[0].method, "GET");
    assert_eq!(
        report.egress[0].url(),
        format!("http://127.0.0.1:{port}/allowed/admin/~user")
    );
}

/// A tool looping on denied requests with long URLs once grew the state file by 56 MB in one
/// call: now the denials are budgeted (the call ends with its own kind) and recorded bounded.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_denied_requests_ends_the_call_and_leaves_the_state_small() {
    let (f, server) = raw_fixture("/allowed").await;
    let long = format!("/denied/{}", "x".repeat(2000));
    let (out, envelope) = raw_call_cli(
        &f,
        json!([{ "authority": authority(&server), "path": long, "repeat": 100_000 }]),
    );
    assert_exit(&out, 5);
    assert_eq!(
        envelope["error"]["kind"], "denied_request_limit",
        "{envelope}"
    );
    let egress = envelope["egress"].as_array().unwrap();
    assert_eq!(
        egress.len(),
        warden::sandbox::http::MAX_DENIED_REQUESTS as usize
    );
    assert!(egress.iter().all(|e| e["decision"] == "deny"));
    assert!(server.received().is_empty());
    let size = state_bytes(&f);
    assert!(size < 1 << 20, "the state is {size} bytes");
}

/// However many requests a call makes, it keeps a bounded number of records and one that
/// counts the rest.
#[tokio::test]
async fn a_call_keeps_a_bounded_number_of_egress_records() {
    let (f, server) = raw_fixture("/allowed").await;
    edit(&f.path().join("tools/hostile-egress/tool.toml"), |text| {
        text.replace("[limits]", "[limits]\negress_requests = 100")
    });
    let kept = warden::sandbox::http::MAX_RECORDS;
    let sent = kept + 16;
    let report = call(
        &f.runtime(),
        "hostile-egress",
        json!({ "requests": [
            { "authority": authority(&server), "path": "/allowed/x", "repeat": sent },
        ]}),
    )
    .await;
    assert_eq!(ok(&report)[0]["status"], 200);
    assert_eq!(server.received().len(), sent);
    assert_eq!(report.egress.len(), kept + 1);
    let last = report.egress.last().unwrap();
    assert_eq!(last.decision.as_str(), "omitted");
    assert!(
        last.reason.as_deref().unwrap().starts_with("16 more"),
        "{last:?}"
    );
}

/// A URL over the bound is refused before anything else, with a reason, and recorded cut.
#[tokio::test]
async fn a_url_over_the_bound_is_refused_with_a_reason() {
    let (f, server) = raw_fixture("/allowed").await;
    let bound = warden::sandbox::egress::MAX_URL_BYTES;
    let report = call(
        &f.runtime(),
        "hostile-egress",
        json!({ "requests": [
            { "authority": authority(&server), "path": format!("/allowed/{}", "a".repeat(bound)) },
        ]}),
    )
    .await;
    let out = ok(&report);
    assert_eq!(out[0]["sent"], false, "{out}");
    assert!(
        out[0]["error"]
            .as_str()
            .unwrap()
            .contains("HttpRequestDenied")
    );
    let [record] = report.egress.as_slice() else {
        panic!("{:?}", report.egress)
    };
    assert_eq!(record.decision.as_str(), "deny");
    let why = record.reason.as_deref().unwrap();
    assert!(
        why.contains(&format!("more than the limit of {bound}")),
        "{why}"
    );
    assert!(
        record.url().len() <= bound + 4,
        "{} bytes recorded",
        record.url().len()
    );
    assert!(server.received().is_empty());
}

// ---- spinning tools share the workers; whole-call limits --------------------------------

/// Sets `hostile-cpu`'s wall timeout and CPU budget.
fn spinner_limits(f: &Fixture, timeout: &str, cpu: &str) {
    edit(&f.path().join("tools/hostile-cpu/tool.toml"), |text| {
        text.replace(
            "timeout = \"1s\"",
            &format!("timeout = \"{timeout}\"\ncpu = \"{cpu}\""),
        )
    });
}

/// Like a server: two worker threads for many concurrent calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_spinning_tools_do_not_hold_up_a_hello() {
    let f = Fixture::new();
    spinner_limits(&f, "3s", "5m");
    let runtime = std::sync::Arc::new(f.runtime());
    let finished = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let spawn = |tool: &'static str, input: serde_json::Value| {
        let (runtime, finished) = (runtime.clone(), finished.clone());
        tokio::spawn(async move {
            let report = call(&runtime, tool, input).await;
            finished.lock().unwrap().push(tool);
            report
        })
    };
    let spinners: Vec<_> = (0..8)
        .map(|_| spawn("hostile-cpu", json!({ "attack": "loop" })))
        .collect();
    // Let the spinners take both workers before the hello arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hello = spawn("hello", json!({ "name": "world" }));
    ok(&hello.await.unwrap());
    for spinner in spinners {
        // Each ends at its wall deadline, long before its CPU budget.
        assert_eq!(failed(&spinner.await.unwrap()), ErrorKind::Timeout);
    }
    assert_eq!(finished.lock().unwrap()[0], "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinner_with_cpu_to_spare_ends_at_its_wall_deadline() {
    let f = Fixture::new();
    spinner_limits(&f, "1s", "5m");
    let report = call(&f.runtime(), "hostile-cpu", json!({ "attack": "loop" })).await;
    assert_eq!(failed(&report), ErrorKind::Timeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_spinner_is_stopped() {
    let f = Fixture::new();
    spinner_limits(&f, "5m", "5m");
    let runtime = f.runtime();
    let cancel = tokio_util::sync::CancellationToken::new();
    let spinning = {
        let mut request =
            crate::common::request(AGENT, "hostile-cpu", json!({ "attack": "loop" }), None);
        request.cancel = Some(cancel.clone());
        runtime.call(request)
    };
    let cancelling = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    };
    let (report, ()) = tokio::join!(spinning, cancelling);
    assert_eq!(failed(&report), ErrorKind::Cancelled);
}

// ---- memories, pool slots, host handles, error text ----------------------------------

#[tokio::test]
async fn several_memories_together_hit_the_memory_limit() {
    // Three memories of 16 MiB: each under the 32 MiB limit, together over it.
    let f = Fixture::new();
    let report = call(&f.runtime(), "hostile-memories", json!({})).await;
    assert_eq!(
        failed(&report),
        ErrorKind::MemoryLimit,
        "{:?}",
        report.record.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_cannot_take_every_pool_slot() {
    let f = Fixture::new();
    let runtime = std::sync::Arc::new(f.runtime());
    ok(&call(&runtime, "hello", json!({ "name": "first" })).await);
    // A component with a memory in every slot of the pool, spinning while it holds them.
    let hog = {
        let runtime = runtime.clone();
        tokio::spawn(async move { call(&runtime, "hostile-slots", json!({})).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok(&call(&runtime, "hello", json!({ "name": "second" })).await);
    let refused = hog.await.unwrap();
    assert_eq!(failed(&refused), ErrorKind::InvalidTool);
    let message = refused.record.error.unwrap().message;
    assert!(
        message.contains("exceeds the configured maximum"),
        "{message}"
    );
}

fn fds_fixture() -> Fixture {
    let f = Fixture::new();
    f.extend_deployment("[[mounts]]\ntool = \"hostile-fds\"\nguest = \"/data\"\nhost = \"data\"");
    f
}

#[tokio::test]
async fn a_tool_cannot_hold_open_files_without_bound() {
    let f = fds_fixture();
    let runtime = f.runtime();
    let report = call(
        &runtime,
        "hostile-fds",
        json!({ "attack": "files", "count": 5000 }),
    )
    .await;
    assert_eq!(
        failed(&report),
        ErrorKind::ResourceLimit,
        "{:?}",
        report.output
    );
    // The host is unharmed: the next call opens files as usual.
    assert_eq!(
        ok(&call(
            &runtime,
            "hostile-fds",
            json!({ "attack": "files", "count": 10 })
        )
        .await)["opened"],
        10
    );
}

#[tokio::test]
async fn a_tool_cannot_make_http_fields_without_bound() {
    let f = fds_fixture();
    let runtime = f.runtime();
    let many = call(
        &runtime,
        "hostile-fds",
        json!({ "attack": "fields", "count": 100000 }),
    )
    .await;
    assert_eq!(failed(&many), ErrorKind::ResourceLimit, "{:?}", many.output);
    // One fields resource grows until refused, far below what the host could be made to hold.
    let big = call(
        &runtime,
        "hostile-fds",
        json!({ "attack": "headers", "count": 4096 }),
    )
    .await;
    assert_eq!(failed(&big), ErrorKind::ResourceLimit, "{:?}", big.output);
    let kib: u64 = big.stdout.lines().last().unwrap().parse().unwrap();
    assert!(kib < 32, "{kib} KiB of headers");
}

#[tokio::test]
async fn a_huge_error_message_is_cut() {
    let f = fds_fixture();
    let runtime = f.runtime();
    for (attack, kind) in [
        ("error", ErrorKind::ToolError),
        ("invalid", ErrorKind::InvalidInput),
    ] {
        let report = call(
            &runtime,
            "hostile-fds",
            json!({ "attack": attack, "count": 8 }),
        )
        .await;
        assert_eq!(failed(&report), kind);
        let message = report.record.error.unwrap().message;
        assert!(
            message.len() <= 8 << 10,
            "{attack}: {} bytes",
            message.len()
        );
        assert!(
            message.ends_with(" bytes in all]"),
            "{attack}: not marked as cut"
        );
    }
}
