//! `warden serve`: one node of a deployment, a long-running process behind a load balancer:
//! MCP over streamable HTTP at `/mcp`, liveness at `/healthz`, readiness at `/readyz`. On
//! SIGTERM or SIGINT it stops accepting connections, lets the calls in flight finish (for at
//! most `--drain`), and exits 0. On SIGHUP it reloads `warden.toml`, its policies and tools
//! (`Runtime::reload`). Each second it delivers the revocation events due to downstream
//! receivers.

use anyhow::{Context as _, Result};
use clap::Args;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use warden::deployment::Deployment;
use warden::runtime::Runtime;
use warden_server::http::{self, Stop};

/// Where a node listens unless told.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8931";
/// How long calls in flight may go on after SIGTERM unless told.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, default_value = DEFAULT_ADDR)]
    addr: SocketAddr,
    /// How long calls in flight may go on after SIGTERM (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = warden::units::parse_duration)]
    drain: Duration,
}

pub async fn run(config: &Path, args: ServeArgs) -> Result<i32> {
    let runtime = Arc::new(Runtime::new(Deployment::load(config)?)?);
    serve(runtime, args.addr, args.drain, |bound| {
        eprintln!(
            "warden: serving MCP at http://{}/mcp (liveness /healthz, readiness /readyz){}",
            bound.mcp,
            inbox_said(&bound)
        );
    })
    .await?;
    Ok(0)
}

/// How the node's first line names its approval inbox, if it has one.
pub fn inbox_said(bound: &http::Bound) -> String {
    match &bound.inbox {
        Some(origin) => format!("; approval inbox at {origin}/"),
        None => String::new(),
    }
}

/// Serves `runtime` at `addr` until SIGTERM or SIGINT, then drains.
pub async fn serve(
    runtime: Arc<Runtime>,
    addr: SocketAddr,
    drain: Duration,
    bound: impl FnOnce(http::Bound),
) -> Result<()> {
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "serving MCP beyond loopback");
    }
    // Installed before the address is announced: a signal from then on drains.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let reloading = runtime.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let runtime = reloading.clone();
            let reloaded = tokio::task::spawn_blocking(move || runtime.reload()).await;
            let said = match reloaded {
                Ok(Ok(r)) if r.applied => format!(
                    "reloaded: {}{} policies; warm tools dropped: {}",
                    if r.deployment_changed {
                        "warden.toml changed; "
                    } else {
                        ""
                    },
                    r.policies.len(),
                    r.tools_dropped.len()
                ),
                Ok(Ok(r)) => format!(
                    "reload refused, the deployment and policies in force kept: {}",
                    r.error.unwrap_or_default()
                ),
                Ok(Err(e)) => format!("reload failed: {e}"),
                Err(e) => format!("reload failed: {e}"),
            };
            eprintln!("warden: {}", said.replace('\n', "; "));
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("warden: stopping: no new connections or calls, calls in flight may finish");
    };
    http::serve(runtime, addr, Stop { shutdown, drain }, bound).await
}
