//! `warden approvals list`, `warden approve`, `warden deny`: a person's side of approvals,
//! on a channel the agent does not hold (its key cannot approve).

use crate::{UsageError, read_key};
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use warden::approval;
use warden::deployment::Deployment;
use warden::identity::jwt;
use warden::state::{self, ApprovalDecision, ApprovalStatus};
use warden::text::{printable, printable_json};
use warden::units::format_unix;

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// Pending approvals, newest first: the exact call each is for, and why it is held.
    List {
        /// Approved, denied and used ones too.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct ApproveArgs {
    /// The approval id (printed by the call that needs it, and by `warden approvals list`).
    pub(super) id: String,
    /// The approver's private key (from `warden keygen`); its public key is registered
    /// under `[approvers]` in warden.toml.
    #[arg(long)]
    pub(super) key: PathBuf,
}

#[derive(Args)]
pub struct DenyArgs {
    id: String,
    /// Who denies it (recorded).
    #[arg(long, default_value = "operator")]
    by: String,
}

pub fn list(config: &Path, command: ApprovalsCommand) -> Result<i32> {
    let ApprovalsCommand::List { all, json } = command;
    let deployment = Deployment::load(config)?;
    let approvals = state::open(&deployment)?.approvals(all)?;
    // The input is the agent's: a person reads it escaped before approving it.
    if json {
        let text = serde_json::to_string_pretty(&approvals)?;
        println!("{}", printable_json(&text));
        return Ok(0);
    }
    if approvals.is_empty() {
        println!("no {}approvals", if all { "" } else { "pending " });
    }
    for a in approvals {
        let header = format!(
            "{}  {:<8}  agent {} calls {} for {}  (expires {})",
            a.id,
            a.status.as_str(),
            a.agent,
            a.tool,
            a.user.as_deref().unwrap_or("nobody"),
            format_unix(a.expires)
        );
        println!("{}", printable(&header));
        println!("    input  {}", printable(&a.input.to_string()));
        println!("    why    {}", printable(&a.reason));
    }
    Ok(0)
}

pub fn approve(config: &Path, args: ApproveArgs) -> Result<i32> {
    let deployment = Deployment::load(config)?;
    let key = read_key(&args.key)?;
    let approver = match approval::approver_of(&deployment, &key) {
        Ok(name) => name.to_string(),
        Err(reason) => {
            eprintln!("error: cannot approve {}: {reason}", args.id);
            return Ok(3);
        }
    };
    let store = state::open(&deployment)?;
    let pending = store
        .approval(&args.id)?
        .ok_or_else(|| UsageError(format!("no approval `{}`", args.id)))?;
    if pending.status != ApprovalStatus::Pending {
        eprintln!(
            "error: approval {} is {}, not pending",
            args.id,
            pending.status.as_str()
        );
        return Ok(3);
    }
    if pending.expires <= jwt::now() {
        eprintln!("error: approval {} has expired", args.id);
        return Ok(3);
    }
    let decision = ApprovalDecision::Approved {
        approver: approver.clone(),
        signature: approval::sign(&key, &pending),
    };
    if !store.decide_approval(&args.id, &decision)? {
        eprintln!("error: approval {} was decided meanwhile", args.id);
        return Ok(3);
    }
    let approved = format!(
        "approved {} as `{approver}`: agent {} may call {} once with input {} for {}, until {}",
        pending.id,
        pending.agent,
        pending.tool,
        pending.input,
        pending.user.as_deref().unwrap_or("nobody"),
        format_unix(pending.expires)
    );
    println!("{}", printable(&approved));
    Ok(0)
}

pub fn deny(config: &Path, args: DenyArgs) -> Result<i32> {
    let deployment = Deployment::load(config)?;
    let store = state::open(&deployment)?;
    if store.approval(&args.id)?.is_none() {
        return Err(UsageError(format!("no approval `{}`", args.id)).into());
    }
    if !store.decide_approval(&args.id, &ApprovalDecision::Denied { by: args.by })? {
        eprintln!("error: approval {} is no longer pending", args.id);
        return Ok(3);
    }
    println!("denied {}", args.id);
    Ok(0)
}
