//! Writes a note into the read-write mount `/notes`.
use host_api::{
    Tool, ToolError,
    serde_json::{Value, json},
};

struct WriteNote;

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,64}$"))]
    name: String,
    #[schemars(length(max = 65536))]
    text: String,
}

impl Tool for WriteNote {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "write-note";
    const DESCRIPTION: &'static str = "Writes a text note under /notes.";

    fn invoke(input: Input) -> Result<Value, ToolError> {
        let path = format!("/notes/{}", input.name);
        std::fs::write(&path, input.text.as_bytes())
            .map_err(|e| ToolError::failed(format!("cannot write {path}: {e}")))?;
        Ok(json!({ "path": path, "bytes": input.text.len() }))
    }
}

host_api::export_tool!(WriteNote);
