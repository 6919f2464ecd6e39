//! `warden mcp`: serve Warden's tools to an MCP client, over stdio (one agent, proven by its
//! key when the server starts) or streamable HTTP (each request proves its agent);
//! `warden assert`: the assertion an HTTP client sends as its bearer token.

use crate::{UsageError, read_key, read_token};
use anyhow::Result;
use clap::Args;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use warden::deployment::Deployment;
use warden::identity::assertion;
use warden::runtime::Runtime;
use warden_server::Principal;

#[derive(Args)]
pub struct McpArgs {
    /// Over stdio: the agent every call is made as.
    #[arg(long, required_unless_present = "http")]
    agent: Option<String>,
    /// Over stdio: the agent's private key (proves the agent once, at start).
    #[arg(long, env = "WARDEN_AGENT_KEY")]
    agent_key: Option<PathBuf>,
    /// Over stdio: act on the behalf of this delegation's user (a token, or @FILE).
    #[arg(long)]
    on_behalf_of: Option<String>,
    /// Over stdio: the session every call belongs to (default: a new one for this connection).
    #[arg(long)]
    session: Option<String>,
    /// Serve streamable HTTP at http://ADDR/mcp instead of stdio (default 127.0.0.1:8931);
    /// each request carries `Authorization: Bearer <warden assert output>`.
    #[arg(long, num_args = 0..=1, default_missing_value = super::serve::DEFAULT_ADDR,
          conflicts_with_all = ["agent", "on_behalf_of", "session"])]
    http: Option<SocketAddr>,
}

#[derive(Args)]
pub struct AssertArgs {
    /// The agent.
    #[arg(long)]
    agent: String,
    /// The agent's private key.
    #[arg(long, env = "WARDEN_AGENT_KEY")]
    agent_key: PathBuf,
}

pub async fn run(config: &Path, args: McpArgs) -> Result<i32> {
    let runtime = Arc::new(Runtime::new(Deployment::load(config)?)?);
    if let Some(addr) = args.http {
        // `warden serve` with its drain period.
        super::serve::serve(runtime, addr, super::serve::DEFAULT_DRAIN, |bound| {
            eprintln!(
                "warden: MCP over streamable HTTP at http://{}/mcp{}",
                bound.mcp,
                super::serve::inbox_said(&bound)
            );
        })
        .await?;
        return Ok(0);
    }
    let (Some(agent), Some(key)) = (args.agent, args.agent_key) else {
        return Err(UsageError("over stdio, give --agent and --agent-key".into()).into());
    };
    let key = read_key(&key)?;
    let agent = match crate::authenticate(&runtime, &key, &agent) {
        Ok(agent) => agent,
        Err(code) => return Ok(code),
    };
    let principal = Principal {
        agent,
        on_behalf_of: args.on_behalf_of.as_deref().map(read_token).transpose()?,
        session: args.session,
    };
    warden_server::stdio::serve(runtime, principal).await?;
    Ok(0)
}

/// Prints a fresh session assertion (valid for a minute, bound to the first server that
/// sees it).
pub fn assert(args: AssertArgs) -> Result<i32> {
    let key = read_key(&args.agent_key)?;
    println!("{}", assertion::sign_session(&key, &args.agent));
    Ok(0)
}
