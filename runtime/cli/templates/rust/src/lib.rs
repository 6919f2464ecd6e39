//! {{name}}: a Warden tool. `warden tool build .` builds it (see README.md).
use host_api::serde_json::{Value, json};
use host_api::{Tool, ToolError};

struct {{type}};

/// The input. Its JSON Schema, which Warden checks every input against before `invoke` runs,
/// is derived from this type: doc comments describe the fields.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// Who to greet.
    #[schemars(length(min = 1))]
    name: String,
    /// A file to read under the mount `/data` (uncomment `[[fs]]` in tool.toml).
    file: Option<String>,
}

impl Tool for {{type}} {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "{{name}}";
    const DESCRIPTION: &'static str = "Greets someone by name.";

    fn invoke(input: Input) -> Result<Value, ToolError> {
        let mut output = json!({ "greeting": format!("Hello, {}!", input.name) });
        if let Some(file) = input.file {
            let text = std::fs::read_to_string(format!("/data/{file}"))
                .map_err(|e| ToolError::failed(format!("reading /data/{file}: {e}")))?;
            output["file"] = json!(text);
        }
        // An HTTP request (allowed by an `[[egress]]` rule in tool.toml; add `wstd` to
        // Cargo.toml):
        // let status = wstd::runtime::block_on(async {
        //     let request = wstd::http::Request::get("https://api.example.com/v1/status")
        //         .body(wstd::http::Body::empty())
        //         .map_err(ToolError::failed)?;
        //     let response = wstd::http::Client::new().send(request).await.map_err(ToolError::failed)?;
        //     Ok::<_, ToolError>(response.status().as_u16())
        // })?;
        Ok(output)
    }
}

host_api::export_tool!({{type}});
