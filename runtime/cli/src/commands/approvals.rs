//! `warden approvals list|watch`, `warden approve`, `warden deny`: a person's side of
//! approvals, on a channel the agent does not hold (its key cannot approve).

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
    /// The pending approvals, then each new one as a call is held, until interrupted.
    Watch {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

/// How often `watch` looks for new pending approvals.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

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

pub fn run(config: &Path, command: ApprovalsCommand) -> Result<i32> {
    match command {
        ApprovalsCommand::List { all, json } => list(config, all, json),
        ApprovalsCommand::Watch { json } => watch(config, json),
    }
}

/// Prints each approval pending now and each that comes, once, until the process is
/// stopped. Only ids still pending are remembered: a long watch holds no more than the
/// store does. A store that does not answer is said once per outage, and watched again.
fn watch(config: &Path, json: bool) -> Result<i32> {
    use std::io::Write as _;
    let deployment = Deployment::load(config)?;
    let store = state::open(&deployment)?;
    let mut seen = std::collections::HashSet::new();
    let mut failing = false;
    loop {
        match store.approvals(false) {
            Ok(pending) => {
                failing = false;
                let mut stdout = std::io::stdout().lock();
                for a in pending.iter().filter(|a| !seen.contains(&a.id)) {
                    match json {
                        true => writeln!(stdout, "{}", printable_json(&serde_json::to_string(a)?))?,
                        false => write!(stdout, "{}", describe(a))?,
                    }
                }
                stdout.flush()?;
                seen = pending.into_iter().map(|a| a.id).collect();
            }
            Err(e) if !failing => {
                failing = true;
                eprintln!("warning: reading the approvals failed ({e:#}); watching on");
            }
            Err(_) => {}
        }
        std::thread::sleep(WATCH_EVERY);
    }
}

/// One approval for a person to read: the exact call, who asks, why, until when; escaped
/// (the input and much else are the agent's).
fn describe(a: &state::Approval) -> String {
    let header = format!(
        "{}  {:<8}  agent {} calls {} for {}  (expires {})",
        a.id,
        a.status.as_str(),
        a.agent,
        a.tool,
        a.user.as_deref().unwrap_or("nobody"),
        format_unix(a.expires)
    );
    format!(
        "{}\n    input  {}\n    why    {}\n",
        printable(&header),
        printable(&a.input.to_string()),
        printable(&a.reason)
    )
}

fn list(config: &Path, all: bool, json: bool) -> Result<i32> {
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
        print!("{}", describe(&a));
    }
    Ok(0)
}

pub fn approve(config: &Path, args: ApproveArgs) -> Result<i32> {
    let deployment = Deployment::load(config)?;
    let key = read_key(&args.key)?;
    let approver = match approval::approver_of(&deployment, &key.verifying_key()) {
        Ok(name) => name.to_string(),
        Err(reason) => {
            let whose = match reason {
                approval::NotAnApprover::Unknown => format!(" in {}", deployment.file.display()),
                approval::NotAnApprover::Agent(_) => String::new(),
            };
            eprintln!("error: cannot approve {}: {reason}{whose}", args.id);
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
    if !store.decide_approval(
        &args.id,
        &ApprovalDecision::Denied {
            by: args.by,
            signature: None,
        },
    )? {
        eprintln!("error: approval {} is no longer pending", args.id);
        return Ok(3);
    }
    println!("denied {}", args.id);
    Ok(0)
}
