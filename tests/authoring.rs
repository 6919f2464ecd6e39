//! A tool author's loop, per language, as the README tells it: `warden new` makes a tool
//! directory, `warden tool build` builds it and pins its digest, `warden tool add` registers
//! it, and the call runs it through the whole pipeline (policy, a mounted file, the audit).
//! The build tools are real: cargo for wasm32-wasip2, componentize-py from the test venv,
//! componentize-js from npm.

use crate::common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

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

/// From `warden new` to a call, and a read of a mounted file.
fn scaffold_build_register_call(lang: &str) {
    let f = Fixture::new();
    let name = format!("greeter-{lang}");
    let dir = f.path().join("authoring").join(&name);
    let made = f.run(&["new", &name, "--lang", lang, "--dir", dir.to_str().unwrap()]);
    assert_exit(&made, 0);
    let told = stdout(&made);
    assert!(
        told.contains(&format!("resource == Tool::\"{name}\"")) && told.contains("--agent-key"),
        "{told}"
    );
    // Never over a directory that is there.
    let again = f.run(&["new", &name, "--lang", lang, "--dir", dir.to_str().unwrap()]);
    assert_exit(&again, 2);
    if lang == "rust" {
        // The versions `tools/` are built with, so that its compiled dependencies serve.
        let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/Cargo.lock");
        std::fs::copy(lock, dir.join("Cargo.lock")).unwrap();
    }
    let built = build(f.path(), &format!("authoring/{name}"));
    assert!(
        built.status.success(),
        "{}\n{}",
        stdout(&built),
        stderr(&built)
    );
    let manifest = std::fs::read_to_string(dir.join("tool.toml")).unwrap();
    assert!(manifest.contains("digest = \"sha256:"), "{manifest}");

    // The mount it reads, granted by the manifest and bound by the deployment.
    std::fs::write(
        dir.join("tool.toml"),
        manifest.replace(
            "# [[fs]]\n# guest = \"/data\"\n# mode = \"ro\"",
            "[[fs]]\nguest = \"/data\"\nmode = \"ro\"",
        ),
    )
    .unwrap();
    std::fs::write(f.path().join("data/note.txt"), "from the mount").unwrap();
    f.extend_deployment(&format!(
        "[[mounts]]\ntool = \"{name}\"\nguest = \"/data\"\nhost = \"data\"\n"
    ));
    assert_exit(&f.run(&["tool", "add", dir.to_str().unwrap()]), 0);
    f.set_policies(&[(
        "base.cedar",
        &format!(
            "permit(principal == Agent::\"tester\", action == Action::\"invoke\", resource == Tool::\"{name}\");"
        ),
    )]);
    let input = std::fs::read_to_string(dir.join("input.json")).unwrap();
    let out = f.call_cli(&name, &input, &["--json"]);
    assert_exit(&out, 0);
    let answer: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["output"]["greeting"], "Hello, world!", "{answer}");
    if lang != "js" {
        let out = f.call_cli(
            &name,
            &json!({ "name": "x", "file": "note.txt" }).to_string(),
            &["--json"],
        );
        assert_exit(&out, 0);
        let answer: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(answer["output"]["file"], "from the mount", "{answer}");
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

#[test]
fn a_rust_tool_goes_from_warden_new_to_a_call() {
    scaffold_build_register_call("rust");
}

#[test]
fn a_python_tool_goes_from_warden_new_to_a_call() {
    scaffold_build_register_call("python");
}

#[test]
fn a_javascript_tool_goes_from_warden_new_to_a_call() {
    if !installed(&["node", "npm"], "the JavaScript tool's test") {
        return;
    }
    scaffold_build_register_call("js");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_python_tool_is_contained_like_the_rust_ones() {
    // A listener it would reach if sockets were granted.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let f = Fixture::new();
    let dir = f.path().join("hostile-python");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/hostile/python");
    std::fs::create_dir_all(dir.join("wit")).unwrap();
    for file in ["app.py", "tool.toml", "wit/world.wit"] {
        std::fs::copy(source.join(file), dir.join(file)).unwrap();
    }
    let built = tokio::task::block_in_place(|| build(f.path(), "hostile-python"));
    assert!(
        built.status.success(),
        "{}\n{}",
        stdout(&built),
        stderr(&built)
    );
    std::fs::write(f.path().join("data/public.txt"), "public").unwrap();
    f.extend_deployment(
        "[[mounts]]\ntool = \"hostile-python\"\nguest = \"/data\"\nhost = \"data\"\n",
    );
    assert_exit(&f.run(&["tool", "add", dir.to_str().unwrap()]), 0);
    f.set_policies(&[(
        "base.cedar",
        "permit(principal == Agent::\"tester\", action == Action::\"invoke\", resource);",
    )]);
    // A secret in Warden's own environment.
    let out = f
        .call_cmd("hostile-python", &json!({ "port": port }).to_string())
        .arg("--json")
        .env("WARDEN_TEST_SECRET", SECRET)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let report = &report["output"];
    for attempt in [
        "host_file",
        "dot_dot",
        "root_listing",
        "socket",
        "cwd_escape",
    ] {
        assert_eq!(report[attempt]["escaped"], false, "{attempt}: {report}");
    }
    // It sees its mount. (`os.environ` is what its interpreter read when it was built; the
    // WASI environment Warden gives is held by the Rust `hostile-env`.)
    assert_eq!(report["mount_listing"]["escaped"], true, "{report}");
    assert!(
        report["mount_listing"]["got"]
            .as_str()
            .unwrap()
            .contains("public.txt")
    );
    assert_eq!(report["environment"], json!({}), "{report}");
    assert!(!stdout(&out).contains(SECRET));
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "the tool reached the listener");
}
