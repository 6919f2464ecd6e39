//! `warden audit verify|show|tail`: read the audit chain. Everything printed from it goes
//! through `text::printable` or `text::printable_json`: agents, tools and upstreams chose much
//! of what the records hold.

use crate::UsageError;
use anyhow::Result;
use clap::Subcommand;
use std::path::Path;
use warden::audit;
use warden::deployment::Deployment;
use warden::state;
use warden::text::{printable, printable_json};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; name the first record that was edited, deleted or moved
    /// (exit 1), else print the number of records and the head hash, and name the calls
    /// that started and never finished (killed while their tool ran, or still running):
    /// the chain is intact, so they do not change the exit code (0).
    Verify {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Explain a call: who, on whose behalf, what it reached, which policies allowed it.
    Show {
        call_id: String,
        /// Print the call's records as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The last calls, oldest first.
    Tail {
        /// How many records.
        #[arg(long, short = 'n', default_value_t = 20)]
        count: usize,
        /// One JSON record per line (egress records included).
        #[arg(long)]
        json: bool,
    },
}

pub fn run(config: &Path, command: AuditCommand) -> Result<i32> {
    let deployment = Deployment::load(config)?;
    let store = state::open(&deployment)?;
    match command {
        AuditCommand::Verify { json } => match audit::verify(store.as_ref())? {
            Ok(verified) => {
                if json {
                    let answer = serde_json::json!({ "valid": true, "chain": verified });
                    println!("{}", printable_json(&answer.to_string()));
                } else {
                    println!(
                        "audit chain valid: {} records ({} calls), head {}",
                        verified.records, verified.calls, verified.head
                    );
                    for unfinished in &verified.unfinished {
                        println!("{}", printable(&unfinished.to_string()));
                    }
                }
                Ok(0)
            }
            Err(broken) => {
                if json {
                    let answer = serde_json::json!({ "valid": false, "broken": broken });
                    println!("{}", printable_json(&answer.to_string()));
                }
                eprintln!(
                    "error: audit chain broken at {}",
                    printable(&broken.to_string())
                );
                Ok(1)
            }
        },
        AuditCommand::Show { call_id, json } => {
            let links = store.audit_of_call(&call_id)?;
            if links.is_empty() {
                return Err(UsageError(format!(
                    "no audit record of call `{}`",
                    printable(&call_id)
                ))
                .into());
            }
            if json {
                let records = links.iter().map(audit::parse).collect::<Result<Vec<_>>>()?;
                let text = serde_json::to_string_pretty(&records)?;
                println!("{}", printable_json(&text));
            } else {
                print!("{}", audit::explain(&links)?);
            }
            Ok(0)
        }
        AuditCommand::Tail { count, json } => {
            for link in store.audit_tail(count)? {
                if json {
                    println!("{}", printable_json(&link.body));
                } else if let Some(line) = audit::summary(&link)? {
                    println!("{line}");
                }
            }
            Ok(0)
        }
    }
}
