//! Writes a note into the read-write mount `/notes`.
use host_api::{
    Tool, ToolError,
    serde_json::{Value, json},
};

struct WriteNote;

#[derive(serde::Deserialize)]
struct Input {
    name: String,
    text: String,
}

impl Tool for WriteNote {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "write-note";
    const DESCRIPTION: &'static str = "Writes a text note under /notes.";
    const INPUT_SCHEMA: &'static str = r#"{
        "type": "object",
        "properties": {
            "name": { "type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$" },
            "text": { "type": "string", "maxLength": 65536 }
        },
        "required": ["name", "text"],
        "additionalProperties": false
    }"#;

    fn invoke(input: Input) -> Result<Value, ToolError> {
        let path = format!("/notes/{}", input.name);
        std::fs::write(&path, input.text.as_bytes())
            .map_err(|e| ToolError::failed(format!("cannot write {path}: {e}")))?;
        Ok(json!({ "path": path, "bytes": input.text.len() }))
    }
}

host_api::export_tool!(WriteNote);
