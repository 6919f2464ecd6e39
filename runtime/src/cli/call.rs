//! `warden call`: run one tool call as an agent.

use super::{UsageError, load_deployment};
use crate::call::CallRequest;
use crate::runtime::Runtime;
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct CallArgs {
    /// The tool to call.
    tool: String,
    /// The agent making the call.
    #[arg(long)]
    agent: String,
    /// The input, as JSON text.
    #[arg(long, conflicts_with = "input_file")]
    input: Option<String>,
    /// Read the input JSON from this file (`-` for stdin).
    #[arg(long)]
    input_file: Option<PathBuf>,
    /// Print one JSON envelope: call id, decision, output or error, egress, duration.
    #[arg(long)]
    json: bool,
}

pub async fn run(config: &Path, args: CallArgs) -> Result<i32> {
    let text = match (&args.input, &args.input_file) {
        (Some(text), None) => text.clone(),
        (None, Some(path)) if path == Path::new("-") => {
            std::io::read_to_string(std::io::stdin())
                .map_err(|e| UsageError(format!("reading input from stdin: {e}")))?
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("{}: cannot read input: {e}", path.display())))?,
        _ => {
            return Err(
                UsageError("give the input with --input JSON or --input-file FILE".into()).into(),
            );
        }
    };
    let input: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("the input is not valid JSON: {e}")))?;

    let runtime = Runtime::new(load_deployment(config)?)?;
    let report = runtime
        .call(CallRequest {
            tool: args.tool,
            agent: args.agent,
            input,
        })
        .await;

    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        match (&report.output, &report.error) {
            (Some(output), _) => println!("{}", serde_json::to_string_pretty(output)?),
            (_, Some(error)) => eprintln!("error: {} ({:?})", error.message, error.kind),
            _ => {}
        }
        for e in &report.egress {
            let why = e.reason.as_deref().unwrap_or("");
            eprintln!("egress: {} {} {} {why}", e.decision, e.method, e.url);
        }
    }
    Ok(report.exit_code())
}
