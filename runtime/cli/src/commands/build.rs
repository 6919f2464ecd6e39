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
            std::env::split_paths(&path)
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

/// Where cargo puts the crate's component.
fn cargo_artifact(dir: &Path) -> Result<PathBuf> {
    let cargo_toml = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&cargo_toml)
        .with_context(|| format!("{}: cannot read", cargo_toml.display()))?;
    let parsed: toml::Table = text
        .parse()
        .map_err(|_| UsageError(format!("{}: not TOML", cargo_toml.display())))?;
    let package = parsed
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| UsageError(format!("{}: no [package] name", cargo_toml.display())))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    Ok(target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_"))))
}

pub fn run(dir: &Path) -> Result<i32> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest = Manifest::load(&manifest_path).map_err(|e| UsageError(e.to_string()))?;
    let lang = language(dir)?;
    let component = dir.join(&manifest.component);
    let started = Instant::now();
    let built = match lang {
        Lang::Rust => {
            let cargo =
                std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
            step(
                "building with cargo (wasm32-wasip2, release; a first build takes a minute)",
                Command::new(cargo)
                    .args([
                        "build",
                        "--release",
                        "--target",
                        "wasm32-wasip2",
                        "--manifest-path",
                    ])
                    .arg(dir.join("Cargo.toml")),
            )?;
            cargo_artifact(dir)?
        }
        Lang::Python => {
            let componentize = program(
                "componentize-py",
                "pip install -r requirements.txt (componentize-py 0.25.1)",
            )?;
            step(
                "componentizing with componentize-py (about 15 s)",
                Command::new(componentize)
                    .current_dir(dir)
                    .args(["-d", "wit", "-w", "tool", "componentize", "app", "-o"])
                    .arg(&manifest.component),
            )?;
            component.clone()
        }
        Lang::Js => {
            // Absolute: the command runs in `dir`.
            let local = std::path::absolute(dir.join("node_modules/.bin/componentize-js"))?;
            if !local.is_file() {
                let npm = program("npm", "install Node.js 20 or later (with npm)")?;
                step(
                    "installing componentize-js with npm (once; about 30 s)",
                    Command::new(npm).current_dir(dir).args([
                        "install",
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
                    .args(["--wit", "wit", "--world-name", "tool", "-o"])
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
    if pinned != text {
        std::fs::write(&manifest_path, pinned)
            .with_context(|| format!("{}: cannot write", manifest_path.display()))?;
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
