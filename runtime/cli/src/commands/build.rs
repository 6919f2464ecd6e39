//! `warden tool build DIR`: the author's build, one command for every language. It finds the
//! language from the directory (`Cargo.toml`, `app.py`, `package.json`, as `warden new` makes
//! them), runs its build tool with the output shown as it comes, puts the component where
//! `tool.toml` says, and pins its digest there, ready for `warden tool add --replace`.

use crate::UsageError;
use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use warden::manifest::{Digest, MANIFEST_FILE, Manifest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Rust,
    Python,
    Js,
}

/// The language of the tool in `dir`.
fn language(dir: &Path) -> Result<Lang, UsageError> {
    let has = |file: &str| dir.join(file).is_file();
    match (has("Cargo.toml"), has("app.py"), has("package.json")) {
        (true, false, false) => Ok(Lang::Rust),
        (false, true, false) => Ok(Lang::Python),
        (false, false, true) => Ok(Lang::Js),
        _ => Err(UsageError(format!(
            "{}: cannot tell how to build it: expected one of Cargo.toml (Rust), app.py \
             (Python) or package.json (JavaScript), as `warden new` makes them",
            dir.display()
        ))),
    }
}

/// `program` (on PATH), or why it cannot be run.
fn program(name: &str, install: &str) -> Result<PathBuf, UsageError> {
    std::env::var_os("PATH")
        .and_then(|path| {
            // Only absolute entries: a relative one would find the program in the tool's
            // directory, which the build runs in.
            std::env::split_paths(&path)
                .filter(|dir| dir.is_absolute())
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
        .ok_or_else(|| UsageError(format!("`{name}` is not installed (on PATH): {install}")))
}

/// Runs one step of the build, its output going to the author's terminal.
fn step(what: &str, command: &mut Command) -> Result<()> {
    eprintln!("warden: {what}");
    let status = command
        .status()
        .with_context(|| format!("{what}: cannot start it"))?;
    if !status.success() {
        return Err(UsageError(format!("{what} failed ({status}); its output is above")).into());
    }
    Ok(())
}

/// Builds the crate in `dir` with cargo, in `dir` (its own `.cargo/config.toml` and
/// toolchain file apply), and returns the component cargo says it made: wherever its target
/// directory is, never one left from an earlier build.
fn cargo_build(dir: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    eprintln!("warden: building with cargo (wasm32-wasip2, release; a first build takes a minute)");
    let output = Command::new(cargo)
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("building with cargo: cannot start it")?;
    if !output.status.success() {
        return Err(UsageError(format!(
            "building with cargo failed ({}); its output is above",
            output.status
        ))
        .into());
    }
    // The last `.wasm` of a cdylib cargo reports made is the crate's.
    let made = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"))
        })
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
        })
        .rfind(|f| f.extension().is_some_and(|e| e == "wasm"));
    made.ok_or_else(|| {
        UsageError(
            "cargo built no component: the crate must be a `cdylib` (`[lib] crate-type = \
             [\"cdylib\"]`)"
                .into(),
        )
        .into()
    })
}

/// The world a Python or JavaScript tool targets: `tool-wasi` (files and HTTP by name) when
/// its vendored WIT has it, else `tool` (a directory `warden new` made before it did).
fn world(dir: &Path) -> &'static str {
    match std::fs::read_to_string(dir.join("wit/world.wit")) {
        Ok(wit)
            if wit
                .lines()
                .any(|l| l.trim_start().starts_with("world tool-wasi ")) =>
        {
            "tool-wasi"
        }
        _ => "tool",
    }
}

pub fn run(dir: &Path) -> Result<i32> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest = Manifest::load(&manifest_path).map_err(|e| UsageError(e.to_string()))?;
    let lang = language(dir)?;
    let component = dir.join(&manifest.component);
    let started = Instant::now();
    let built = match lang {
        Lang::Rust => cargo_build(dir)?,
        Lang::Python => {
            let componentize = program(
                "componentize-py",
                "pip install -r requirements.txt (componentize-py 0.25.1)",
            )?;
            step(
                "componentizing with componentize-py (about 15 s)",
                Command::new(componentize)
                    .current_dir(dir)
                    .args(["-d", "wit", "-w", world(dir), "componentize", "app", "-o"])
                    .arg(&manifest.component),
            )?;
            component.clone()
        }
        Lang::Js => {
            // Absolute: the command runs in `dir`.
            let local = std::path::absolute(dir.join("node_modules/.bin/componentize-js"))?;
            if !local.is_file() {
                let npm = program("npm", "install Node.js 20 or later (with npm)")?;
                // `ci` installs exactly what package-lock.json pins (and checks its hashes).
                let install = match dir.join("package-lock.json").is_file() {
                    true => "ci",
                    false => "install",
                };
                step(
                    "installing componentize-js with npm (once; about 30 s)",
                    // No package in the lock needs an install script: none runs.
                    Command::new(npm).current_dir(dir).args([
                        install,
                        "--ignore-scripts",
                        "--no-audit",
                        "--no-fund",
                        "--loglevel=error",
                    ]),
                )?;
            }
            step(
                "componentizing with componentize-js (about 15 s)",
                Command::new(&local)
                    .current_dir(dir)
                    .args(["--wit", "wit", "--world-name", world(dir), "-o"])
                    .arg(&manifest.component)
                    .arg("app.js"),
            )?;
            component.clone()
        }
    };
    let bytes =
        std::fs::read(&built).with_context(|| format!("the build made no {}", built.display()))?;
    if built != component {
        std::fs::write(&component, &bytes)
            .with_context(|| format!("{}: cannot write", component.display()))?;
    }
    let digest = Digest::of(&bytes);
    let text = std::fs::read_to_string(&manifest_path)?;
    let pinned = warden::registry::set_digest(&text, &digest);
    let file = manifest_path.display().to_string();
    // What is written must say what was built: checked, then put in place whole.
    match Manifest::parse(&pinned, &file) {
        Ok(m) if m.digest.as_ref() == Some(&digest) => {}
        _ => {
            return Err(UsageError(format!(
                "{file}: cannot pin the digest in it (write `component = \"…\"` and \
                 `digest = \"…\"` as plain top-level keys); the component is {digest}"
            ))
            .into());
        }
    }
    if pinned != text {
        let staged = manifest_path.with_file_name(".tool.toml.warden-build");
        std::fs::write(&staged, &pinned)
            .and_then(|()| std::fs::rename(&staged, &manifest_path))
            .with_context(|| format!("{file}: cannot write"))?;
    }
    if dir.join(warden::signing::SIGNATURE_FILE).is_file() {
        eprintln!(
            "warden: {} is now stale (it signs the previous build): sign again with `warden tool \
             sign`",
            dir.join(warden::signing::SIGNATURE_FILE).display()
        );
    }
    println!(
        "built {}: {} ({:.1} MB) in {:.0} s, {digest} pinned in {}\nnext: warden tool add --replace {}",
        manifest.name,
        component.display(),
        bytes.len() as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        manifest_path.display(),
        dir.display()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_is_told_by_the_files_warden_new_makes() {
        let dir = tempfile::tempdir().unwrap();
        assert!(language(dir.path()).is_err());
        std::fs::write(dir.path().join("app.py"), "").unwrap();
        assert_eq!(language(dir.path()).unwrap(), Lang::Python);
        std::fs::write(dir.path().join("package.json"), "{}").unwrap();
        assert!(language(dir.path()).is_err(), "two languages: which?");
    }
}
