//! The library's layering (`../shared/DESIGN.md`, README "Layout"), checked on its sources:
//! no import circle between its files, and the lower layers free of what sits above them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn library() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../warden/src")
}

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            found.push((path, text));
        }
    }
    found
}

#[test]
fn the_library_has_no_import_circle() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/layering.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(library())
        .output()
        .expect("running tests/layering.py (python3)");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains(" 0 circles"), "{printed}");
}

#[test]
fn lower_layers_know_nothing_of_the_layers_above() {
    // (the files of a layer, what they must not name)
    let rules: [(&str, &[&str]); 5] = [
        (
            "",
            &["clap::", "rmcp::", "axum::", "warden_cli", "warden_server"],
        ),
        ("state", &["crate::audit", "crate::call", "crate::report"]),
        ("audit.rs", &["crate::call"]),
        (
            "credentials",
            &["wasmtime", "crate::bindings", "crate::engine"],
        ),
        (
            "identity",
            &["wasmtime", "crate::bindings", "crate::engine"],
        ),
    ];
    let all = sources(&library());
    for (layer, forbidden) in rules {
        let root = library().join(layer);
        for (path, text) in all.iter().filter(|(p, _)| p.starts_with(&root)) {
            for name in forbidden {
                assert!(
                    !text.contains(name),
                    "{} names {name}, which its layer must not know",
                    path.display()
                );
            }
        }
    }
    // Policy answers the mediator; it implements no trait of the sandbox.
    for (path, text) in all
        .iter()
        .filter(|(p, _)| p.starts_with(library().join("policy")))
    {
        assert!(!text.contains("EgressGate"), "{}", path.display());
    }
}
