//! `warden drill revocation`: the revocation drill against this deployment (`crate::drill`).

use crate::drill::{self, Revoker};
use anyhow::{Context as _, Result};
use clap::Subcommand;
use std::path::Path;
use warden::deployment::Deployment;

#[derive(Subcommand)]
pub enum DrillCommand {
    /// Revoke each kind (agent, delegation, session, credential, tool) while a throwaway
    /// call runs; print one row per kind; exit 1 if any row fails.
    Revocation {
        /// Print the rows as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Path, command: DrillCommand) -> Result<i32> {
    let DrillCommand::Revocation { json } = command;
    let deployment = Deployment::load(config)?;
    let warden = std::env::current_exe().context("finding the warden binary")?;
    let rows = drill::revocation(&deployment, Revoker::Process(warden)).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", drill::table(&rows));
    }
    Ok(if rows.iter().all(|r| r.passed) { 0 } else { 1 })
}
