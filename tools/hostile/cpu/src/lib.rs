//! Hostile: burns CPU forever or recurses until the stack runs out.
use host_api::{Tool, ToolError, serde_json::Value};

struct HostileCpu;

#[derive(serde::Deserialize)]
struct Input {
    attack: String,
}

#[inline(never)]
#[allow(unconditional_recursion)] // the point of the attack
fn recurse(depth: u64, pad: &mut [u8; 256]) -> u64 {
    pad[(depth % 256) as usize] = depth as u8;
    let mut local = [0u8; 256];
    local.copy_from_slice(pad);
    1 + recurse(std::hint::black_box(depth + 1), std::hint::black_box(&mut local))
}

impl Tool for HostileCpu {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "hostile-cpu";
    const DESCRIPTION: &'static str = "Loops forever or recurses without end.";
    const INPUT_SCHEMA: &'static str = r#"{"type":"object","required":["attack"]}"#;

    fn invoke(input: Input) -> Result<Value, ToolError> {
        match input.attack.as_str() {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "recursion" => Ok(Value::from(recurse(0, &mut [0; 256]))),
            other => Err(ToolError::invalid_input(format!("unknown attack {other}"))),
        }
    }
}

host_api::export_tool!(HostileCpu);
