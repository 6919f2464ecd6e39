//! Isolation proven on a deployment's real grants: `warden drill isolation` holds on the
//! example deployment and says so in JUnit XML a real reader parses; it fails (exit 1, the
//! matching row escaped) when a control is switched off in this test build; `warden test`
//! passes a tool's own cases and names the one that fails.

use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The example deployment as `warden demo --dir D --keep` writes it, as the README's CI job
/// makes it; shared by the tests here, each drilling its own stand-ins.
fn example() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = warden()
            .args(["demo", "--keep", "--dir"])
            .arg(dir.path().join("example"))
            .output()
            .unwrap();
        assert_exit(&out, 0);
        dir
    })
    .path()
    .join("example")
}

fn warden() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.env_remove("WARDEN_LOG")
        .env_remove("WARDEN_INJECT_FAULTS");
    cmd
}

/// `warden drill isolation ARGS --json` on the example deployment, with `faults` switched off.
fn drill(args: &[&str], faults: &str) -> (Output, Vec<Value>) {
    let out = warden()
        .arg("--config")
        .arg(example().join("warden.toml"))
        .args(["drill", "isolation", "--json"])
        .args(args)
        .env("WARDEN_INJECT_FAULTS", faults)
        .output()
        .unwrap();
    let rows = serde_json::from_str(&stdout(&out)).unwrap_or_default();
    (out, rows)
}

fn verdict<'a>(rows: &'a [Value], tool: &str, attack: &str) -> Vec<&'a str> {
    rows.iter()
        .filter(|r| r["tool"] == tool && r["attack"] == attack)
        .map(|r| r["verdict"].as_str().unwrap())
        .collect()
}

#[test]
fn every_row_holds_on_the_example_deployment_and_the_junit_parses() {
    let junit = tempfile::tempdir().unwrap();
    let file = junit.path().join("isolation.xml");
    let (out, rows) = drill(&["--junit", file.to_str().unwrap()], "");
    assert_exit(&out, 0);
    let escaped: Vec<&Value> = rows.iter().filter(|r| r["verdict"] == "escaped").collect();
    assert!(escaped.is_empty(), "{escaped:#?}");
    // Every tool of the deployment, and every attack class on the grants that have one.
    for tool in [
        "hello",
        "read-file",
        "write-note",
        "delete-note",
        "http-get",
        "hostile-fs",
    ] {
        for attack in [
            "name lookup",
            "raw tcp",
            "raw udp",
            "environment",
            "memory",
            "cpu",
            "wall time",
            "output",
            "stdout flood",
        ] {
            assert_eq!(verdict(&rows, tool, attack), ["held"], "{tool} {attack}");
        }
    }
    for attack in [
        "leave mount: ..",
        "leave mount: absolute",
        "symlink placed",
        "symlink made",
        "hard link",
        "write read-only",
    ] {
        assert_eq!(verdict(&rows, "read-file", attack), ["held"], "{attack}");
    }
    assert_eq!(verdict(&rows, "write-note", "disk quota"), ["held"]);
    for attack in [
        "egress: other host",
        "egress: other port",
        "egress: other method",
        "egress: url tricks",
        "request budget",
        "credential read-back",
        "credential in sandbox",
    ] {
        assert!(
            verdict(&rows, "http-get", attack).contains(&"held"),
            "{attack}"
        );
    }

    let report = parse_junit(&file);
    assert_eq!(report["tests"], rows.len());
    assert_eq!(report["failures"], 0);
    let suites: Vec<&str> = report["suites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(suites.len(), 6, "{suites:?}");

    // The drill's calls are in the deployment's audit, marked as a drill, the chain intact.
    let audit = warden()
        .arg("--config")
        .arg(example().join("warden.toml"))
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert_exit(&audit, 0);
    let state = rusqlite::Connection::open(example().join("state/warden.db")).unwrap();
    let drills: i64 = state
        .query_row(
            "SELECT count(*) FROM audit WHERE body LIKE '%\"kind\":\"drill\"%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(drills >= rows.len() as i64 / 2, "{drills} drill records");
}

/// Each fault switches one control off in this test build; the rows that attack it turn red
/// and the drill exits 1.
fn assert_fault_caught(fault: &str, tool: &str, attacks: &[&str]) {
    let (out, rows) = drill(&["--tool", tool], fault);
    assert_exit(&out, 1);
    for attack in attacks {
        assert!(
            verdict(&rows, tool, attack).contains(&"escaped"),
            "{fault}: {tool} {attack} did not escape: {rows:#?}"
        );
    }
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "faults exist in debug test builds only"
)]
fn unscrubbed_responses_are_caught() {
    assert_fault_caught("no-scrubbing", "http-get", &["credential read-back"]);
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "faults exist in debug test builds only"
)]
fn a_read_only_mount_opened_read_write_is_caught() {
    assert_fault_caught(
        "read-only-mounts-writable",
        "read-file",
        &["write read-only"],
    );
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "faults exist in debug test builds only"
)]
fn a_skipped_egress_rule_check_is_caught() {
    assert_fault_caught(
        "no-egress-rule-check",
        "http-get",
        &[
            "egress: other host",
            "egress: other method",
            "egress: url tricks",
        ],
    );
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "faults exist in debug test builds only"
)]
fn a_lifted_memory_limit_is_caught() {
    assert_fault_caught("no-memory-limit", "hello", &["memory"]);
}

#[test]
fn a_tool_test_passes_its_cases_and_names_the_one_that_fails() {
    for tool in ["hello", "read-file", "http-get"] {
        let junit = tempfile::tempdir().unwrap();
        let file = junit.path().join("tests.xml");
        let out = warden()
            .arg("test")
            .arg(example().join("tools").join(tool))
            .arg("--junit")
            .arg(&file)
            .output()
            .unwrap();
        assert_exit(&out, 0);
        let report = parse_junit(&file);
        assert!(report["tests"].as_u64().unwrap() >= 2, "{report}");
        assert_eq!(report["failures"], 0);
    }

    // The same tool, one expectation wrong.
    let dir = tempfile::tempdir().unwrap();
    let hello = copy_dir(&example().join("tools/hello"), dir.path());
    std::fs::write(
        hello.join("tests.toml"),
        "[[case]]\nname = \"greets\"\ninput = { name = \"Ada\" }\noutput = { greeting = \"Hello, Ada!\" }\n\n\
         [[case]]\nname = \"says goodbye\"\ninput = { name = \"Ada\" }\noutput = { greeting = \"Goodbye, Ada!\" }\n",
    )
    .unwrap();
    let out = warden().arg("test").arg(&hello).output().unwrap();
    assert_exit(&out, 1);
    assert!(
        stdout(&out).contains("FAIL   hello / says goodbye"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("pass   hello / greets"),
        "{}",
        stdout(&out)
    );
    let out = warden()
        .arg("test")
        .arg(&hello)
        .arg("--json")
        .output()
        .unwrap();
    let outcomes: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(outcomes[1]["passed"], false);
    assert!(
        outcomes[1]["detail"].as_str().unwrap().contains("Goodbye"),
        "{outcomes:?}"
    );
}

#[test]
fn a_bad_tests_file_is_refused_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let hello = copy_dir(&example().join("tools/hello"), dir.path());
    for (text, names) in [
        (
            "[[case]]\nname = \"x\"\ninput = {}\nouptut = {}\n",
            "ouptut",
        ),
        (
            "[[case]]\nname = \"x\"\ninput = {}\nfiles = { \"/etc/passwd\" = \"x\" }\n",
            "files",
        ),
        (
            "[[case]]\nname = \"x\"\ninput = {}\n[[case.upstream]]\nstatus = 200\n",
            "upstream",
        ),
    ] {
        std::fs::write(hello.join("tests.toml"), text).unwrap();
        let out = warden().arg("test").arg(&hello).output().unwrap();
        assert_exit(&out, 2);
        let error = stderr(&out);
        assert!(
            error.contains("tests.toml") && error.contains(names),
            "{error}"
        );
        assert_eq!(error.trim().lines().count(), 1, "{error}");
    }
}

fn copy_dir(from: &Path, into: &Path) -> PathBuf {
    let to = into.join(from.file_name().unwrap());
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    to
}
