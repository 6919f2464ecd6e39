//! Deletes a note from the read-write mount `/notes`: an irreversible tool.
use host_api::{
    Tool, ToolError,
    serde_json::{Value, json},
};

struct DeleteNote;

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,64}$"))]
    name: String,
}

impl Tool for DeleteNote {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "delete-note";
    const DESCRIPTION: &'static str = "Deletes a note under /notes, for good.";

    fn invoke(input: Input) -> Result<Value, ToolError> {
        let path = format!("/notes/{}", input.name);
        std::fs::remove_file(&path)
            .map_err(|e| ToolError::failed(format!("cannot delete {path}: {e}")))?;
        Ok(json!({ "deleted": path }))
    }
}

host_api::export_tool!(DeleteNote);
