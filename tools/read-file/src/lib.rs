//! Reads a text file from the read-only mount `/data`.
use host_api::{
    Tool, ToolError,
    serde_json::{Value, json},
};

struct ReadFile;

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// Path relative to `/data`.
    #[schemars(length(min = 1))]
    path: String,
}

impl Tool for ReadFile {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "read-file";
    const DESCRIPTION: &'static str = "Reads a text file under /data.";

    fn invoke(input: Input) -> Result<Value, ToolError> {
        let path = format!("/data/{}", input.path.trim_start_matches('/'));
        let content = std::fs::read_to_string(&path)
            .map_err(|e| ToolError::failed(format!("cannot read {path}: {e}")))?;
        Ok(json!({ "path": path, "content": content }))
    }
}

host_api::export_tool!(ReadFile);
