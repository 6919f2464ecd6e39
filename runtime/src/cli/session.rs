//! `warden session start|show`: sessions whose calls share provenance (taint).

use super::{UsageError, read_key, read_token};
use crate::credentials::Secret;
use crate::deployment::Deployment;
use crate::identity::assertion;
use crate::runtime::Runtime;
use anyhow::Result;
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum SessionCommand {
    /// Start a session for an agent and print its id (pass it to `warden call --session`).
    Start {
        #[arg(long)]
        agent: String,
        /// The agent's private key: it proves the agent starts the session.
        #[arg(long, env = "WARDEN_AGENT_KEY")]
        agent_key: PathBuf,
        /// A delegation token (or @FILE): the session's calls are made on that user's behalf.
        #[arg(long)]
        on_behalf_of: Option<String>,
    },
    /// Print a session as JSON: its user, calls, and whether (and why) it is tainted.
    Show { id: String },
}

pub fn run(config: &Path, command: SessionCommand) -> Result<i32> {
    let runtime = Runtime::new(Deployment::load(config)?)?;
    match command {
        SessionCommand::Start {
            agent,
            agent_key,
            on_behalf_of,
        } => {
            let key = read_key(&agent_key)?;
            let on_behalf_of = on_behalf_of.as_deref().map(read_token).transpose()?;
            let proof = Secret::new(assertion::sign_session(&key, &agent));
            let authenticated = match runtime.authenticate(&proof) {
                Ok(session) => session,
                Err(reason) => {
                    eprintln!("error: authentication failed: {reason}");
                    return Ok(3);
                }
            };
            match runtime.start_session(authenticated.agent(), on_behalf_of.as_ref()) {
                Ok(session) => {
                    println!("{}", session.id);
                    Ok(0)
                }
                Err(reason) => {
                    eprintln!("error: {reason}");
                    Ok(3)
                }
            }
        }
        SessionCommand::Show { id } => {
            let session = runtime
                .state()?
                .session(&id)?
                .ok_or_else(|| UsageError(format!("no session `{id}`")))?;
            println!("{}", serde_json::to_string_pretty(&session)?);
            Ok(0)
        }
    }
}
