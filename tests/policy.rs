//! Cedar policies at the decision point: deny by default, rules on arguments, per-request
//! egress decisions, rates, sessions and taint, approval required, reasons that agree with
//! `warden policy explain`, and invalid policies refused with file and line.

use crate::common::*;
use serde_json::json;
use warden::call::events::{CallEvent, CallEvents};
use warden::identity::assertion;
use warden::policy::Outcome;
use warden::{CallRequest, Caller, ErrorKind, Secret, StateStore as _};
use warden_test_support::loopback::LoopbackServer;

fn json_of(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&stdout(output))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", stdout(output), stderr(output)))
}

#[test]
fn without_policies_every_call_is_denied() {
    let f = Fixture::new();
    f.set_policies(&[]);
    let out = f.call_cli("hello", r#"{"name":"x"}"#, &["--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let envelope = json_of(&out);
    assert_eq!(envelope["decision"]["outcome"], "deny");
    assert_eq!(envelope["decision"]["policies"], json!([]));
    let reason = envelope["decision"]["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("no policy permits") && reason.contains("deny by default"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_rule_on_the_arguments_allows_one_input_and_denies_another() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.path().join("data/public")).unwrap();
    std::fs::write(f.path().join("data/public/a.txt"), "public").unwrap();
    f.set_policies(&[
        ("input.cedarschema", "type Input = { path?: String };"),
        (
            "read.cedar",
            r#"
@id("public-only")
@reason("read-file reads under public/ only")
permit(principal, action == Action::"invoke", resource == Tool::"read-file")
when { context.input has path && context.input.path like "public/*" };
"#,
        ),
    ]);
    let runtime = f.runtime();
    let allowed = call(&runtime, "read-file", json!({"path": "public/a.txt"})).await;
    assert_eq!(ok(&allowed)["content"], "public");
    assert_eq!(allowed.record.decision.policies, vec!["public-only"]);
    assert!(
        allowed
            .record
            .decision
            .reasons
            .iter()
            .any(|r| r.contains("under public/ only"))
    );

    let denied = call(&runtime, "read-file", json!({"path": "hello.txt"})).await;
    assert_eq!(failed(&denied), ErrorKind::Denied);
    assert_eq!(denied.record.decision.outcome, Outcome::Deny);
    // An undeclared field cannot be used to get around the rule either: read-file's schema
    // refuses it before any decision.
    let smuggled = call(
        &runtime,
        "read-file",
        json!({"path": "hello.txt", "also": "public/a.txt"}),
    )
    .await;
    assert_eq!(failed(&smuggled), ErrorKind::InvalidInput);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_egress_forbid_stops_only_the_post() {
    let server = LoopbackServer::start().await.unwrap();
    let f = Fixture::new();
    f.install_tool(
        "hostile-http",
        Some(&loopback_rule(&server.url(""), &["GET", "POST"], None)),
    );
    f.set_policies(&[(
        "base.cedar",
        &format!(
            "{POLICIES}\n@id(\"no-post\")\n@reason(\"tools only read\")\nforbid(principal, action == Action::\"egress\", resource)\nwhen {{ context.method == \"POST\" }};\n"
        ),
    )]);
    let runtime = f.runtime();
    let report = call(
        &runtime,
        "hostile-http",
        json!({"url": server.url("/first"), "then": [{"url": server.url("/second"), "method": "POST"}]}),
    )
    .await;
    let out = ok(&report);
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["then"][0]["sent"], false, "{out}");
    assert!(
        out["then"][0]["error"]
            .as_str()
            .unwrap()
            .contains("HttpRequestDenied"),
        "{out}"
    );

    let [get, post] = report.egress.as_slice() else {
        panic!("{:?}", report.egress)
    };
    assert_eq!(
        (get.method.as_str(), get.decision.as_str()),
        ("GET", "allow")
    );
    assert_eq!(get.policies, vec!["egress-as-manifests-ask"]);
    assert_eq!(
        (post.method.as_str(), post.decision.as_str()),
        ("POST", "deny")
    );
    assert_eq!(post.policies, vec!["no-post"]);
    assert!(
        post.reason.as_deref().unwrap().contains("tools only read"),
        "{post:?}"
    );
    let paths: Vec<String> = server.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/first"]);
}

/// Policies see the normal form of a path: an escaped, doubled-slash or dot-segment way to
/// `/v1/admin` is stopped by a policy that forbids `/v1/admin*`.
#[tokio::test(flavor = "multi_thread")]
async fn an_egress_forbid_on_a_path_holds_against_its_encodings() {
    let server = LoopbackServer::start().await.unwrap();
    let f = Fixture::new();
    f.install_tool(
        "hostile-http",
        Some(&loopback_rule(&server.url(""), &[], None)),
    );
    f.set_policies(&[(
        "base.cedar",
        &format!(
            "{POLICIES}\n@id(\"no-admin\")\nforbid(principal, action == Action::\"egress\", resource)\nwhen {{ context.path like \"/v1/admin*\" }};\n"
        ),
    )]);
    let runtime = f.runtime();
    let then: Vec<serde_json::Value> = ["/v1/%61dmin", "/v1//admin/x", "/v1/%41dmin", "/v1/public"]
        .iter()
        .map(|p| json!({ "url": server.url(p) }))
        .collect();
    let report = call(
        &runtime,
        "hostile-http",
        json!({ "url": server.url("/v1/%61dmin/users"), "then": then }),
    )
    .await;
    let out = ok(&report);
    assert_eq!(out["sent"], false, "{out}");
    let decisions: Vec<(String, &str)> = report
        .egress
        .iter()
        .map(|e| (e.url(), e.decision.as_str()))
        .collect();
    let expected = [
        (server.url("/v1/admin/users"), "deny"),
        (server.url("/v1/admin"), "deny"),
        (server.url("/v1/admin/x"), "deny"),
        // `%41` is `A`: another path, which the policy does not name.
        (server.url("/v1/Admin"), "allow"),
        (server.url("/v1/public"), "allow"),
    ];
    assert_eq!(decisions, expected);
    assert!(
        report
            .egress
            .iter()
            .take(3)
            .all(|e| e.policies == ["no-admin"])
    );
    let paths: Vec<String> = server.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/v1/Admin", "/v1/public"]);
}

#[tokio::test]
async fn calls_over_the_rate_in_policy_are_denied_from_the_right_call_on() {
    let f = Fixture::new();
    f.set_policies(&[(
        "base.cedar",
        &format!(
            "{POLICIES}\n@id(\"three-a-minute\")\nforbid(principal, action == Action::\"invoke\", resource)\nwhen {{ context.calls_last_minute >= 3 }};\n"
        ),
    )]);
    let runtime = f.runtime();
    let mut outcomes = Vec::new();
    for i in 0..5 {
        let report = call(&runtime, "hello", json!({"name": format!("n{i}")})).await;
        outcomes.push((
            report.record.decision.outcome,
            report.record.decision.policies.clone(),
        ));
    }
    let allowed = (Outcome::Allow, vec!["tester-invokes-anything".to_string()]);
    let limited = (Outcome::Deny, vec!["three-a-minute".to_string()]);
    assert_eq!(
        outcomes,
        vec![
            allowed.clone(),
            allowed.clone(),
            allowed,
            limited.clone(),
            limited
        ]
    );
    // Another agent has its own count.
    let other = runtime
        .call(request("limited", "hello", json!({"name": "x"}), None))
        .await;
    assert!(other.record.error.is_none(), "{:?}", other.record.error);
}

/// Commits in the state file's write-ahead log so far: frames that end a transaction, of
/// the log's current generation (its salts).
fn commits(f: &Fixture) -> usize {
    let log = std::fs::read(f.path().join("state/warden.db-wal")).unwrap_or_default();
    let Some(header) = log.get(..32) else {
        return 0;
    };
    let page = u32::from_be_bytes(header[8..12].try_into().unwrap()) as usize;
    log[32..]
        .chunks_exact(24 + page)
        .filter(|frame| frame[8..16] == header[16..24])
        .filter(|frame| frame[4..8] != [0; 4])
        .count()
}

/// One write per call where nothing needs one before the call ends; the count it then
/// carries is the one later decisions read. A deployment whose policies read a count counts
/// every call first.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_that_can_change_nothing_outside_it_is_one_write_and_still_counted() {
    let server = LoopbackServer::start().await.unwrap();
    let f = Fixture::new();
    f.install_tool("http-get", Some(&loopback_rule(&server.url(""), &[], None)));
    let runtime = f.runtime();
    // Authenticated once, as a server's agent is: a call assertion would add its nonce's write.
    let authenticate = |runtime: &warden::Runtime| {
        let proof = Secret::new(assertion::sign_session(&agent_key(AGENT), AGENT));
        Caller::Authenticated(runtime.authenticate(&proof).unwrap())
    };
    let calls = [
        ("hello", json!({ "name": "x" })),
        ("read-file", json!({ "path": "hello.txt" })),
        ("write-note", json!({ "name": "n.txt", "text": "t" })),
        ("http-get", json!({ "url": server.url("/x") })),
    ];
    // The writes of each call, once each tool is loaded (8 calls counted).
    let writes = async |runtime: &warden::Runtime, agent: &Caller| {
        for (tool, input) in &calls {
            let request = CallRequest::new(*tool, input.clone(), agent.clone());
            ok(&runtime.call(request).await);
        }
        let mut writes = Vec::new();
        for (tool, input) in &calls {
            let before = commits(&f);
            let request = CallRequest::new(*tool, input.clone(), agent.clone());
            ok(&runtime.call(request).await);
            writes.push((*tool, commits(&f) - before));
        }
        writes
    };
    let agent = authenticate(&runtime);
    assert_eq!(
        writes(&runtime, &agent).await,
        [
            // Nothing of the call is seen before its end: counted with its final record.
            ("hello", 1),
            ("read-file", 1),
            // A tool that can write to a mount or send a request is on record first.
            ("write-note", 2),
            ("http-get", 2),
        ]
    );
    // Heard live by a listener: counted and on record first.
    struct Deaf;
    impl CallEvents for Deaf {
        fn event(&self, _: CallEvent) {}
    }
    let before = commits(&f);
    let heard = CallRequest::new("hello", json!({ "name": "x" }), agent.clone());
    ok(&runtime.call(heard.events(std::sync::Arc::new(Deaf))).await);
    assert_eq!(commits(&f) - before, 2);

    // A policy that reads a count, whatever it applies to: every call is counted first.
    f.set_policies(&[(
        "base.cedar",
        &format!(
            "{POLICIES}
@id(\"read-after-eight\")
forbid(principal, action == Action::\"invoke\", resource == Tool::\"read-file\")
when {{ context.calls_last_minute >= 8 }};"
        ),
    )]);
    let runtime = f.runtime();
    let agent = authenticate(&runtime);
    // The nine calls above, the four counted at their end among them: read-file is denied.
    let denied = runtime
        .call(CallRequest::new(
            "read-file",
            json!({ "path": "hello.txt" }),
            agent.clone(),
        ))
        .await;
    assert_eq!(failed(&denied), ErrorKind::Denied);
    assert_eq!(denied.record.decision.policies, ["read-after-eight"]);
    let before = commits(&f);
    ok(&runtime
        .call(CallRequest::new(
            "hello",
            json!({ "name": "x" }),
            agent.clone(),
        ))
        .await);
    assert_eq!(commits(&f) - before, 2);

    // A denied call, where no policy reads a count, is one write (and counted too).
    f.set_policies(&[(
        "base.cedar",
        "@id(\"no-hello\")\nforbid(principal, action, resource == Tool::\"hello\");\n",
    )]);
    let runtime = f.runtime();
    let agent = authenticate(&runtime);
    let before = commits(&f);
    let denied = runtime
        .call(CallRequest::new("hello", json!({ "name": "x" }), agent))
        .await;
    assert_eq!(failed(&denied), ErrorKind::Denied);
    assert_eq!(commits(&f) - before, 1);
    let store = warden::SqliteStore::open(&f.path().join("state")).unwrap();
    assert_eq!(
        store
            .recent_calls(AGENT, warden::identity::jwt::now_ms())
            .unwrap(),
        12
    );
}

/// `warden session start` as tester; returns the id.
fn start_session(f: &Fixture) -> String {
    let out = f.run(&["session", "start", "--agent", AGENT]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tainted_session_needs_approval_for_an_irreversible_tool() {
    let server = LoopbackServer::start().await.unwrap();
    let f = Fixture::new();
    f.install_tool("http-get", Some(&loopback_rule(&server.url(""), &[], None)));
    // The example policies, and tester (trusted high) may also read.
    f.set_example_policies(
        &[(
            "tester.cedar",
            "@id(\"tester-reads\")\npermit(principal == Agent::\"tester\", action == Action::\"invoke\", resource) when { resource.impact == \"read\" };",
        )],
    );
    std::fs::write(f.path().join("notes/a.txt"), "a").unwrap();
    std::fs::write(f.path().join("notes/b.txt"), "b").unwrap();
    let delete = |session: &str, name: &str| {
        f.call_cli(
            "delete-note",
            &format!(r#"{{"name":"{name}"}}"#),
            &["--session", session, "--json"],
        )
    };

    // Untainted: the trusted agent deletes.
    let clean = start_session(&f);
    let out = delete(&clean, "a.txt");
    assert_exit(&out, 0);
    assert!(!f.path().join("notes/a.txt").exists());

    // A page fetched in the session taints it: the same call now needs an approval.
    let tainted = start_session(&f);
    let url = json!({"url": server.url("/page")}).to_string();
    let fetched = f.call_cli("http-get", &url, &["--session", &tainted]);
    assert_eq!(fetched.status.code(), Some(0), "{}", stderr(&fetched));
    let shown = json_of(&f.run(&["session", "show", &tainted]));
    assert_eq!(shown["tainted"], true);
    assert!(
        shown["taint_reason"].as_str().unwrap().contains("http-get"),
        "{shown}"
    );
    let out = delete(&tainted, "b.txt");
    assert_exit(&out, 4);
    let envelope = json_of(&out);
    assert_eq!(envelope["decision"]["outcome"], "approval_required");
    assert_eq!(envelope["error"]["kind"], "approval_required");
    assert!(
        envelope["decision"]["policies"]
            .as_array()
            .unwrap()
            .contains(&json!("irreversible-needs-clean-session")),
        "{envelope}"
    );
    assert!(f.path().join("notes/b.txt").exists(), "nothing ran");

    // Input the caller marks as untrusted taints a session too.
    let marked = start_session(&f);
    let hello = f.call_cli(
        "hello",
        r#"{"name":"x"}"#,
        &["--session", &marked, "--untrusted-input"],
    );
    assert_eq!(hello.status.code(), Some(0), "{}", stderr(&hello));
    let out = delete(&marked, "b.txt");
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(json_of(&out)["decision"]["outcome"], "approval_required");
    // Without --json, the CLI says what a person does next.
    let said = f.call_cli(
        "delete-note",
        r#"{"name":"b.txt"}"#,
        &["--session", &marked],
    );
    assert_eq!(said.status.code(), Some(4));
    assert!(
        stderr(&said).contains("warden approve"),
        "{}",
        stderr(&said)
    );

    // A session is its agent's: another agent cannot use it.
    let mut other = f.cli();
    let stolen = other
        .args([
            "call",
            "hello",
            "--agent",
            "limited",
            "--input",
            r#"{"name":"x"}"#,
            "--session",
            &clean,
        ])
        .env("WARDEN_AGENT_KEY", f.key_file("limited"))
        .output()
        .unwrap();
    assert_eq!(stolen.status.code(), Some(3), "{}", stderr(&stolen));
}

#[test]
fn reasons_name_the_policies_and_explain_agrees_with_a_real_call() {
    let f = Fixture::new();
    f.set_example_policies(
        &[(
            "tester.cedar",
            "@id(\"tester-reads\")\npermit(principal == Agent::\"tester\", action == Action::\"invoke\", resource == Tool::\"read-file\");",
        )],
    );
    for (input, code, policies) in [
        (r#"{"path":"hello.txt"}"#, 0, json!(["tester-reads"])),
        (r#"{"path":".env"}"#, 3, json!(["no-hidden-files"])),
    ] {
        let real = f.call_cli("read-file", input, &["--json"]);
        assert_eq!(real.status.code(), Some(code), "{}", stderr(&real));
        let real = json_of(&real)["decision"].clone();
        let explained = f.run(&[
            "policy",
            "explain",
            "--agent",
            AGENT,
            "--tool",
            "read-file",
            "--input",
            input,
            "--json",
        ]);
        assert_eq!(
            explained.status.code(),
            Some(code),
            "{}",
            stderr(&explained)
        );
        let explained = json_of(&explained);
        assert_eq!(real["policies"], policies);
        assert_eq!(explained["outcome"], real["outcome"]);
        assert_eq!(explained["policies"], real["policies"]);
        assert_eq!(explained["reasons"], real["reasons"]);
    }
}

#[test]
fn invalid_policies_are_refused_with_file_and_line() {
    let f = Fixture::new();
    for (text, expected) in [
        (
            "permit(principal, action, resource)\n  when { true",
            "bad.cedar:2",
        ),
        (
            "\npermit(principal, action == Action::\"invoke\", resource)\n  when { resource.impactt == \"read\" };",
            "bad.cedar:3",
        ),
        (
            "\n\npermit(principal == Robot::\"r\", action, resource);",
            "bad.cedar:3",
        ),
    ] {
        f.set_policies(&[("base.cedar", POLICIES), ("bad.cedar", text)]);
        let out = f.run(&["policy", "validate"]);
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(stderr(&out).contains(expected), "{text}: {}", stderr(&out));
        // Warden refuses to start with them: no call runs.
        let call = f.call_cli("hello", r#"{"name":"x"}"#, &[]);
        assert_eq!(call.status.code(), Some(2));
        let message = stderr(&call);
        assert!(
            message.contains(expected) && message.lines().count() == 1,
            "{message}"
        );
    }
    f.set_policies(&[("base.cedar", POLICIES)]);
    let out = f.run(&["policy", "validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("3 policies in 1 files"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn the_example_policy_table_passes_and_a_wrong_expectation_fails() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["demo", "--keep", "--dir"])
        .arg(&demo)
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    let table =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policy-tests.toml");
    let run = |table: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
            .arg("--config")
            .arg(demo.join("warden.toml"))
            .args(["policy", "test"])
            .arg(table)
            .output()
            .unwrap()
    };
    let out = run(&table);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("12 passed, 0 failed"),
        "{}",
        stdout(&out)
    );

    let wrong = dir.path().join("wrong.toml");
    let text = std::fs::read_to_string(&table).unwrap().replacen(
        "expect = \"deny\"\npolicies = [\"no-hidden-files\"]",
        "expect = \"allow\"",
        1,
    );
    std::fs::write(&wrong, text).unwrap();
    let junit = dir.path().join("policy.xml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("--config")
        .arg(demo.join("warden.toml"))
        .args(["policy", "test"])
        .arg(&wrong)
        .arg("--junit")
        .arg(&junit)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // In JUnit: the case before it passed, it failed, the rest were not run.
    let report = parse_junit(&junit);
    assert_eq!(report["tests"], 12, "{report}");
    assert_eq!(report["failures"], 1, "{report}");
    assert_eq!(report["suites"][0]["skipped"], 10, "{report}");
    assert!(
        stderr(&out).contains("case 2 (hidden files"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("1 passed, 1 failed"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn the_tools_an_agent_may_call_are_listed_with_how() {
    let f = Fixture::new();
    f.set_policies(&[
        ("input.cedarschema", "type Input = { path?: String };"),
        (
            "list.cedar",
            r#"
permit(principal == Agent::"tester", action == Action::"invoke", resource == Tool::"hello");
@approval("human")
permit(principal == Agent::"tester", action == Action::"invoke", resource == Tool::"delete-note");
permit(principal == Agent::"tester", action == Action::"invoke", resource == Tool::"read-file")
when { context.input has path && context.input.path like "public/*" };
permit(principal, action == Action::"invoke", resource == Tool::"write-note");
forbid(principal == Agent::"limited", action == Action::"invoke", resource == Tool::"write-note");
permit(principal == Agent::"limited", action == Action::"invoke", resource)
when { resource == Tool::"hello" };
"#,
        ),
    ]);
    let runtime = f.runtime();
    let origin = || warden::policy::Origin {
        kind: warden::policy::OriginKind::Mcp,
        label: String::new(),
    };
    let tester: Vec<(String, warden::policy::Access)> =
        runtime.callable_tools(AGENT, None, origin());
    use warden::policy::Access::*;
    assert_eq!(
        tester,
        vec![
            ("delete-note".into(), ApprovalRequired),
            ("hello".into(), Allowed),
            ("read-file".into(), DependsOnInput),
            ("write-note".into(), Allowed),
        ]
    );
    // A permit over every tool whose condition excludes all but one lists that one: the
    // others do not depend on the input.
    assert_eq!(
        runtime.callable_tools("limited", None, origin()),
        vec![("hello".to_string(), Allowed)]
    );
    // A delegation narrows the list to its scope.
    let acting = warden::session::ActingFor {
        user: "alice".into(),
        delegation: "d".into(),
        scope: vec!["hello".into()],
    };
    assert_eq!(
        runtime.callable_tools(AGENT, Some(&acting), origin()),
        vec![("hello".to_string(), Allowed)]
    );
}

#[test]
fn a_session_started_for_a_user_acts_for_that_user_within_the_delegation() {
    let f = Fixture::new();
    let token = warden::identity::delegation::issue(
        &agent_key("alice"),
        "alice",
        AGENT,
        &["hello".into()],
        std::time::Duration::from_secs(600),
    );
    let out = f.run(&[
        "session",
        "start",
        "--agent",
        AGENT,
        "--on-behalf-of",
        &token,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let session = stdout(&out).trim().to_string();

    let hello = f.call_cli(
        "hello",
        r#"{"name":"x"}"#,
        &["--session", &session, "--json"],
    );
    assert_eq!(hello.status.code(), Some(0), "{}", stderr(&hello));
    let envelope = json_of(&hello);
    assert_eq!(envelope["user"], "alice");
    assert_eq!(envelope["session"], session.as_str());

    // The session carries the delegation's scope: read-file is outside it.
    let read = f.call_cli(
        "read-file",
        r#"{"path":"hello.txt"}"#,
        &["--session", &session, "--json"],
    );
    assert_eq!(read.status.code(), Some(3), "{}", stderr(&read));
    let reason = json_of(&read)["decision"]["reasons"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("not in the scope of delegation"),
        "{reason}"
    );

    let shown = json_of(&f.run(&["session", "show", &session]));
    assert_eq!(shown["user"], "alice");
    assert_eq!(shown["calls"], 1, "{shown}");

    // A session nobody started is refused.
    let unknown = f.call_cli(
        "hello",
        r#"{"name":"x"}"#,
        &["--session", "no-such-session"],
    );
    assert_eq!(unknown.status.code(), Some(3));
    assert!(
        stderr(&unknown).contains("no session"),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn an_input_the_schema_rejects_is_invalid_input_before_any_decision() {
    let f = Fixture::new();
    // The example policies declare `name?: String` for policies to read; tester may say hello.
    f.set_example_policies(
        &[(
            "tester.cedar",
            r#"permit(principal == Agent::"tester", action == Action::"invoke", resource == Tool::"hello");"#,
        )],
    );
    // A number where the schema wants a string: the tool's input is wrong, not the agent.
    let out = f.call_cli("hello", r#"{"name":5}"#, &["--json"]);
    assert_exit(&out, 2);
    assert_eq!(json_of(&out)["error"]["kind"], "invalid_input");

    // A tool that needs a person's approval: an input the tool would reject asks nobody.
    f.set_policies(&[(
        "base.cedar",
        r#"
@id("tester-invokes-anything")
permit(principal == Agent::"tester", action == Action::"invoke", resource);

@id("hello-needs-approval")
forbid(principal, action == Action::"invoke", resource == Tool::"hello")
unless { context.approved };
"#,
    )]);
    let no_approvals = |f: &Fixture| {
        let listed = f.run(&["approvals", "list", "--json"]);
        assert_exit(&listed, 0);
        json_of(&listed)
    };
    let secret = "sk-live-typed-into-the-wrong-field";
    let misplaced = json!({ "name": [secret] }).to_string();
    for bad in [
        r#"{"name":""}"#,
        r#"{"name":5}"#,
        r#"{"nom":"x"}"#,
        &misplaced,
    ] {
        let out = f.call_cli("hello", bad, &["--json"]);
        assert_exit(&out, 2);
        let error = &json_of(&out)["error"];
        assert_eq!(error["kind"], "invalid_input");
        assert!(
            error["message"].as_str().unwrap().starts_with("input"),
            "{error}"
        );
        assert_eq!(no_approvals(&f), json!([]), "after {bad}");
    }
    // The reason names where and which rule, never the value: it is recorded even where
    // inputs are not.
    let tail = f.run(&["audit", "tail", "-n", "50", "--json"]);
    assert_exit(&tail, 0);
    assert!(!stdout(&tail).contains(secret), "{}", stdout(&tail));
    assert!(stdout(&tail).contains("input/name does not satisfy `type`"));
    // A valid input is held for approval, as the policy says.
    assert_exit(&f.call_cli("hello", r#"{"name":"x"}"#, &["--json"]), 4);
    assert_eq!(no_approvals(&f).as_array().unwrap().len(), 1);
}
