//! `warden policy validate|explain|test|schema`: the policies, checked and questioned
//! without running any tool.

use crate::{UsageError, junit};
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use warden::deployment::Deployment;
use warden::policy::cases::{self, Case};
use warden::policy::{Decision, OriginKind, Outcome, Policies};
use warden::runtime::Runtime;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Check the policy directory against Warden's schema (file and line for each problem).
    Validate,
    /// Decide a hypothetical call (or one of its requests) without running anything.
    Explain(ExplainArgs),
    /// Run a table of cases against the policies; stops at the first mismatch (exit 1).
    Test {
        /// A TOML file of `[[case]]` tables (see examples/policy-tests.toml).
        file: PathBuf,
        /// Also write the cases as JUnit XML to this file (after the first failure: skipped).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Print the Cedar schema policies are validated against.
    Schema,
}

#[derive(Args)]
pub struct ExplainArgs {
    #[arg(long)]
    agent: String,
    #[arg(long)]
    tool: String,
    /// The tool's input, as JSON text.
    #[arg(long, default_value = "{}")]
    input: String,
    /// The user the call would be made for.
    #[arg(long)]
    user: Option<String>,
    /// The delegation's tools (comma-separated; default: the tool).
    #[arg(long, value_delimiter = ',')]
    scope: Option<Vec<String>>,
    /// Decide as within this session (its taint and call count, and its user).
    #[arg(long)]
    session: Option<String>,
    /// Decide as if the session were tainted.
    #[arg(long)]
    tainted: bool,
    #[arg(long)]
    untrusted_input: bool,
    /// Decide as if a human approval were attached.
    #[arg(long)]
    approved: bool,
    /// Calls the agent made in the last minute (default: as recorded in the state).
    #[arg(long)]
    calls_last_minute: Option<u64>,
    #[arg(long, value_enum, default_value = "cli")]
    origin: OriginArg,
    #[arg(long, default_value = "")]
    origin_label: String,
    /// Decide this request of the tool instead (`"METHOD URL"`).
    #[arg(long)]
    egress: Option<String>,
    /// Print the decision as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OriginArg {
    Cli,
    Mcp,
    Api,
}

pub fn run(config: &Path, command: PolicyCommand) -> Result<i32> {
    match command {
        PolicyCommand::Schema => {
            print!("{}", warden::policy::SCHEMA);
            Ok(0)
        }
        PolicyCommand::Validate => {
            let deployment = Deployment::load(config)?;
            match Policies::load(&deployment) {
                Ok(policies) => {
                    println!(
                        "{}: {} policies in {} files, valid",
                        policies.dir.display(),
                        policies.len(),
                        policies.files.len()
                    );
                    Ok(0)
                }
                Err(e) => {
                    for problem in &e.0 {
                        eprintln!("error: {problem}");
                    }
                    Ok(2)
                }
            }
        }
        PolicyCommand::Explain(args) => explain(config, args),
        PolicyCommand::Test { file, junit } => {
            let cases = cases::read_table(&file).map_err(UsageError)?;
            let runtime = Runtime::new(Deployment::load(config)?)?;
            let run = cases::run_table(&cases, &runtime).map_err(UsageError)?;
            if let Some(report) = junit {
                write_junit(&report, &file, &cases, &run)?;
            }
            match run.failure {
                None => {
                    println!("{}: {} passed, 0 failed", file.display(), run.passed);
                    Ok(0)
                }
                Some(why) => {
                    eprintln!("FAIL {}: {why}", file.display());
                    println!(
                        "{}: {} passed, 1 failed ({} not run)",
                        file.display(),
                        run.passed,
                        run.total - run.passed - 1
                    );
                    Ok(1)
                }
            }
        }
    }
}

/// The table's run as JUnit: the cases before the failure passed, the failure failed, the
/// rest were not run.
fn write_junit(report: &Path, file: &Path, cases: &[Case], run: &cases::TableRun) -> Result<()> {
    let suite = file.display().to_string();
    let failure = run.failure.clone().unwrap_or_default();
    let junit_cases: Vec<junit::Case> = cases
        .iter()
        .enumerate()
        .map(|(i, case)| junit::Case {
            suite: &suite,
            name: match case.name.is_empty() {
                true => format!("case {}", i + 1),
                false => format!("case {} ({})", i + 1, case.name),
            },
            outcome: match i.cmp(&run.passed) {
                std::cmp::Ordering::Less => junit::Outcome::Passed,
                std::cmp::Ordering::Equal if run.failure.is_some() => {
                    junit::Outcome::Failed(failure.clone())
                }
                _ => junit::Outcome::Skipped("not run: an earlier case failed".into()),
            },
            detail: "",
            seconds: 0.0,
        })
        .collect();
    junit::write(report, "warden policy test", &junit_cases)
}

fn explain(config: &Path, args: ExplainArgs) -> Result<i32> {
    let input: serde_json::Value = serde_json::from_str(&args.input)
        .map_err(|e| UsageError(format!("--input is not valid JSON: {e}")))?;
    let runtime = Runtime::new(Deployment::load(config)?)?;
    let state = runtime.state()?;
    let session = match &args.session {
        None => None,
        Some(id) => Some(
            state
                .session(id)?
                .ok_or_else(|| UsageError(format!("no session `{id}`")))?,
        ),
    };
    let calls_last_minute = match args.calls_last_minute {
        Some(n) => n,
        None => state.recent_calls(&args.agent, warden::identity::jwt::now_ms())?,
    };
    let case = Case {
        name: String::new(),
        user: args
            .user
            .or_else(|| session.as_ref().and_then(|s| s.user.clone())),
        scope: args.scope.or_else(|| {
            session
                .as_ref()
                .filter(|s| s.user.is_some())
                .map(|s| s.scope.clone())
        }),
        session: args.session,
        tainted: args.tainted || session.as_ref().is_some_and(|s| s.tainted),
        session_calls: session.as_ref().map_or(0, |s| s.calls),
        agent: args.agent,
        tool: args.tool,
        input,
        calls_last_minute,
        untrusted_input: args.untrusted_input,
        approved: args.approved,
        origin: match args.origin {
            OriginArg::Cli => OriginKind::Cli,
            OriginArg::Mcp => OriginKind::Mcp,
            OriginArg::Api => OriginKind::Api,
        },
        origin_label: args.origin_label,
        time: None,
        egress: args.egress,
        expect: None,
        policies: None,
    };
    let decision = case.decide(&runtime).map_err(UsageError)?;
    if args.json {
        println!("{}", serde_json::to_string(&decision)?);
    } else {
        print_decision(&decision);
    }
    Ok(match decision.outcome {
        Outcome::Allow => 0,
        Outcome::Deny => 3,
        Outcome::ApprovalRequired => 4,
    })
}

fn print_decision(decision: &Decision) {
    println!("decision: {:?}", decision.outcome);
    println!("policies: {}", decision.policies.join(", "));
    for reason in &decision.reasons {
        println!("reason:   {reason}");
    }
    for error in &decision.errors {
        println!("error:    {error}");
    }
}
