//! Hostile, or only buggy: prints lines to stderr, as an interpreter prints a traceback, then
//! panics (a trap: the release profile aborts on panic).
use host_api::{Tool, ToolError, serde_json::Value};

struct HostileCrash;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Input {
    /// Lines written to stderr before the panic.
    lines: Vec<String>,
}

impl Tool for HostileCrash {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "hostile-crash";
    const DESCRIPTION: &'static str = "Writes the given lines to stderr, then panics.";

    fn invoke(input: Input) -> Result<Value, ToolError> {
        for line in &input.lines {
            eprintln!("{line}");
        }
        panic!("the tool's own bug");
    }
}

host_api::export_tool!(HostileCrash);
