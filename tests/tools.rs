//! The example tools do their jobs, through the real runtime.

use crate::common::*;
use serde_json::json;
use warden::ErrorKind;
use warden_test_support::loopback::LoopbackServer;

#[tokio::test]
async fn hello_greets_and_sees_its_call_context() {
    let f = Fixture::new();
    let report = call(&f.runtime(), "hello", json!({ "name": "Ada" })).await;
    let out = ok(&report);
    assert_eq!(out["greeting"], "Hello, Ada!");
    assert_eq!(out["agent"], AGENT);
    assert_eq!(out["call_id"], report.record.call_id.as_str());
    assert_eq!(
        report
            .record
            .tool_digest
            .as_deref()
            .map(|d| d.starts_with("sha256:")),
        Some(true)
    );
}

#[tokio::test]
async fn read_file_reads_through_the_read_only_mount() {
    let f = Fixture::new();
    let report = call(&f.runtime(), "read-file", json!({ "path": "hello.txt" })).await;
    assert_eq!(ok(&report)["content"], "hello from the data mount\n");
    let missing = call(&f.runtime(), "read-file", json!({ "path": "nope.txt" })).await;
    assert_eq!(failed(&missing), ErrorKind::ToolError);
}

#[tokio::test]
async fn write_note_writes_into_the_read_write_mount() {
    let f = Fixture::new();
    let report = call(
        &f.runtime(),
        "write-note",
        json!({ "name": "todo.txt", "text": "buy milk" }),
    )
    .await;
    assert_eq!(ok(&report)["bytes"], 8);
    assert_eq!(
        std::fs::read_to_string(f.path().join("notes/todo.txt")).unwrap(),
        "buy milk"
    );
}

#[tokio::test]
async fn http_get_fetches_from_an_allowed_upstream() {
    let server = LoopbackServer::start().await.unwrap();
    let f = Fixture::new();
    let rule = loopback_rule(&server.url(""), &[], None);
    f.install_tool("http-get", Some(&rule));
    let runtime = f.runtime();
    // Repeated calls on one warm runtime: each GET must work (the guest body is drained).
    for i in 0..5 {
        let report = call(
            &runtime,
            "http-get",
            json!({ "url": server.url(&format!("/item/{i}")) }),
        )
        .await;
        let out = ok(&report);
        assert_eq!(out["status"], 200);
        assert!(
            out["body"]
                .as_str()
                .unwrap()
                .contains(&format!("/item/{i}"))
        );
        assert_eq!(report.egress.len(), 1);
        assert_eq!(report.egress[0].decision.as_str(), "allow");
        assert_eq!(report.egress[0].status, Some(200));
        assert!(report.egress[0].response_bytes > 0);
    }
    let received = server.received();
    assert_eq!(received.len(), 5);
    assert!(received.iter().all(|r| r.method == "GET"));
    assert!(
        received
            .iter()
            .all(|r| !r.headers.iter().any(|(k, _)| k == "authorization"))
    );
}

#[tokio::test]
async fn a_plain_command_component_runs_with_json_on_stdin_and_stdout() {
    let f = Fixture::new();
    let runtime = f.runtime();
    let report = call(&runtime, "echo-command", json!({ "a": [1, 2] })).await;
    assert_eq!(ok(&report), &json!({ "echo": { "a": [1, 2] } }));
    let failing = call(&runtime, "echo-command", json!({ "fail": true })).await;
    assert_eq!(failed(&failing), ErrorKind::ToolError);
    let message = failing.record.error.unwrap().message;
    assert!(message.contains("asked to fail"), "{message}");
}

#[tokio::test]
async fn input_is_checked_against_the_tool_schema_before_it_runs() {
    let f = Fixture::new();
    let report = call(&f.runtime(), "hello", json!({ "nom": "Ada" })).await;
    assert_eq!(failed(&report), ErrorKind::InvalidInput);
    let message = report.record.error.unwrap().message;
    assert!(
        message.contains("name") && message.contains("hello"),
        "{message}"
    );
}

#[tokio::test]
async fn an_agent_may_only_call_the_tools_it_is_allowed() {
    let f = Fixture::new();
    let runtime = f.runtime();
    let input = json!({ "name": "x", "text": "y" });
    let denied = runtime
        .call(request("limited", "write-note", input.clone(), None))
        .await;
    assert_eq!(failed(&denied), ErrorKind::Denied);
    assert!(denied.record.decision.reasons[0].contains("deny by default"));
    assert!(!f.path().join("notes/x").exists());
    let stranger = runtime
        .call(request("stranger", "hello", input, None))
        .await;
    assert_eq!(failed(&stranger), ErrorKind::Denied);
    assert!(stranger.record.decision.reasons[0].contains("not registered"));
}

/// A tool that traps (a Rust panic here; a Python traceback or a JavaScript exception in an
/// interpreter) tells its author why: the last lines it wrote to stderr follow the trap in the
/// call's error, escaped where the CLI prints them.
#[tokio::test]
async fn a_tool_that_traps_says_why_with_its_last_stderr_lines() {
    let f = Fixture::new();
    f.install_tool("hostile-crash", None);
    let mut lines: Vec<String> = (0..300).map(|i| format!("noise {i}")).collect();
    lines.push("Traceback (most recent call last):".into());
    lines.push("ValueError: the input was \u{1b}[31mred\u{1b}[0m".into());
    let report = call(&f.runtime(), "hostile-crash", json!({ "lines": lines })).await;
    assert_eq!(failed(&report), ErrorKind::Trap);
    let message = &report.record.error.as_ref().unwrap().message;
    assert!(message.starts_with("the tool trapped: "), "{message}");
    assert!(message.contains("its stderr ended with:\n"), "{message}");
    assert!(
        message.contains("Traceback (most recent call last):\nValueError"),
        "{message}"
    );
    assert!(
        message.contains("panicked at"),
        "the panic message comes last: {message}"
    );
    assert!(!message.contains("noise 0\n"), "only the tail: {message}");

    let out = f.call_cli("hostile-crash", &json!({ "lines": lines }).to_string(), &[]);
    assert_exit(&out, 5);
    let said = stderr(&out);
    assert!(said.contains("ValueError: the input was"), "{said}");
    assert!(
        !said.contains('\u{1b}'),
        "a terminal escape reached the terminal: {said}"
    );
}

/// The schemas the Rust SDK derives from the tools' input types (`schemars`) refuse what the
/// hand-written ones did: lengths, patterns, unknown fields.
#[test]
fn the_derived_input_schemas_refuse_what_they_declare() {
    let f = Fixture::new();
    f.set_policies(&[(
        "base.cedar",
        r#"permit(principal == Agent::"tester", action == Action::"invoke", resource);"#,
    )]);
    let long = "x".repeat(201);
    for (tool, input) in [
        ("hello", serde_json::json!({ "name": long })),
        ("hello", serde_json::json!({ "name": "" })),
        ("hello", serde_json::json!({ "name": "x", "extra": 1 })),
        (
            "write-note",
            serde_json::json!({ "name": "../escape", "text": "x" }),
        ),
        (
            "write-note",
            serde_json::json!({ "name": "n", "text": "x".repeat(65537) }),
        ),
        ("delete-note", serde_json::json!({ "name": "a/b" })),
        (
            "http-get",
            serde_json::json!({ "url": "file:///etc/passwd" }),
        ),
        ("read-file", serde_json::json!({ "path": "" })),
    ] {
        let out = f.call_cli(tool, &input.to_string(), &["--json"]);
        assert_exit(&out, 2);
        let answer: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(
            answer["error"]["kind"], "invalid_input",
            "{tool} {input}: {answer}"
        );
    }
}
