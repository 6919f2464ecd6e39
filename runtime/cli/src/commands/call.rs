//! `warden call`: run one tool call as an agent.

use crate::AgentArgs;
use crate::UsageError;
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};
use warden::call::{CallRequest, Caller};
use warden::credentials::Secret;
use warden::deployment::Deployment;
use warden::identity::assertion;
use warden::policy::{Origin, OriginKind};
use warden::runtime::Runtime;
use warden::text::{printable, printable_json};

#[derive(Args)]
pub struct CallArgs {
    /// The tool to call.
    tool: String,
    #[command(flatten)]
    who: AgentArgs,
    /// The input, as JSON text.
    #[arg(long, conflicts_with = "input_file")]
    input: Option<String>,
    /// Read the input JSON from this file (`-` for stdin).
    #[arg(long)]
    input_file: Option<PathBuf>,
    /// The session the call belongs to (from `warden session start`).
    #[arg(long)]
    session: Option<String>,
    /// The input carries content nobody vetted: the session is tainted from this call on.
    #[arg(long)]
    untrusted_input: bool,
    /// A label for where the call came from (a framework, a CI job); policies see it as
    /// `context.origin.label`.
    #[arg(long, default_value = "")]
    origin_label: String,
    /// An approval a person gave for exactly this call (`warden approve ID`).
    #[arg(long)]
    approval: Option<String>,
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

    let (key, on_behalf_of) = args.who.read()?;
    let assertion = assertion::sign(&key, &args.who.agent, &args.tool, &input);

    let runtime = Runtime::new(Deployment::load(config)?)?;
    let report = runtime
        .call(
            CallRequest::new(args.tool, input, Caller::Assertion(Secret::new(assertion)))
                .on_behalf_of(on_behalf_of)
                .session(args.session)
                .untrusted_input(args.untrusted_input)
                .approval(args.approval)
                .origin(Origin {
                    kind: OriginKind::Cli,
                    label: args.origin_label,
                }),
        )
        .await;

    // What the tool and its upstreams chose is printed escaped (the same JSON value).
    if args.json {
        println!("{}", printable_json(&serde_json::to_string(&report)?));
    } else {
        match (&report.output, &report.record.error) {
            (Some(output), _) => {
                println!("{}", printable_json(&serde_json::to_string_pretty(output)?))
            }
            (_, Some(error)) => {
                eprintln!("error: {} ({:?})", printable(&error.message), error.kind)
            }
            _ => {}
        }
        for e in &report.egress {
            let why = printable(e.reason.as_deref().unwrap_or(""));
            let url = e.url();
            let (method, url) = (printable(&e.method), printable(&url));
            eprintln!("egress: {} {method} {url} {why}", e.decision.as_str());
        }
    }
    Ok(report.exit_code())
}
