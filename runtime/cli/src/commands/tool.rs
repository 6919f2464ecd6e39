//! `warden tool add|remove|list|inspect`.

use crate::UsageError;
use anyhow::Result;
use clap::Subcommand;
use std::path::{Path, PathBuf};
use warden::audit::ToolAction;
use warden::deployment::Deployment;
use warden::registry;
use warden::runtime::Runtime;
use warden::text::{printable, printable_json};

#[derive(Subcommand)]
pub enum ToolCommand {
    /// Verify a tool directory (manifest, digest, component, imports) and register a copy.
    Add {
        /// Directory holding tool.toml and the component.
        dir: PathBuf,
        /// Replace the registered tool of that name (a rebuilt tool): the old digest's
        /// compiled form is evicted, the change audited. Running nodes load the new one at
        /// their next reload (SIGHUP).
        #[arg(long)]
        replace: bool,
    },
    /// Remove a registered tool (`warden tool add` put it there); its compiled form is
    /// evicted, the change audited.
    Remove { name: String },
    /// Sign a tool directory as its publisher: pins the component's digest in tool.toml if
    /// it is not, then writes tool.sig (Ed25519 over the digest and the manifest). A
    /// deployment that lists the key in `[publishers]` verifies it at every load.
    Sign {
        dir: PathBuf,
        /// The publisher's private key file (from `warden keygen`).
        #[arg(long)]
        key: PathBuf,
    },
    /// Build the tool in DIR (Rust, Python or JavaScript, as `warden new` made it) and pin
    /// the component's digest in its tool.toml.
    Build { dir: PathBuf },
    /// List the registered tools.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a tool's digest, impact, mounts, egress rules, limits and input schema.
    Inspect {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Path, command: ToolCommand) -> Result<i32> {
    // Read here, needed by all but `sign` (a publisher has no deployment of their own).
    let deployment = Deployment::load(config);
    match command {
        ToolCommand::Add { dir, replace } => {
            if !dir.join(warden::manifest::MANIFEST_FILE).is_file() {
                return Err(UsageError(format!(
                    "{}: no tool.toml in this directory",
                    dir.display()
                ))
                .into());
            }
            let files = registry::read_tool(&dir, false)?;
            let runtime = Runtime::new(deployment?)?;
            let name = files.manifest.name.clone();
            let digest = files.digest.clone();
            // Vet everything before anything is written.
            let vetted = runtime
                .load(files.clone(), false)
                .await
                .map_err(|e| UsageError(format!("{}: {e:#}", dir.display())))?;
            // On the chain before the new copy takes the name: no change without its record.
            let mut replaced = None;
            let installed = registry::install(
                &runtime.deployment(),
                &files,
                replace,
                |replacing, previous| {
                    replaced = previous.cloned();
                    let action = match replacing {
                        true => ToolAction::Replaced,
                        false => ToolAction::Added,
                    };
                    Ok(runtime.record_tool_change(action, &name, Some(&digest), previous)?)
                },
            )
            .map_err(|e| UsageError(format!("{e:#}")))?;
            if let Some(old) = replaced.as_ref().filter(|old| **old != digest) {
                runtime.evict(&old.to_string());
            }
            // Keep what was compiled, so the first call does not compile again.
            runtime.keep_compiled(&vetted);
            match replaced {
                Some(old) => println!(
                    "replaced {name} ({old} -> {digest}) at {}",
                    installed.display()
                ),
                None => println!("registered {name} ({digest}) at {}", installed.display()),
            }
            Ok(0)
        }
        ToolCommand::Remove { name } => {
            let runtime = Runtime::new(deployment?)?;
            let mut removed = None;
            registry::remove(&runtime.deployment(), &name, |digest| {
                removed = digest.cloned();
                Ok(runtime.record_tool_change(ToolAction::Removed, &name, None, digest)?)
            })
            .map_err(|e| UsageError(format!("{e:#}")))?;
            if let Some(digest) = &removed {
                runtime.evict(&digest.to_string());
            }
            println!("removed {name}");
            Ok(0)
        }
        ToolCommand::Sign { dir, key } => sign(&dir, &key),
        ToolCommand::Build { dir } => super::build::run(&dir),
        ToolCommand::List { json } => {
            let mut rows = Vec::new();
            for dir in registry::tool_dirs(&deployment?) {
                match registry::read_tool(&dir, true) {
                    Ok(t) => rows.push(serde_json::json!({
                        "name": t.manifest.name,
                        "digest": t.digest.to_string(),
                        "kind": t.manifest.kind.as_str(),
                        "impact": t.manifest.impact,
                        "dir": dir.display().to_string(),
                    })),
                    Err(e) => rows.push(serde_json::json!({ "dir": dir.display().to_string(), "error": e.to_string() })),
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for row in &rows {
                    match row.get("error") {
                        Some(e) => println!(
                            "{:<20} INVALID  {}",
                            row["dir"].as_str().unwrap_or(""),
                            e.as_str().unwrap_or("")
                        ),
                        None => println!(
                            "{:<20} {:<8} {:<13} {}",
                            row["name"].as_str().unwrap_or(""),
                            row["kind"].as_str().unwrap_or(""),
                            row["impact"].as_str().unwrap_or(""),
                            row["digest"].as_str().unwrap_or("")
                        ),
                    }
                }
            }
            Ok(0)
        }
        ToolCommand::Inspect { name, json } => {
            let runtime = Runtime::new(deployment?)?;
            let tool = runtime.tool(&name).await?;
            let m = &tool.manifest;
            let view = serde_json::json!({
                "name": m.name,
                "description": tool.info.description,
                "kind": m.kind.as_str(),
                                "digest": tool.digest.to_string(),
                "publisher": tool.publisher,
                "impact": m.impact,
                "sensitivity": m.sensitivity,
                "limits": m.limits,
                "mounts": tool.grants.mounts,
                "egress": m.egress,
                "input_schema": tool.input_schema,
            });
            // The description is the component's own text.
            if json {
                println!("{}", printable_json(&serde_json::to_string_pretty(&view)?));
            } else {
                println!("{}  {}", m.name, printable(&tool.info.description));
                println!("  kind         {}", m.kind.as_str());
                println!("  digest       {}", tool.digest);
                println!(
                    "  publisher    {}",
                    tool.publisher.as_deref().unwrap_or("none (unsigned)")
                );
                println!("  impact       {:?}", m.impact);
                println!("  sensitivity  {:?}", m.sensitivity);
                let l = &m.limits;
                println!(
                    "  limits       memory {} · timeout {} · output {} · stdio {} · {} egress requests · {} response bytes",
                    l.memory,
                    warden::units::format_duration(l.timeout),
                    l.output,
                    l.stdio,
                    l.egress_requests,
                    l.response_bytes
                );
                for mount in &tool.grants.mounts {
                    println!(
                        "  mount        {} ({:?}) <- {}",
                        mount.guest,
                        mount.mode,
                        mount.host.display()
                    );
                }
                for rule in &m.egress {
                    let private = if rule.allow_private {
                        " (private addresses allowed)"
                    } else {
                        ""
                    };
                    let credential = rule
                        .credential
                        .as_ref()
                        .map_or(String::new(), |c| format!(" with credential `{c}`"));
                    println!(
                        "  egress       {} {}{private}{credential}",
                        rule.methods.join(","),
                        rule.url
                    );
                }
                println!(
                    "  input schema {}",
                    serde_json::to_string(&tool.input_schema)?
                );
            }
            Ok(0)
        }
    }
}

/// `warden tool sign`: pins the digest in the author's tool.toml if it is not, then writes
/// tool.sig beside it.
fn sign(dir: &Path, key: &Path) -> Result<i32> {
    let key = warden::identity::keys::read_private(key)?;
    let files = registry::read_tool(dir, false)?;
    let manifest_path = dir.join(warden::manifest::MANIFEST_FILE);
    let pinned = registry::pin_digest(&files.manifest_text, &files.digest);
    if pinned != files.manifest_text {
        std::fs::write(&manifest_path, &pinned)?;
    }
    let signature = warden::signing::sign(&key, &files.digest, pinned.as_bytes());
    std::fs::write(
        dir.join(warden::signing::SIGNATURE_FILE),
        serde_json::to_string_pretty(&signature)?,
    )?;
    println!(
        "signed {} ({}) with {}",
        files.manifest.name, files.digest, signature.public_key
    );
    Ok(0)
}
