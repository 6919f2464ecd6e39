//! `warden drill revocation|isolation`: the drills against this deployment (`crate::drill`).

use crate::drill::{isolation, revocation};
use crate::junit;
use anyhow::{Context as _, Result};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use warden::deployment::Deployment;

#[derive(Subcommand)]
pub enum DrillCommand {
    /// Revoke each kind (agent, delegation, session, credential, tool) while a throwaway
    /// call runs; print one row per kind; exit 1 if any row fails.
    Revocation {
        /// Make the revocations on another node of this deployment: its configuration (the
        /// same `[state]`, a state directory of its own). The drill's calls run on this one.
        #[arg(long, value_name = "CONFIG")]
        other_node: Option<PathBuf>,
        /// Print the rows as JSON.
        #[arg(long)]
        json: bool,
        /// Also write the rows as JUnit XML to this file.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Run Warden's hostile components under each tool's grants (its mounts, egress rules,
    /// credentials and limits; loopback stand-ins for upstreams and mounts); print a row per
    /// (tool, attack): held, escaped, unknown (the probe did not finish) or not applicable;
    /// exit 1 if any escaped or is unknown.
    Isolation {
        /// Drill only this tool (repeatable); default: every tool of the deployment.
        #[arg(long = "tool", value_name = "NAME")]
        tools: Vec<String>,
        /// Print the rows as JSON.
        #[arg(long)]
        json: bool,
        /// Also write the rows as JUnit XML to this file.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
}

pub async fn run(config: &Path, command: DrillCommand) -> Result<i32> {
    let deployment = Deployment::load(config)?;
    match command {
        DrillCommand::Revocation {
            other_node,
            json,
            junit,
        } => {
            let warden = std::env::current_exe().context("finding the warden binary")?;
            if let Some(other) = &other_node {
                same_state(&deployment, &Deployment::load(other)?)?;
            }
            let revoker = revocation::Revoker::Process {
                warden,
                config: other_node,
            };
            let rows = revocation::run(&deployment, revoker).await?;
            if let Some(file) = junit {
                let cases: Vec<junit::Case> = rows
                    .iter()
                    .map(|r| junit::Case {
                        suite: "revocation",
                        name: r.kind.clone(),
                        outcome: if r.passed {
                            junit::Outcome::Passed
                        } else {
                            junit::Outcome::Failed(format!(
                                "next request {}, next call {}",
                                r.next_request, r.next_call
                            ))
                        },
                        detail: &r.id,
                        seconds: 0.0,
                    })
                    .collect();
                junit::write(&file, "warden drill revocation", &cases)?;
            }
            print_rows(json, &rows, || revocation::table(&rows))?;
            Ok(if rows.iter().all(|r| r.passed) { 0 } else { 1 })
        }
        DrillCommand::Isolation { tools, json, junit } => {
            let rows = isolation::run(&deployment, &tools).await?;
            if let Some(file) = junit {
                let cases: Vec<junit::Case> = rows
                    .iter()
                    .map(|r| junit::Case {
                        suite: &r.tool,
                        name: format!("{} [{}]", r.attack, r.grant),
                        outcome: match r.verdict {
                            isolation::Verdict::Held => junit::Outcome::Passed,
                            isolation::Verdict::Escaped => {
                                junit::Outcome::Failed(format!("escaped: {}", r.attack))
                            }
                            isolation::Verdict::Inconclusive => {
                                junit::Outcome::Failed(format!("inconclusive: {}", r.attack))
                            }
                            isolation::Verdict::NotApplicable => {
                                junit::Outcome::Skipped(r.evidence.clone())
                            }
                        },
                        detail: &r.evidence,
                        seconds: r.seconds,
                    })
                    .collect();
                junit::write(&file, "warden drill isolation", &cases)?;
            }
            print_rows(json, &rows, || isolation::table(&rows))?;
            Ok(if rows.iter().any(|r| r.verdict.fails()) {
                1
            } else {
                0
            })
        }
    }
}

/// The rows as JSON, or as the table.
pub fn print_rows<T: serde::Serialize>(
    json: bool,
    rows: &[T],
    table: impl FnOnce() -> String,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
    } else {
        print!("{}", table());
    }
    Ok(())
}

/// `other` is another node of `deployment`: the same PostgreSQL state, or the same SQLite file.
fn same_state(deployment: &Deployment, other: &Deployment) -> Result<()> {
    let shared = match (&deployment.state.url, &other.state.url) {
        (Some(ours), Some(theirs)) => ours == theirs,
        (None, None) => {
            std::path::absolute(&deployment.state_dir)? == std::path::absolute(&other.state_dir)?
        }
        _ => false,
    };
    if !shared {
        return Err(crate::UsageError(format!(
            "{}: not another node of this deployment: its state store (`[state] url`, or \
             `state_dir` for SQLite) is not this deployment's",
            other.file.display()
        ))
        .into());
    }
    Ok(())
}
