//! The `warden` binary: registration, calls, the `--json` envelope, exit codes, and bad
//! input — each bad input a one-line reason, its exit code, and nothing registered or written.

use crate::common::*;
use std::path::Path;

/// A deployment with no tools, for registration tests.
fn empty() -> Fixture {
    let f = Fixture::new();
    std::fs::remove_dir_all(f.path().join("tools")).unwrap();
    std::fs::create_dir(f.path().join("tools")).unwrap();
    f
}

/// A copy of a built tool in a scratch directory, to be registered or spoiled.
fn tool_copy(f: &Fixture, name: &str) -> std::path::PathBuf {
    copy_built_tool(name, &f.path().join("incoming"))
}

/// Replaces the manifest's `digest = ...` line (an empty line unpins it).
fn set_digest(dir: &Path, line: &str) {
    edit(&dir.join("tool.toml"), |text| {
        let pinned = text
            .lines()
            .find(|l| l.starts_with("digest"))
            .unwrap()
            .to_string();
        text.replace(&pinned, line)
    });
}

fn add(f: &Fixture, dir: &Path) -> std::process::Output {
    f.cli().args(["tool", "add"]).arg(dir).output().unwrap()
}

/// `warden tool add DIR` must fail with exit 2 and a one-line reason, leaving no state at all.
fn assert_add_refused(f: &Fixture, dir: &Path, needle: &str) -> std::process::Output {
    let out = add(f, dir);
    assert_refused(f, &out, 2, needle);
    assert_state_untouched(f);
    out
}

/// A refused registration leaves no state behind at all.
fn assert_state_untouched(f: &Fixture) {
    assert!(
        files_under(&f.path().join("state")).is_empty(),
        "{:?}",
        files_under(&f.path().join("state"))
    );
}

fn assert_refused(f: &Fixture, output: &std::process::Output, code: i32, needle: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "`{needle}` not in: {err}");
    assert!(files_under(&f.path().join("state/tools")).is_empty());
}

#[test]
fn tool_add_registers_a_verified_copy_and_list_and_inspect_show_it() {
    let f = empty();
    let dir = tool_copy(&f, "read-file");
    let out = add(&f, &dir);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("registered read-file (sha256:"));
    assert!(f.path().join("state/tools/read-file/tool.toml").is_file());

    let list = f.run(&["tool", "list"]);
    assert!(stdout(&list).contains("read-file"), "{}", stdout(&list));

    let inspect = f.run(&["tool", "inspect", "read-file", "--json"]);
    assert_eq!(inspect.status.code(), Some(0), "{}", stderr(&inspect));
    let view: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert!(view["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(view["impact"], "read");
    assert_eq!(view["mounts"][0]["guest"], "/data");
    assert_eq!(view["mounts"][0]["mode"], "ro");
    assert_eq!(view["limits"]["memory"], "32MiB");
    assert_eq!(view["input_schema"]["required"][0], "path");

    let again = add(&f, &dir);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("already registered"));

    let call = f.call_cli("read-file", r#"{"path":"hello.txt"}"#, &[]);
    assert_eq!(call.status.code(), Some(0), "{}", stderr(&call));
    assert!(stdout(&call).contains("hello from the data mount"));
}

#[test]
fn a_malformed_manifest_is_refused() {
    let f = empty();
    let dir = tool_copy(&f, "hello");
    edit(&dir.join("tool.toml"), |text| {
        text.replace("memory = \"16MiB\"", "memory = \"lots\"")
    });
    let out = assert_add_refused(&f, &dir, "tool.toml");
    assert!(stderr(&out).contains("memory"));
}

#[test]
fn a_wrong_digest_is_refused() {
    let f = empty();
    let dir = tool_copy(&f, "hello");
    set_digest(&dir, &format!("digest = \"sha256:{}\"", "ab".repeat(32)));
    assert_add_refused(&f, &dir, "field `digest`");

    // A registered tool whose component is swapped afterwards is refused at call time too.
    let f = Fixture::new();
    std::fs::copy(
        Path::new(warden_test_support::BUILT_TOOLS_DIR).join("hostile-cpu/hostile_cpu.wasm"),
        f.path().join("tools/hello/hello.wasm"),
    )
    .unwrap();
    let out = f.call_cli("hello", r#"{"name":"x"}"#, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("digest"));
}

#[test]
fn a_file_that_is_not_a_component_is_refused() {
    let f = empty();
    let dir = tool_copy(&f, "hello");
    std::fs::write(dir.join("hello.wasm"), b"\0asm\x01\0\0\0 not really").unwrap();
    set_digest(&dir, "");
    assert_add_refused(&f, &dir, "not a WebAssembly component");
    assert!(files_under(&f.path().join("state/cache")).is_empty());
}

#[test]
fn a_component_of_another_world_is_refused() {
    // echo-command is a wasi:cli/command; registered as a `tool` it lacks describe/invoke.
    let f = empty();
    let dir = tool_copy(&f, "echo-command");
    edit(&dir.join("tool.toml"), |text| {
        text.replace("kind = \"command\"", "")
    });
    assert_add_refused(&f, &dir, "warden:tool/tool");
}

#[test]
fn an_unknown_tool_is_a_usage_error() {
    let f = Fixture::new();
    let out = f.call_cli("no-such-tool", "{}", &[]);
    assert_refused(&f, &out, 2, "unknown tool `no-such-tool`");
}

#[test]
fn invalid_json_input_is_a_usage_error() {
    let f = Fixture::new();
    let out = f.call_cli("hello", "{name: Ada", &[]);
    assert_refused(&f, &out, 2, "not valid JSON");
}

#[test]
fn input_that_fails_the_schema_is_a_usage_error() {
    let f = Fixture::new();
    let out = f.call_cli("hello", r#"{"name": 42}"#, &[]);
    assert_refused(&f, &out, 2, "input/name");
}

#[test]
fn input_from_a_file_works_and_a_missing_file_is_a_usage_error() {
    let f = Fixture::new();
    let input = f.path().join("input.json");
    std::fs::write(&input, r#"{"name":"File"}"#).unwrap();
    let out = f
        .cli()
        .args(["call", "hello", "--agent", AGENT, "--input-file"])
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("Hello, File!"));
    let missing = f.run(&[
        "call",
        "hello",
        "--agent",
        AGENT,
        "--input-file",
        "/nonexistent.json",
    ]);
    assert_refused(&f, &missing, 2, "/nonexistent.json");
}

#[test]
fn a_malformed_deployment_file_is_a_usage_error() {
    let f = Fixture::new();
    std::fs::write(f.config(), "[agents.tester]\ntools = \"*\"\n").unwrap();
    let out = f.call_cli("hello", "{}", &[]);
    assert_refused(&f, &out, 2, "warden.toml");
}

/// A mount that overlaps (contains, lies inside, or reaches through a symlink) anything Warden
/// trusts on disk is refused when the deployment is loaded: exit 2, one line naming the file
/// and the field, nothing written. One case per kind of overlap.
#[test]
fn a_mount_over_what_warden_trusts_is_refused_at_load() {
    let cases = [
        ("state", "`state_dir`"),
        ("state/keys", "the signing keys"),
        ("state/cache/x", "the compile cache"),
        (".", "the signing keys"),
        ("policies", "`policy_dir`"),
        ("vault", "the secret file `secrets.api.file`"),
        ("tools/hello", "`tool_dirs[0]`"),
        ("link-to-keys", "the signing keys"),
        ("link-to-policies/sub", "`policy_dir`"),
    ];
    for (host, needle) in cases {
        let f = Fixture::new();
        std::fs::create_dir(f.path().join("vault")).unwrap();
        std::fs::write(f.path().join("vault/api.key"), SECRET).unwrap();
        // Dangling until the state directory is made, and through an existing directory.
        std::os::unix::fs::symlink("state/keys", f.path().join("link-to-keys")).unwrap();
        std::os::unix::fs::symlink(f.path().join("policies"), f.path().join("link-to-policies"))
            .unwrap();
        f.extend_deployment(&format!(
            "[[mounts]]\ntool = \"hostile-fs\"\nguest = \"/extra\"\nhost = \"{host}\"\n\n\
             [secrets.api]\nfile = \"vault/api.key\"\n"
        ));
        let out = f.call_cli("hello", "{}", &[]);
        assert_refused(&f, &out, 2, needle);
        let err = stderr(&out);
        assert!(
            err.contains("warden.toml") && err.contains("field `mounts[6].host`"),
            "{host}: {err}"
        );
        assert!(
            !f.path().join("state").exists(),
            "{host}: state was created"
        );
    }
}

#[test]
fn the_json_envelope_and_exit_codes() {
    let f = Fixture::new();
    let run = |args: &[&str]| f.cli().args(args).output().unwrap();
    let envelope = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
    };

    let ok = run(&[
        "call",
        "hello",
        "--agent",
        AGENT,
        "--input",
        r#"{"name":"Ada"}"#,
        "--json",
    ]);
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(stdout(&ok).trim().lines().count(), 1);
    let e = envelope(&ok);
    assert!(e["call_id"].as_str().unwrap().len() >= 32);
    assert_eq!(e["tool"], "hello");
    assert_eq!(e["agent"], AGENT);
    assert_eq!(e["decision"]["outcome"], "allow");
    assert!(
        e["decision"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("tester")
    );
    assert_eq!(e["outcome"], "ok");
    assert_eq!(e["output"]["greeting"], "Hello, Ada!");
    assert!(e["egress"].as_array().unwrap().is_empty());
    assert!(e["duration_ms"].as_f64().unwrap() > 0.0);

    let limited_key = f.key_file("limited");
    let denied = f.run(&[
        "call",
        "write-note",
        "--agent",
        "limited",
        "--agent-key",
        limited_key.to_str().unwrap(),
        "--input",
        r#"{"name":"n","text":"t"}"#,
        "--json",
    ]);
    assert_eq!(denied.status.code(), Some(3));
    let e = envelope(&denied);
    assert_eq!(e["decision"]["outcome"], "deny");
    assert!(
        e["decision"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("deny by default")
    );
    assert_eq!(e["error"]["kind"], "denied");

    let trapped = run(&[
        "call",
        "hostile-cpu",
        "--agent",
        AGENT,
        "--input",
        r#"{"attack":"loop"}"#,
        "--json",
    ]);
    assert_eq!(trapped.status.code(), Some(5));
    assert_eq!(envelope(&trapped)["error"]["kind"], "cpu_limit");

    let failed = run(&[
        "call",
        "read-file",
        "--agent",
        AGENT,
        "--input",
        r#"{"path":"missing"}"#,
        "--json",
    ]);
    assert_eq!(failed.status.code(), Some(5));
    assert_eq!(envelope(&failed)["error"]["kind"], "tool_error");
}

#[test]
fn the_compile_cache_is_reused_across_processes() {
    let f = Fixture::new();
    let run = || f.call_cli("hello", r#"{"name":"x"}"#, &[]);
    assert_eq!(run().status.code(), Some(0));
    let cached = files_under(&f.path().join("state/cache"));
    assert_eq!(cached.len(), 1, "{cached:?}");
    let modified = std::fs::metadata(&cached[0]).unwrap().modified().unwrap();
    assert_eq!(run().status.code(), Some(0));
    assert_eq!(
        std::fs::metadata(&cached[0]).unwrap().modified().unwrap(),
        modified
    );
}

#[test]
fn the_demo_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Welcome to Warden"), "{text}");
    assert!(text.contains("\"status\":200"), "{text}");
    assert!(text.contains("deny GET http://169.254.169.254"), "{text}");
    assert!(
        text.contains("The upstream received 1 request(s)"),
        "{text}"
    );
    assert!(!dir.path().join("data/pwned.txt").exists());
    // Held for approval, approved by carol, run once, replay refused, audit verified, a
    // revoked agent refused.
    for expected in [
        "decision  ApprovalRequired",
        "as `carol`",
        "result    ok: {\"deleted\":\"/notes/draft.txt\"}",
        "has already been used",
        "and verifies",
        "(approved by carol)",
        "agent `demo-agent` was revoked",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in {text}");
    }
}

#[test]
fn a_component_importing_what_warden_does_not_provide_is_refused() {
    let f = empty();
    let dir = tool_copy(&f, "hostile-imports");
    assert_add_refused(&f, &dir, "hostile:imports/backdoor");
}

/// The author's loop: a rebuilt tool replaces the registered one (`--replace`: the new digest
/// runs, the old one's compiled form goes, the change is on the chain); `tool remove` takes a
/// registered tool away; a tool of `tool_dirs` is the operator's and is neither replaced nor
/// removed; each refusal is one line, exit 2.
#[test]
fn a_rebuilt_tool_replaces_the_registered_one_and_a_registered_tool_can_be_removed() {
    let f = empty();
    let dir = tool_copy(&f, "hello");
    assert_exit(&add(&f, &dir), 0);
    let hello = || f.call_cli("hello", r#"{"name":"x"}"#, &["--json"]);
    let first: serde_json::Value = serde_json::from_slice(&hello().stdout).unwrap();
    let old = first["tool_digest"].as_str().unwrap().to_string();
    let compiled = |digest: &str| {
        let hex = digest.trim_start_matches("sha256:").to_string();
        files_under(&f.path().join("state/cache"))
            .iter()
            .any(|p| p.file_name().unwrap().to_string_lossy().starts_with(&hex))
    };
    assert!(compiled(&old));

    // Rebuilt: another component (a custom section added), its digest unpinned.
    let wasm = dir.join("hello.wasm");
    let mut component = std::fs::read(&wasm).unwrap();
    let (name, tag) = (b"warden-test", b"rebuilt");
    component.extend([0, (1 + name.len() + tag.len()) as u8, name.len() as u8]);
    component.extend(name);
    component.extend(tag);
    std::fs::write(&wasm, &component).unwrap();
    set_digest(&dir, "");
    let refused = add(&f, &dir);
    assert_exit(&refused, 2);
    assert!(
        stderr(&refused).contains("--replace"),
        "{}",
        stderr(&refused)
    );
    let out = f
        .cli()
        .args(["tool", "add", "--replace"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("replaced hello"), "{}", stdout(&out));
    let second: serde_json::Value = serde_json::from_slice(&hello().stdout).unwrap();
    let new = second["tool_digest"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(!compiled(&old), "the old digest's compiled form stayed");

    let removed = f.run(&["tool", "remove", "hello"]);
    assert_exit(&removed, 0);
    assert!(!f.path().join("state/tools/hello").exists());
    assert_exit(&hello(), 2);
    let tail = stdout(&f.run(&["audit", "tail"]));
    assert!(tail.contains("tool `hello` added"), "{tail}");
    assert!(
        tail.contains(&format!("tool `hello` replaced ({old} -> {new})")),
        "{tail}"
    );
    assert!(
        tail.contains(&format!("tool `hello` removed ({new})")),
        "{tail}"
    );
    assert_exit(&f.run(&["audit", "verify"]), 0);

    // Unknown, and the operator's own directory.
    let unknown = f.run(&["tool", "remove", "hello"]);
    assert_refused(&f, &unknown, 2, "no tool named `hello`");
    let f = Fixture::new();
    let theirs = f.run(&["tool", "remove", "hello"]);
    assert_exit(&theirs, 2);
    assert!(stderr(&theirs).contains("tool_dirs"), "{}", stderr(&theirs));
    assert!(f.path().join("tools/hello/tool.toml").is_file());
}

/// Signed tools: a publisher signs (`warden tool sign`); a deployment that requires
/// signatures registers and runs the signed tool and refuses, each in one line, a tampered
/// manifest, a tampered component, a signature by a key it does not list, and an unsigned
/// tool; a signature removed after registration is refused at the next load; revoking the
/// publisher stops the next call.
#[test]
fn tools_are_signed_by_listed_publishers_and_checked_at_every_load() {
    let f = empty();
    let acme = ed25519_dalek::SigningKey::from_bytes(&[21; 32]);
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[22; 32]);
    let key_file = |name: &str, key: &ed25519_dalek::SigningKey| {
        let path = f.path().join(format!("keys/{name}.key"));
        warden::identity::keys::write_private(&path, key).unwrap();
        path
    };
    let (acme_key, stranger_key) = (key_file("acme", &acme), key_file("stranger", &stranger));
    f.extend_deployment(&format!(
        "[publishers.acme]\npublic_key = \"{}\"\n[signing]\nrequired = true\n",
        warden::identity::keys::format_public(&acme.verifying_key())
    ));
    let sign = |dir: &Path, key: &Path| {
        let out = f
            .cli()
            .args(["tool", "sign"])
            .arg(dir)
            .arg("--key")
            .arg(key)
            .output()
            .unwrap();
        assert_exit(&out, 0);
        assert!(
            stdout(&out).contains("signed hello (sha256:"),
            "{}",
            stdout(&out)
        );
    };

    // Unsigned; signed by a stranger; signed, then its manifest or component changed.
    let unsigned = tool_copy(&f, "hello");
    assert_add_refused(&f, &unsigned, "is not signed");
    let by_stranger = copy_built_tool("hello", &f.path().join("stranger"));
    sign(&by_stranger, &stranger_key);
    assert_add_refused(&f, &by_stranger, "no [publishers] entry lists");
    let manifest_changed = copy_built_tool("hello", &f.path().join("manifest-changed"));
    sign(&manifest_changed, &acme_key);
    edit(&manifest_changed.join("tool.toml"), |t| {
        t.replace("sensitivity = \"public\"", "sensitivity = \"internal\"")
    });
    assert_add_refused(&f, &manifest_changed, "does not verify");
    let component_changed = copy_built_tool("hello", &f.path().join("component-changed"));
    sign(&component_changed, &acme_key);
    let wasm = component_changed.join("hello.wasm");
    let mut component = std::fs::read(&wasm).unwrap();
    component.extend([0, 2, 1, b'x']);
    std::fs::write(&wasm, &component).unwrap();
    set_digest(
        &component_changed,
        &format!("digest = \"{}\"", warden::manifest::Digest::of(&component)),
    );
    assert_add_refused(&f, &component_changed, "does not verify");

    // Signed by acme: registered, shown, run.
    let signed = copy_built_tool("hello", &f.path().join("signed"));
    set_digest(&signed, "");
    sign(&signed, &acme_key);
    assert!(
        std::fs::read_to_string(signed.join("tool.toml"))
            .unwrap()
            .contains("digest = ")
    );
    assert_exit(&add(&f, &signed), 0);
    let inspect = f.run(&["tool", "inspect", "hello", "--json"]);
    let view: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(view["publisher"], "acme");
    let hello = || f.call_cli("hello", r#"{"name":"x"}"#, &[]);
    assert_exit(&hello(), 0);

    // Every load checks: the registered copy's signature removed → refused.
    let sig = f.path().join("state/tools/hello/tool.sig");
    let kept = std::fs::read(&sig).unwrap();
    std::fs::remove_file(&sig).unwrap();
    let out = hello();
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("is not signed"), "{}", stderr(&out));
    std::fs::write(&sig, kept).unwrap();
    assert_exit(&hello(), 0);

    // The publisher revoked (by name: its key is what is revoked): its tool's next call is
    // refused. A name no [publishers] entry has is refused.
    let unknown = f.run(&["revoke", "publisher", "acme-typo"]);
    assert_exit(&unknown, 2);
    assert!(
        stderr(&unknown).contains("no publisher `acme-typo`"),
        "{}",
        stderr(&unknown)
    );
    assert_exit(
        &f.run(&["revoke", "publisher", "acme", "--reason", "key leaked"]),
        0,
    );
    let out = hello();
    assert_exit(&out, 3);
    let key = warden::identity::keys::format_public(&acme.verifying_key());
    assert!(
        stderr(&out).contains(&format!("publisher `{key}` was revoked (key leaked)")),
        "{}",
        stderr(&out)
    );
}
