//! Hostile: allocates until something stops it.
use host_api::{Tool, ToolError, serde_json::Value};

struct HostileMemory;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Input {
    /// Megabytes to allocate in 1 MiB steps, touching each page.
    megabytes: usize,
}

impl Tool for HostileMemory {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "hostile-memory";
    const DESCRIPTION: &'static str = "Allocates and touches the given number of megabytes.";

    fn invoke(input: Input) -> Result<Value, ToolError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        for _ in 0..input.megabytes {
            hoard.push(vec![0xA5; 1 << 20]);
        }
        Ok(Value::from(hoard.iter().map(|v| v.len()).sum::<usize>()))
    }
}

host_api::export_tool!(HostileMemory);
