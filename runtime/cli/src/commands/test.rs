//! `warden test DIR`: a tool's own cases (`crate::tool_test`).

use crate::commands::drill::print_rows;
use crate::{junit, tool_test};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct TestArgs {
    /// The tool's directory: its tool.toml, its component, and tests.toml.
    dir: PathBuf,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Also write the results as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
}

pub async fn run(args: TestArgs) -> Result<i32> {
    let outcomes = tool_test::run(&args.dir).await?;
    if let Some(file) = &args.junit {
        let cases: Vec<junit::Case> = outcomes
            .iter()
            .map(|o| junit::Case {
                suite: &o.tool,
                name: o.case.clone(),
                outcome: if o.passed {
                    junit::Outcome::Passed
                } else {
                    junit::Outcome::Failed(format!("case `{}` failed", o.case))
                },
                detail: &o.detail,
                seconds: o.seconds,
            })
            .collect();
        junit::write(file, "warden test", &cases)?;
    }
    print_rows(args.json, &outcomes, || tool_test::table(&outcomes))?;
    Ok(if outcomes.iter().all(|o| o.passed) {
        0
    } else {
        1
    })
}
