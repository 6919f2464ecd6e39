//! Hostile: burns CPU forever, recurses until the stack runs out, or sleeps for a day.
use host_api::{Tool, ToolError, serde_json::Value};

struct HostileCpu;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Input {
    attack: String,
}

/// Recursion without locals in linear memory, so it exhausts the wasm stack itself.
#[inline(never)]
#[allow(unconditional_recursion)] // the point of the attack
fn recurse(depth: u64) -> u64 {
    1 + recurse(std::hint::black_box(depth + 1))
}

impl Tool for HostileCpu {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "hostile-cpu";
    const DESCRIPTION: &'static str = "Loops forever, recurses without end, or sleeps.";

    fn invoke(input: Input) -> Result<Value, ToolError> {
        match input.attack.as_str() {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "recursion" => Ok(Value::from(recurse(0))),
            // Waits without computing: only the wall-clock timeout ends it.
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(24 * 3600));
                Ok(Value::Null)
            }
            other => Err(ToolError::invalid_input(format!("unknown attack {other}"))),
        }
    }
}

host_api::export_tool!(HostileCpu);
