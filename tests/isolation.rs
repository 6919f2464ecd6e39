//! Every hostile tool in `tools/hostile/`, run through the real runtime: each test asserts the
//! specific containment — the error kind, and that nothing outside was touched or reached.

mod common;

use common::*;
use serde_json::json;
use std::net::{TcpListener, UdpSocket};
use std::time::Duration;
use warden::ErrorKind;
use warden::loopback::LoopbackServer;

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
        report.error
    );
    let message = &report.error.as_ref().unwrap().message;
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
    assert_eq!(record.decision, "deny");
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
    assert_eq!(report.egress[0].decision, "allow");
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
