//! The `warden` command line: one file per command group in `commands/`, each returning an
//! exit code; the demo, the drills (`drill/`), tool tests (`tool_test`) and what they share:
//! stand-in deployments (`standin`) and JUnit reports (`junit`).
//!
//! Exit codes: 0 ok, 1 Warden itself failed (or a policy test failed), 2 bad usage or bad
//! input (including manifests, configuration and policies), 3 denied, 4 approval required,
//! 5 the tool failed.

mod commands;
pub mod drill;
pub mod junit;
pub mod standin;
pub mod tool_test;

use commands::{
    approvals, audit, bench, call, demo, drill as drill_command, keys, mcp, new, policy, revoke,
    serve, session, test, tool,
};

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use warden::deployment::DEPLOYMENT_FILE;

#[derive(Parser)]
#[command(
    name = "warden",
    version,
    about = "Sandboxed tool execution for AI agents"
)]
struct Cli {
    /// The deployment file.
    #[arg(long, global = true, env = "WARDEN_CONFIG", default_value = DEPLOYMENT_FILE)]
    config: PathBuf,
    /// Logs as JSON lines on stderr (filter with WARDEN_LOG, e.g. WARDEN_LOG=info).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register, list and inspect tools.
    #[command(subcommand)]
    Tool(tool::ToolCommand),
    /// Call a tool as an agent.
    Call(call::CallArgs),
    /// Start and inspect sessions (calls whose provenance is tracked together).
    #[command(subcommand)]
    Session(session::SessionCommand),
    /// Validate, question and test the policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Check and read the audit chain.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// List approvals that calls are waiting for.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Approve a pending call, signing it with an approver's key.
    Approve(approvals::ApproveArgs),
    /// Deny a pending call.
    Deny(approvals::DenyArgs),
    /// Revoke an agent, delegation, tool, credential, session or publisher, for every process at once.
    Revoke(revoke::RevokeArgs),
    /// List revocations.
    Revocations,
    /// Tell whether a token Warden minted is active (RFC 7662's answer, as JSON).
    Introspect(revoke::IntrospectArgs),
    /// Prove on this deployment that controls hold (throwaway principals and upstreams).
    #[command(subcommand)]
    Drill(drill_command::DrillCommand),
    /// Run a tool's own cases (tests.toml beside tool.toml) through the whole pipeline.
    Test(test::TestArgs),
    /// Serve the tools an agent may call over the Model Context Protocol (stdio or HTTP).
    Mcp(mcp::McpArgs),
    /// Run one node: MCP over streamable HTTP, liveness and readiness; drain on SIGTERM.
    Serve(serve::ServeArgs),
    /// Print a signed agent assertion: the bearer token of an MCP request over HTTP.
    Assert(mcp::AssertArgs),
    /// Make many calls of one tool in one process; print calls per second and latency.
    Bench(bench::BenchArgs),
    /// Make a new tool's directory (Rust, Python or JavaScript) that builds as it is.
    New(new::NewArgs),
    /// Make an Ed25519 key pair (for an agent, a user or an approver).
    Keygen(keys::KeygenArgs),
    /// Issue a delegation: a user lets an agent call some tools on their behalf.
    Delegate(keys::DelegateArgs),
    /// Print the JWKS that verifies Warden's minted credentials.
    Jwks,
    /// Manage Warden's signing keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Run the demo: an allowed file read, an allowed HTTP request, denied escapes.
    Demo(demo::DemoArgs),
}

/// `text` on one line, at most `width` characters (an ellipsis marks a cut).
pub(crate) fn clip(text: &str, width: usize) -> String {
    let text = text.replace(['\n', '\r'], " ");
    if text.chars().count() <= width {
        text
    } else {
        let kept: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{kept}…")
    }
}

/// A value's name as its serialised form spells it (`memory_limit`, `ro`, `minted`).
pub(crate) fn name_of<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::new(),
    }
}

/// An error that is the caller's to fix (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Calls run side by side, each holding up to `sandbox::limits::MAX_HANDLES` host handles,
/// some of them open files: the soft limit on open files (often 1024) is raised to the hard
/// one, so that tools holding files cannot starve the state file and the server's sockets.
/// A process that cannot raise it runs with what it has.
fn raise_open_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum)
        && current < maximum
        && let Err(e) = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            },
        )
    {
        tracing::warn!(error = %e, "raising the limit on open files failed");
    }
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    init_logging(cli.log_json);
    raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Tool(cmd) => tool::run(&cli.config, cmd).await,
            Command::Call(args) => call::run(&cli.config, args).await,
            Command::Session(command) => session::run(&cli.config, command),
            Command::Policy(command) => policy::run(&cli.config, command),
            Command::Audit(command) => audit::run(&cli.config, command),
            Command::Approvals(command) => approvals::run(&cli.config, command),
            Command::Approve(args) => approvals::approve(&cli.config, args),
            Command::Deny(args) => approvals::deny(&cli.config, args),
            Command::Revoke(args) => revoke::revoke(&cli.config, args).await,
            Command::Revocations => revoke::list(&cli.config),
            Command::Introspect(args) => revoke::introspect(&cli.config, args),
            Command::Drill(command) => drill_command::run(&cli.config, command).await,
            Command::Test(args) => test::run(args).await,
            Command::Mcp(args) => mcp::run(&cli.config, args).await,
            Command::Serve(args) => serve::run(&cli.config, args).await,
            Command::Assert(args) => mcp::assert(args),
            Command::Bench(args) => bench::run(&cli.config, args).await,
            Command::New(args) => new::run(&cli.config, args),
            Command::Keygen(args) => keys::keygen(args),
            Command::Delegate(args) => keys::delegate(args),
            Command::Jwks => keys::jwks(&cli.config),
            Command::Keys(command) => keys::keys(&cli.config, command),
            Command::Demo(args) => demo::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            exit_code_of(&e)
        }
    }
}

fn exit_code_of(e: &anyhow::Error) -> i32 {
    let usage = e.chain().any(|c| {
        c.is::<UsageError>()
            || matches!(
                c.downcast_ref::<warden::error::Error>(),
                Some(warden::error::Error::Invalid(_))
            )
            || c.is::<warden::manifest::ManifestError>()
            || c.is::<warden::runtime::LoadError>()
            || c.is::<warden::policy::PolicyError>()
            || c.is::<warden::revocation::InvalidRevocationId>()
    });
    if usage { 2 } else { 1 }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Who acts, shared by the commands an agent runs: its name, its key, and the user it acts
/// for.
#[derive(clap::Args)]
struct AgentArgs {
    /// The agent.
    #[arg(long)]
    agent: String,
    /// The agent's private key (from `warden keygen`); it signs the agent's proof.
    #[arg(long, env = "WARDEN_AGENT_KEY")]
    agent_key: PathBuf,
    /// A delegation token (from `warden delegate`), or @FILE holding one: act on that
    /// user's behalf.
    #[arg(long)]
    on_behalf_of: Option<String>,
}

impl AgentArgs {
    /// The agent's key and the delegation token, read.
    fn read(
        &self,
    ) -> anyhow::Result<(
        ed25519_dalek::SigningKey,
        Option<warden::credentials::Secret>,
    )> {
        let key = read_key(&self.agent_key)?;
        let token = self.on_behalf_of.as_deref().map(read_token).transpose()?;
        Ok((key, token))
    }
}

/// Proves `agent`'s key to `runtime` once, as a long-lived caller does. Err(exit code 3)
/// when it is refused, 1 when Warden failed, the reason printed.
fn authenticate(
    runtime: &warden::runtime::Runtime,
    key: &ed25519_dalek::SigningKey,
    agent: &str,
) -> Result<warden::call::AuthenticatedAgent, i32> {
    let proof = warden::identity::assertion::sign_session(key, agent);
    runtime
        .authenticate(&warden::credentials::Secret::new(proof))
        .map_err(|e| match e {
            warden::Error::Refused(reason) => {
                eprintln!("error: authentication failed: {reason}");
                3
            }
            e => {
                eprintln!("error: {e}");
                1
            }
        })
}

/// A private key file given on the command line.
fn read_key(path: &std::path::Path) -> anyhow::Result<ed25519_dalek::SigningKey> {
    warden::identity::keys::read_private(path).map_err(|e| UsageError(format!("{e:#}")).into())
}

/// A token given inline, or as @FILE.
fn read_token(arg: &str) -> anyhow::Result<warden::credentials::Secret> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("{path}: cannot read the token: {e}")))?,
        None => arg.to_string(),
    };
    Ok(warden::credentials::Secret::new(text.trim()))
}
