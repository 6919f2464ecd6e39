//! The audit chain: one record per call and per egress request, committed before the result
//! is returned, and one when a tool starts; any edit, deletion or reordering is found and
//! named by `warden audit verify`; concurrent and killed processes leave a valid chain with
//! every returned call in it, and a call killed while its tool ran is named as unfinished;
//! what agents and tools chose is printed escaped, and an unproven agent name as a claim.

use crate::common::*;
use serde_json::json;
use std::io::BufRead as _;
use std::process::Stdio;
use std::sync::Arc;
use warden::call::Caller;
use warden::credentials::Secret;
use warden::identity::assertion;
use warden_test_support::loopback::{Hold, LoopbackServer};

fn verify(f: &Fixture) -> std::process::Output {
    f.run(&["audit", "verify"])
}

fn db(f: &Fixture) -> rusqlite::Connection {
    rusqlite::Connection::open(f.path().join("state/warden.db")).unwrap()
}

/// The chain verifies and holds this many call records.
fn assert_valid(f: &Fixture, calls: usize) {
    let out = f.run(&["audit", "verify", "--json"]);
    assert_exit(&out, 0);
    let answer: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["chain"]["calls"], calls, "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_and_request_is_recorded_and_explained_without_the_credential() {
    let server = LoopbackServer::start().await.unwrap();
    let f = Fixture::new();
    install_minted_http_get(&f, &server.url(""));
    let runtime = f.runtime();
    let fetched = call(&runtime, "http-get", json!({ "url": server.url("/page") })).await;
    ok(&fetched);
    let denied = runtime
        .call(request(
            "limited",
            "read-file",
            json!({ "path": "hello.txt" }),
            None,
        ))
        .await;
    assert_eq!(failed(&denied), warden::ErrorKind::Denied);
    drop(runtime);

    assert_valid(&f, 2);
    let shown = f.run(&["audit", "show", &fetched.record.call_id]);
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    let text = stdout(&shown);
    for expected in [
        "agent      tester",
        "tool       http-get sha256:",
        "decision   allow by tester-invokes-anything",
        "GET http://127.0.0.1",
        "/page -> allow 200, 54 bytes by egress-as-manifests-ask",
        "credential upstream (Minted jti ",
        "outcome    ok",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let records: serde_json::Value = serde_json::from_str(&stdout(&f.run(&[
        "audit",
        "show",
        &denied.record.call_id,
        "--json",
    ])))
    .unwrap();
    assert_eq!(records[0]["record"], "call");
    assert_eq!(records[0]["agent"], "limited");
    assert_eq!(records[0]["decision"]["outcome"], "deny");
    assert_eq!(records[0]["error"]["kind"], "denied");
    assert!(
        records[0].get("input").is_none(),
        "inputs are not kept by default"
    );

    // The minted token the upstream saw is nowhere in the state directory.
    let token = tokens(&server)
        .pop()
        .expect("the upstream got a credential");
    for file in files_under(&f.path().join("state")) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "{} holds the token",
            file.display()
        );
    }

    let tail = stdout(&f.run(&["audit", "tail", "--json"]));
    let kinds: Vec<String> = tail
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["record"].to_string())
        .collect();
    // The fetch started (its tool ran), then ended with its request; the denied call ran nothing.
    assert_eq!(
        kinds,
        [r#""started""#, r#""call""#, r#""egress""#, r#""call""#]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn inputs_are_recorded_scrubbed_when_the_deployment_asks() {
    let f = Fixture::new();
    f.extend_deployment("[audit]\nrecord_input = true\n");
    let report = call(
        &f.runtime(),
        "hello",
        json!({ "name": "Ada", "token": "t-0p3n" }),
    )
    .await;
    let records: serde_json::Value = serde_json::from_str(&stdout(&f.run(&[
        "audit",
        "show",
        &report.record.call_id,
        "--json",
    ])))
    .unwrap();
    assert_eq!(
        records[0]["input"],
        json!({ "name": "Ada", "token": "[REDACTED]" })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edited_deleted_or_moved_record_is_named() {
    let f = Fixture::new();
    let runtime = f.runtime();
    for name in ["a", "b", "c", "d"] {
        ok(&call(&runtime, "hello", json!({ "name": name })).await);
    }
    drop(runtime);
    assert_valid(&f, 4);
    let conn = db(&f);
    let broken_at = |seq: u64| {
        let out = verify(&f);
        assert_eq!(out.status.code(), Some(1));
        let said = stderr(&out);
        assert!(said.contains(&format!("record #{seq} ")), "{said}");
        said
    };

    // Edited: the decision of record 2 turned into something else.
    let body: String = conn
        .query_row("SELECT body FROM audit WHERE seq = 2", [], |r| r.get(0))
        .unwrap();
    conn.execute(
        "UPDATE audit SET body = ?1 WHERE seq = 2",
        [body.replace("\"tester\"", "\"limited\"")],
    )
    .unwrap();
    assert!(broken_at(2).contains("edited"));
    conn.execute("UPDATE audit SET body = ?1 WHERE seq = 2", [&body])
        .unwrap();
    assert_valid(&f, 4);

    // Deleted: record 3 gone; record 4 no longer follows.
    conn.execute(
        "CREATE TABLE saved AS SELECT * FROM audit WHERE seq = 3",
        [],
    )
    .unwrap();
    conn.execute("DELETE FROM audit WHERE seq = 3", []).unwrap();
    assert!(broken_at(4).contains("deleted"));
    conn.execute("INSERT INTO audit SELECT * FROM saved", [])
        .unwrap();
    assert_valid(&f, 4);

    // Moved: records 2 and 3 swap places.
    conn.execute_batch(
        "UPDATE audit SET seq = 100 WHERE seq = 2;
         UPDATE audit SET seq = 2 WHERE seq = 3;
         UPDATE audit SET seq = 3 WHERE seq = 100;",
    )
    .unwrap();
    broken_at(2);
}

/// `warden bench hello` as tester: `calls` calls in one process.
fn bench(f: &Fixture, calls: usize) -> std::process::Command {
    let mut cmd = f.cli();
    cmd.args([
        "bench",
        "hello",
        "--agent",
        AGENT,
        "--input",
        r#"{"name":"x"}"#,
    ])
    .args(["--calls", &calls.to_string(), "--concurrency", "4"]);
    cmd
}

#[test]
fn two_processes_write_one_valid_chain() {
    let f = Fixture::new();
    let runs: Vec<_> = (0..2)
        .map(|_| bench(&f, 500).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert_valid(&f, 1000);
}

#[test]
fn a_killed_process_leaves_a_valid_chain_with_every_returned_call() {
    let f = Fixture::new();
    let mut burst = bench(&f, 1_000_000)
        .arg("--print-ids")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(burst.stdout.take().unwrap()).lines();
    let mut returned: Vec<String> = (0..300).map(|_| lines.next().unwrap().unwrap()).collect();
    // SIGKILL: no destructor, no flush, in the middle of calls.
    burst.kill().unwrap();
    burst.wait().unwrap();
    returned.extend(lines.map_while(Result::ok));

    // Calls killed while their tool ran are named, but the chain is intact: exit 0.
    let out = verify(&f);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let conn = db(&f);
    for id in &returned {
        let found: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM audit WHERE call_id = ?1 AND body LIKE '{\"record\":\"call\"%'",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(found, 1, "call {id} was returned but is not in the chain");
    }
}

/// The records `warden audit tail --json` prints.
fn tail_records(f: &Fixture) -> Vec<serde_json::Value> {
    stdout(&f.run(&["audit", "tail", "--json", "-n", "1000"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_killed_while_its_tool_runs_is_named_as_started_and_never_finished() {
    // The upstream tells the test when the tool's request arrives, and never answers it.
    let (arrived, mut running) = tokio::sync::mpsc::unbounded_channel();
    let hold: Hold = Arc::new(move |_| {
        let _ = arrived.send(());
        Box::pin(std::future::pending::<()>())
    });
    let server = LoopbackServer::start_with(Some(hold)).await.unwrap();
    let f = Fixture::new();
    f.install_tool(
        "hostile-http",
        Some(&loopback_rule(&server.url(""), &[], None)),
    );
    let input = json!({ "url": server.url("/hold") }).to_string();
    let mut cli = f
        .call_cmd("hostile-http", &input)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A guard against a hang, not a timing assertion: the request arrives within seconds.
    tokio::time::timeout(std::time::Duration::from_secs(120), running.recv())
        .await
        .expect("the tool's request never reached the upstream");
    // SIGKILL while the tool waits on its request: the tool's effect (the request) happened.
    cli.kill().unwrap();
    cli.wait().unwrap();

    let records = tail_records(&f);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["record"], "started");
    assert_eq!(records[0]["tool"], "hostile-http");
    assert_eq!(records[0]["agent"], AGENT);
    assert_eq!(records[0]["decision"]["outcome"], "allow");
    let id = records[0]["call_id"].as_str().unwrap().to_string();

    // The chain is valid (exit 0), and the unfinished call is named in both forms.
    let out = verify(&f);
    assert_exit(&out, 0);
    let said = stdout(&out);
    assert!(
        said.contains(&format!("call {id} started (record #1) and never finished")),
        "{said}"
    );
    let out = f.run(&["audit", "verify", "--json"]);
    assert_exit(&out, 0);
    let answer: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["valid"], true);
    assert_eq!(answer["chain"]["calls"], 0);
    assert_eq!(
        answer["chain"]["unfinished"],
        json!([{ "seq": 1, "call_id": id }])
    );

    let shown = f.run(&["audit", "show", &id]);
    assert_exit(&shown, 0);
    let text = stdout(&shown);
    for expected in [
        "agent      tester",
        "tool       hostile-http sha256:",
        "decision   allow by tester-invokes-anything",
        "outcome    started, never finished",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }

    // A call that does finish is no longer named.
    ok(&call(&f.runtime(), "hello", json!({ "name": "x" })).await);
    let out = f.run(&["audit", "verify", "--json"]);
    let answer: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["chain"]["calls"], 1);
    assert_eq!(answer["chain"]["unfinished"].as_array().unwrap().len(), 1);
}

/// A call whose final record cannot be written gives nothing of what its tool produced: not
/// its result, nor the stdout that is a command's result, nor its stderr.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_whose_record_cannot_be_written_gives_nothing_of_its_tool() {
    let f = Fixture::new();
    let runtime = f.runtime();
    let echoed = call(
        &runtime,
        "echo-command",
        json!({ "v": "kept-from-the-caller" }),
    )
    .await;
    assert!(
        echoed.stdout.contains("kept-from-the-caller"),
        "{}",
        echoed.stdout
    );
    // The store refuses every call's final record from now on, as a full disk would.
    db(&f)
        .execute_batch(
            "CREATE TRIGGER refuse_final BEFORE INSERT ON audit
             WHEN NEW.body LIKE '%\"record\":\"call\"%'
             BEGIN SELECT RAISE(ABORT, 'the disk is full'); END;",
        )
        .unwrap();
    let report = call(
        &runtime,
        "echo-command",
        json!({ "v": "kept-from-the-caller" }),
    )
    .await;
    assert_eq!(failed(&report), warden::ErrorKind::Internal);
    let said = &report.record.error.as_ref().unwrap().message;
    assert!(said.contains("result is withheld"), "{said}");
    assert_eq!(report.output, None);
    let envelope = serde_json::to_string(&report).unwrap();
    assert!(!envelope.contains("kept-from-the-caller"), "{envelope}");
}

/// Characters a terminal acts on (clear the screen, return to the line's start, reverse the
/// text) appear in none of `text`.
fn assert_no_terminal_controls(text: &str) {
    for c in ['\u{1b}', '\r', '\u{202e}', '\u{9b}'] {
        assert!(!text.contains(c), "{c:?} printed raw in\n{text:?}");
    }
}

#[test]
fn text_chosen_by_agents_and_tools_is_printed_escaped() {
    let f = Fixture::new();
    let label = "ci\u{1b}[2J\rjob\u{202e}";
    // hostile-cpu names an unknown attack in its error: the tool chooses that text.
    let input = json!({ "attack": "\u{1b}[2J\rall good\u{9b}" }).to_string();
    let out = f.call_cli("hostile-cpu", &input, &["--origin-label", label, "--json"]);
    assert_exit(&out, 2);
    let id = serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap()["call_id"]
        .as_str()
        .unwrap()
        .to_string();
    // An unknown tool's name is the agent's choice too.
    let evil_tool = "evil\u{1b}[2J\rtool";
    assert_exit(&f.call_cli(evil_tool, "{}", &[]), 2);

    let shown = f.run(&["audit", "show", &id]);
    assert_exit(&shown, 0);
    let text = stdout(&shown);
    assert_no_terminal_controls(&text);
    for expected in [
        r"origin     cli (ci\u{1b}[2J\rjob\u{202e})",
        r"unknown attack \u{1b}[2J\rall good\u{9b}",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let tail = stdout(&f.run(&["audit", "tail"]));
    assert_no_terminal_controls(&tail);
    assert!(tail.contains(r"evil\u{1b}[2J\rtool"), "{tail}");

    // The JSON forms escape them too, and still carry the text exactly.
    let json_out = stdout(&f.run(&["audit", "show", &id, "--json"]));
    assert_no_terminal_controls(&json_out);
    let records: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(records[0]["origin"]["label"], label);
    let tail_json = stdout(&f.run(&["audit", "tail", "--json"]));
    assert_no_terminal_controls(&tail_json);
    assert_eq!(tail_records(&f).last().unwrap()["tool"], evil_tool);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_that_fails_authentication_records_the_agent_only_as_claimed() {
    let f = Fixture::new();
    // tester signs an assertion that claims to come from `limited`, a real agent.
    let input = json!({ "name": "x" });
    let forged = assertion::sign(&agent_key(AGENT), "limited", "hello", &input);
    let report = f
        .runtime()
        .call(warden::CallRequest::new(
            "hello",
            input,
            Caller::Assertion(Secret::new(forged)),
        ))
        .await;
    assert_eq!(failed(&report), warden::ErrorKind::Denied);
    assert_eq!(report.record.agent, None);
    assert_eq!(report.record.claimed_agent.as_deref(), Some("limited"));

    let text = stdout(&f.run(&["audit", "show", &report.record.call_id]));
    assert!(
        text.contains("agent      (claimed limited, not authenticated)"),
        "{text}"
    );
    assert!(!text.contains("agent      limited"), "{text}");
    let records: serde_json::Value = serde_json::from_str(&stdout(&f.run(&[
        "audit",
        "show",
        &report.record.call_id,
        "--json",
    ])))
    .unwrap();
    assert_eq!(records[0]["agent"], serde_json::Value::Null);
    assert_eq!(records[0]["claimed_agent"], "limited");
    let tail = stdout(&f.run(&["audit", "tail"]));
    assert!(
        tail.contains("(claimed limited, not authenticated)"),
        "{tail}"
    );
}
