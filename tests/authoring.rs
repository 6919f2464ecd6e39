//! A tool author's loop, per language, as the README tells it: `warden new` makes a tool
//! directory, `warden tool build` builds it and pins its digest, `warden tool add` registers
//! it, and the call runs it through the whole pipeline (policy, a mounted file, the audit).
//! The build tools are real: cargo for wasm32-wasip2, componentize-py from the test venv,
//! componentize-js from npm.

use crate::common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use warden_test_support::loopback::LoopbackServer;

/// `warden tool build DIR` as an author runs it, from `cwd` (DIR relative to it): the venv's
/// componentize-py on PATH; cargo with none of the test build's settings, reusing the
/// compiled dependencies of `tools/`.
fn build(cwd: &Path, dir: &str) -> std::process::Output {
    let venv = crate::mcp::python().parent().unwrap().to_path_buf();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![venv];
    paths.extend(std::env::split_paths(&path));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_") && key != "CARGO_HOME" || key == "RUSTFLAGS" {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd.args(["tool", "build", dir])
        .current_dir(cwd)
        .env("PATH", std::env::join_paths(paths).unwrap())
        .env("CARGO_TARGET_DIR", warden_test_support::GUEST_TARGET_DIR)
        .output()
        .unwrap()
}

/// `warden new NAME --lang LANG` in `f`'s directory; the directory it made.
fn scaffold(f: &Fixture, name: &str, lang: &str) -> std::path::PathBuf {
    let dir = f.path().join("authoring").join(name);
    let made = f.run(&["new", name, "--lang", lang, "--dir", dir.to_str().unwrap()]);
    assert_exit(&made, 0);
    let told = stdout(&made);
    assert!(
        told.contains(&format!("resource == Tool::\"{name}\"")) && told.contains("--agent-key"),
        "{told}"
    );
    if lang == "rust" {
        // The versions `tools/` are built with, so that its compiled dependencies serve.
        let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/Cargo.lock");
        std::fs::copy(lock, dir.join("Cargo.lock")).unwrap();
    }
    dir
}

/// `warden tool build` of `dir` (under `f`), asserted to succeed.
fn build_in(f: &Fixture, dir: &Path) {
    let relative = dir.strip_prefix(f.path()).unwrap().to_str().unwrap();
    let built = tokio::task::block_in_place(|| build(f.path(), relative));
    assert!(
        built.status.success(),
        "{}\n{}",
        stdout(&built),
        stderr(&built)
    );
}

/// From `warden new` to a call, a read of a mounted file and (Python and JavaScript) an HTTP
/// request through `wasi:http`, allowed by the manifest's `[[egress]]`, and one refused.
async fn scaffold_build_register_call(lang: &str) {
    let server = LoopbackServer::start().await.unwrap();
    let f = Fixture::new();
    let name = format!("greeter-{lang}");
    let dir = scaffold(&f, &name, lang);
    // Never over a directory that is there.
    let again = f.run(&["new", &name, "--lang", lang, "--dir", dir.to_str().unwrap()]);
    assert_exit(&again, 2);
    build_in(&f, &dir);
    let manifest = std::fs::read_to_string(dir.join("tool.toml")).unwrap();
    assert!(manifest.contains("digest = \"sha256:"), "{manifest}");

    // The mount it reads, granted by the manifest and bound by the deployment, and the
    // upstream it may reach.
    let manifest = manifest
        .replace(
            "# [[fs]]\n# guest = \"/data\"\n# mode = \"ro\"",
            "[[fs]]\nguest = \"/data\"\nmode = \"ro\"",
        )
        .replace(
            "# [[egress]]\n# url = \"https://api.example.com/v1/*\"\n# methods = [\"GET\"]",
            &loopback_rule(&server.url("/allowed"), &[], None),
        );
    std::fs::write(dir.join("tool.toml"), manifest).unwrap();
    std::fs::write(f.path().join("data/note.txt"), "from the mount").unwrap();
    f.extend_deployment(&format!(
        "[[mounts]]\ntool = \"{name}\"\nguest = \"/data\"\nhost = \"data\"\n"
    ));
    assert_exit(&f.run(&["tool", "add", dir.to_str().unwrap()]), 0);
    f.set_policies(&[(
        "base.cedar",
        &format!(
            "permit(principal == Agent::\"tester\", action == Action::\"invoke\", resource == Tool::\"{name}\");\n\
             permit(principal, action == Action::\"egress\", resource);"
        ),
    )]);
    let input = std::fs::read_to_string(dir.join("input.json")).unwrap();
    let out = f.call_cli(&name, &input, &["--json"]);
    assert_exit(&out, 0);
    let answer: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["output"]["greeting"], "Hello, world!", "{answer}");
    let out = f.call_cli(
        &name,
        &json!({ "name": "x", "file": "note.txt" }).to_string(),
        &["--json"],
    );
    assert_exit(&out, 0);
    let answer: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["output"]["file"], "from the mount", "{answer}");
    if lang != "rust" {
        let out = f.call_cli(
            &name,
            &json!({ "name": "x", "url": server.url("/allowed/greeting") }).to_string(),
            &["--json"],
        );
        assert_exit(&out, 0);
        let answer: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(answer["output"]["status"], 200, "{answer}");
        assert!(
            server
                .received()
                .iter()
                .any(|r| r.path == "/allowed/greeting"),
            "the request never reached the upstream"
        );
        // Outside the rule: refused by the host, the upstream never asked.
        let out = f.call_cli(
            &name,
            &json!({ "name": "x", "url": server.url("/admin") }).to_string(),
            &["--json"],
        );
        let refused: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(refused["error"]["kind"], "tool_error", "{refused}");
        assert!(!server.received().iter().any(|r| r.path == "/admin"));
        // The tool asked, and the host refused it, by the manifest's rules.
        let asked = &refused["egress"][0];
        assert_eq!(
            (&asked["path"], &asked["decision"]),
            (&json!("/admin"), &json!("deny")),
            "{refused}"
        );
    }
    // The declared schema is enforced before the tool runs (a number is no name); the tool's
    // own refusal of a blank name is its own.
    let out = f.call_cli(&name, &json!({ "name": 5 }).to_string(), &["--json"]);
    let refused: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(refused["error"]["kind"], "invalid_input", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("schema"),
        "{refused}"
    );
    if lang != "rust" {
        let out = f.call_cli(&name, &json!({ "name": "  " }).to_string(), &["--json"]);
        let refused: Value = serde_json::from_str(&stdout(&out)).unwrap();
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains("name is blank"), "{refused}");
    }
    assert_exit(&f.run(&["audit", "verify"]), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rust_tool_goes_from_warden_new_to_a_call() {
    scaffold_build_register_call("rust").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_tool_goes_from_warden_new_to_a_call() {
    scaffold_build_register_call("python").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_javascript_tool_goes_from_warden_new_to_a_call() {
    if !installed(&["node", "npm"], "the JavaScript tool's test") {
        return;
    }
    scaffold_build_register_call("js").await;
}

/// The hostile tool of `lang` (`tools/hostile/{python,js}`: its source and manifest, in a
/// directory `warden new` made), built, registered with a mount and called with a listener's
/// port and a secret in Warden's environment; the call's record (its report is `output`).
async fn hostile_report(lang: &str, source: &str) -> Value {
    // A listener it would reach if sockets or an unlisted host were allowed.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let f = Fixture::new();
    let name = format!("hostile-{lang}");
    let dir = scaffold(&f, &name, lang);
    let hostile = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/hostile")
        .join(lang);
    for file in [source, "tool.toml"] {
        std::fs::copy(hostile.join(file), dir.join(file)).unwrap();
    }
    build_in(&f, &dir);
    std::fs::write(f.path().join("data/public.txt"), "public").unwrap();
    f.extend_deployment(&format!(
        "[[mounts]]\ntool = \"{name}\"\nguest = \"/data\"\nhost = \"data\"\n"
    ));
    assert_exit(&f.run(&["tool", "add", dir.to_str().unwrap()]), 0);
    f.set_policies(&[(
        "base.cedar",
        "permit(principal == Agent::\"tester\", action == Action::\"invoke\", resource);\n\
         permit(principal, action == Action::\"egress\", resource);",
    )]);
    let out = f
        .call_cmd(&name, &json!({ "port": port }).to_string())
        .arg("--json")
        .env("WARDEN_TEST_SECRET", SECRET)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "the tool reached the listener");
    assert!(!stdout(&out).contains(SECRET));
    for attempt in ["host_file", "dot_dot", "unlisted_host"] {
        let report = &report["output"];
        assert_eq!(report[attempt]["escaped"], false, "{attempt}: {report}");
    }
    // The WASI environment Warden gives is empty.
    let environment = &report["output"][if lang == "js" {
        "environment"
    } else {
        "wasi_environment"
    }];
    assert_eq!(environment, &json!([]), "{report}");
    // Each request it made was refused by the host, and recorded so.
    let egress = report["egress"].as_array().unwrap();
    assert!(!egress.is_empty(), "{report}");
    assert!(egress.iter().all(|e| e["decision"] == "deny"), "{report}");
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_python_tool_is_contained_like_the_rust_ones() {
    let call = hostile_report("python", "app.py").await;
    let report = &call["output"];
    for attempt in ["root_listing", "socket", "cwd_escape"] {
        assert_eq!(report[attempt]["escaped"], false, "{attempt}: {report}");
    }
    // Refused by the sandbox, not lost on the way (a missing codec, a bug in the tool).
    let refused = |attempt: &str, reason: &str| {
        let error = report[attempt]["error"].as_str().unwrap();
        assert!(error.contains(reason), "{attempt}: {report}");
    };
    refused("dot_dot", "PermissionError");
    refused("socket", "PermissionError");
    refused("unlisted_host", "HttpRequestDenied");
    // It sees its mount. (`os.environ` is what its interpreter read when it was built.)
    assert_eq!(report["mount_listing"]["escaped"], true, "{report}");
    assert!(
        report["mount_listing"]["got"]
            .as_str()
            .unwrap()
            .contains("public.txt")
    );
    assert_eq!(report["environment"], json!({}), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_javascript_tool_is_contained_like_the_rust_ones() {
    if !installed(&["node", "npm"], "the hostile JavaScript tool's test") {
        return;
    }
    let call = hostile_report("js", "app.js").await;
    let report = &call["output"];
    for attempt in ["write_read_only", "metadata_host"] {
        assert_eq!(report[attempt]["escaped"], false, "{attempt}: {report}");
    }
    for attempt in ["host_file", "dot_dot", "write_read_only"] {
        assert_eq!(report[attempt]["error"], "Error: not-permitted", "{report}");
    }
    // Both requests reached the host, which refused them.
    let egress = call["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 2, "{egress:?}");
    assert_eq!(egress[1]["host"], "169.254.169.254");
    // Its one mount is all it sees of the host's files.
    assert_eq!(report["preopens"], json!(["/data"]), "{report}");
}
