//! `warden audit verify|show|tail`: read the audit chain.

use super::UsageError;
use crate::audit;
use crate::deployment::Deployment;
use crate::state;
use anyhow::Result;
use clap::Subcommand;
use std::path::Path;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; name the first record that was edited, deleted or moved
    /// (exit 1), else print the number of records and the head hash.
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
    let store = state::open(&deployment.state_dir)?;
    match command {
        AuditCommand::Verify { json } => match audit::verify(store.as_ref())? {
            Ok(verified) => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "valid": true, "chain": verified })
                    );
                } else {
                    println!(
                        "audit chain valid: {} records ({} calls), head {}",
                        verified.records, verified.calls, verified.head
                    );
                }
                Ok(0)
            }
            Err(broken) => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "valid": false, "broken": broken })
                    );
                }
                eprintln!("error: audit chain broken at {broken}");
                Ok(1)
            }
        },
        AuditCommand::Show { call_id, json } => {
            let links = store.audit_of_call(&call_id)?;
            if links.is_empty() {
                return Err(UsageError(format!("no audit record of call `{call_id}`")).into());
            }
            if json {
                let records = links.iter().map(audit::parse).collect::<Result<Vec<_>>>()?;
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                print!("{}", audit::explain(&links)?);
            }
            Ok(0)
        }
        AuditCommand::Tail { count, json } => {
            for link in store.audit_tail(count)? {
                if json {
                    println!("{}", link.body);
                } else if let Some(line) = audit::summary(&link)? {
                    println!("{line}");
                }
            }
            Ok(0)
        }
    }
}
