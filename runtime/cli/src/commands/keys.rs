//! `warden keygen`, `warden delegate`, `warden jwks`, `warden keys rotate`.

use crate::{UsageError, read_key};
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use warden::credentials::mint::KeyStore;
use warden::deployment::Deployment;
use warden::identity::{delegation, keys};

#[derive(Args)]
pub struct KeygenArgs {
    /// Where to write the private key (created 0600; never overwritten).
    #[arg(long)]
    out: PathBuf,
}

/// Makes an Ed25519 key pair and prints the public key for `warden.toml`.
pub fn keygen(args: KeygenArgs) -> Result<i32> {
    let key = keys::generate();
    keys::write_private(&args.out, &key).map_err(|e| UsageError(format!("{e:#}")))?;
    println!("{}", keys::format_public(&key.verifying_key()));
    Ok(0)
}

#[derive(Args)]
pub struct DelegateArgs {
    /// The user granting the delegation (registered in [users]).
    #[arg(long)]
    user: String,
    /// The user's private key.
    #[arg(long)]
    user_key: PathBuf,
    /// The agent receiving it.
    #[arg(long)]
    agent: String,
    /// Comma-separated tools the agent may call for the user.
    #[arg(long, value_delimiter = ',', required = true)]
    tools: Vec<String>,
    /// How long it lasts (e.g. 15m, 8h is written 480m); at most 7 days.
    #[arg(long, default_value = "60m")]
    ttl: String,
}

/// Signs a delegation token with the user's key and prints it.
pub fn delegate(args: DelegateArgs) -> Result<i32> {
    let ttl =
        warden::units::parse_duration(&args.ttl).map_err(|e| UsageError(format!("--ttl: {e}")))?;
    if ttl.is_zero() || ttl > delegation::MAX_TTL {
        return Err(UsageError("--ttl must be between 1s and 7 days".into()).into());
    }
    let key = read_key(&args.user_key)?;
    println!(
        "{}",
        delegation::issue(&key, &args.user, &args.agent, &args.tools, ttl)
    );
    Ok(0)
}

/// Prints the public keys that verify Warden's minted credentials.
pub fn jwks(config: &Path) -> Result<i32> {
    let deployment = Deployment::load(config)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&KeyStore::new(&deployment.state_dir).jwks()?.to_json())?
    );
    Ok(0)
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key current; the old one stays in the JWKS until its tokens expire.
    Rotate,
}

pub fn keys(config: &Path, command: KeysCommand) -> Result<i32> {
    let deployment = Deployment::load(config)?;
    match command {
        KeysCommand::Rotate => {
            let kid = KeyStore::new(&deployment.state_dir).rotate()?;
            println!("signing key {kid} is now current");
            Ok(0)
        }
    }
}
