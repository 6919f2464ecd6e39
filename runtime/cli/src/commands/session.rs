//! `warden session start|show`: sessions whose calls share provenance (taint).

use crate::{AgentArgs, UsageError};
use anyhow::Result;
use clap::Subcommand;
use std::path::Path;
use warden::deployment::Deployment;
use warden::runtime::Runtime;

#[derive(Subcommand)]
pub enum SessionCommand {
    /// Start a session for an agent and print its id (pass it to `warden call --session`).
    Start {
        #[command(flatten)]
        who: AgentArgs,
    },
    /// Print a session as JSON: its user, calls, and whether (and why) it is tainted.
    Show { id: String },
}

pub fn run(config: &Path, command: SessionCommand) -> Result<i32> {
    let runtime = Runtime::new(Deployment::load(config)?)?;
    match command {
        SessionCommand::Start { who } => {
            let (key, on_behalf_of) = who.read()?;
            let authenticated = match crate::authenticate(&runtime, &key, &who.agent) {
                Ok(agent) => agent,
                Err(code) => return Ok(code),
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
