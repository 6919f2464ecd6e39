//! Hostile: floods stdout/stderr, or returns an output larger than its cap.
use host_api::{
    Tool, ToolError,
    serde_json::{Value, json},
};

struct HostileFlood;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Input {
    attack: String,
    megabytes: usize,
}

impl Tool for HostileFlood {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "hostile-flood";
    const DESCRIPTION: &'static str = "Writes megabytes to stdout and stderr, or returns them.";

    fn invoke(input: Input) -> Result<Value, ToolError> {
        let line = "x".repeat(1023);
        match input.attack.as_str() {
            "stdout" => {
                for _ in 0..input.megabytes * 1024 {
                    println!("{line}");
                    eprintln!("{line}");
                }
                Ok(json!({ "printed_megabytes": input.megabytes }))
            }
            "output" => Ok(json!({ "blob": line.repeat(input.megabytes * 1024) })),
            other => Err(ToolError::invalid_input(format!("unknown attack {other}"))),
        }
    }
}

host_api::export_tool!(HostileFlood);
