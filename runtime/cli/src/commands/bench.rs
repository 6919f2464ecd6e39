//! `warden bench`: many calls of one tool by one agent in one process, as a long-lived
//! caller (an MCP server) makes them: calls per second and latency, with everything a call
//! does (policy, sandbox, audit) included.

use crate::{AgentArgs, UsageError};
use anyhow::Result;
use clap::Args;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden::call::{CallRequest, Caller};
use warden::deployment::Deployment;
use warden::runtime::Runtime;

#[derive(Args)]
pub struct BenchArgs {
    /// The tool to call.
    tool: String,
    #[command(flatten)]
    who: AgentArgs,
    /// The input, as JSON text.
    #[arg(long, default_value = "{}")]
    input: String,
    /// How many calls.
    #[arg(long, default_value_t = 1000)]
    calls: usize,
    /// How many calls run at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Print each call's id on stdout as soon as its result is returned.
    #[arg(long)]
    print_ids: bool,
}

pub async fn run(config: &Path, args: BenchArgs) -> Result<i32> {
    let input: serde_json::Value = serde_json::from_str(&args.input)
        .map_err(|e| UsageError(format!("the input is not valid JSON: {e}")))?;
    if args.calls == 0 || args.concurrency == 0 {
        return Err(UsageError("--calls and --concurrency must be at least 1".into()).into());
    }
    let (key, on_behalf_of) = args.who.read()?;
    let runtime = Arc::new(Runtime::new(Deployment::load(config)?)?);
    let agent = match crate::authenticate(&runtime, &key, &args.who.agent) {
        Ok(agent) => agent,
        Err(code) => return Ok(code),
    };
    // Warm: the first call compiles or loads the tool.
    runtime.tool(&args.tool).await?;

    let started = Instant::now();
    let mut next = 0;
    let mut running = tokio::task::JoinSet::new();
    let mut latencies: Vec<Duration> = Vec::with_capacity(args.calls);
    let (mut deciding, mut storing) = (
        Vec::with_capacity(args.calls),
        Vec::with_capacity(args.calls),
    );
    let mut first_failure = None;
    let mut failures = 0;
    while latencies.len() < args.calls {
        while next < args.calls && running.len() < args.concurrency {
            let runtime = runtime.clone();
            let request = CallRequest::new(
                &args.tool,
                input.clone(),
                Caller::Authenticated(agent.clone()),
            )
            .on_behalf_of(on_behalf_of.clone());
            running.spawn(async move {
                let start = Instant::now();
                let report = runtime.call(request).await;
                (report, start.elapsed())
            });
            next += 1;
        }
        let (report, took) = running.join_next().await.expect("calls are running")?;
        if args.print_ids {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", report.record.call_id)?;
            out.flush()?;
        }
        if let Some(error) = &report.record.error {
            failures += 1;
            first_failure.get_or_insert((report.exit_code(), error.message.clone()));
        }
        latencies.push(took);
        deciding.push(report.record.timings.decision);
        storing.push(report.record.timings.store);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{} calls of {} in {:.2} s: {:.0} calls/s; latency {}; decision {}; state store {}; \
         {failures} failed",
        args.calls,
        args.tool,
        elapsed.as_secs_f64(),
        args.calls as f64 / elapsed.as_secs_f64(),
        percentiles(&mut latencies),
        percentiles(&mut deciding),
        percentiles(&mut storing),
    );
    match first_failure {
        None => Ok(0),
        Some((code, message)) => {
            eprintln!("error: first failure: {message}");
            Ok(code)
        }
    }
}

/// "p50 N µs, p99 N µs" of `times`.
fn percentiles(times: &mut [Duration]) -> String {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    format!("p50 {:.0} µs, p99 {:.0} µs", at(0.5), at(0.99))
}
