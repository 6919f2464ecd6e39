//! Builds the tools in `../tools` for wasm32-wasip2 (a nested cargo in its own target
//! directory, as wasmtime's test-programs do) and assembles each into
//! `$OUT_DIR/tools/<name>/` with its manifest and the component, digest pinned. The demo
//! embeds some of them; the tests run all of them.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../..");
    let tools = root.join("tools");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed={}", tools.display());
    println!("cargo:rerun-if-changed={}", root.join("host-api").display());

    // Shared by every profile of the host build, so the guests are built once.
    let target_dir = out.ancestors().nth(4).unwrap().join("wasm-tools");
    println!(
        "cargo:rustc-env=WARDEN_GUEST_TARGET_DIR={}",
        target_dir.display()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&tools)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    // Do not leak the host build's settings into the guest build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_") && key != "CARGO_HOME"
            || key == "RUSTFLAGS"
            || key == "RUSTC_WRAPPER"
        {
            build.env_remove(key.as_ref());
        }
    }
    let status = build.status().expect("running cargo for the tools");
    if !status.success() {
        panic!(
            "building the tools for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
        );
    }

    let artifacts = target_dir.join("wasm32-wasip2/release");
    let assembled = out.join("tools");
    let _ = std::fs::remove_dir_all(&assembled);
    for manifest in find_manifests(&tools) {
        let text = std::fs::read_to_string(&manifest).unwrap();
        let name = field(&text, "name");
        let component = field(&text, "component");
        // A component written as WebAssembly text (one Rust cannot express) is compiled here.
        let wat = manifest.with_file_name(Path::new(&component).with_extension("wat"));
        let bytes = if wat.is_file() {
            wat::parse_file(&wat).unwrap_or_else(|e| panic!("{}: {e}", wat.display()))
        } else {
            std::fs::read(artifacts.join(&component)).unwrap_or_else(|e| {
                panic!(
                    "{}: component {component} was not built: {e}",
                    manifest.display()
                )
            })
        };
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let dir = assembled.join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(&component), &bytes).unwrap();
        let pinned = text.replacen(
            &format!("component = \"{component}\""),
            &format!("component = \"{component}\"\ndigest = \"{digest}\""),
            1,
        );
        std::fs::write(dir.join("tool.toml"), pinned).unwrap();
        // A tool's own cases (`warden test`); empty when it has none, so that every built
        // tool can embed the file.
        let tests =
            std::fs::read_to_string(manifest.with_file_name("tests.toml")).unwrap_or_default();
        std::fs::write(dir.join("tests.toml"), tests).unwrap();
    }
    println!("cargo:rustc-env=WARDEN_BUILT_TOOLS={}", assembled.display());
}

fn find_manifests(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() && path.file_name().is_some_and(|n| n != "target") {
            // Python and JavaScript tools are built by `warden tool build` (tests/authoring.rs).
            let interpreted = path.join("app.py").is_file() || path.join("app.js").is_file();
            if path.join("tool.toml").is_file() && !interpreted {
                found.push(path.join("tool.toml"));
            }
            found.extend(find_manifests(&path));
        }
    }
    found.sort();
    found
}

/// The value of a top-level `key = "value"` line.
fn field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("manifest has no `{key}`"))
}
