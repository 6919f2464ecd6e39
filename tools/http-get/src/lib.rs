//! Fetches a URL with GET through `wasi:http`; Warden decides whether the request may leave.
use host_api::{
    Tool, ToolError,
    serde_json::{Value, json},
};
use wstd::http::{Body, Client, Request};

struct HttpGet;

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    #[schemars(regex(pattern = r"^https?://"))]
    url: String,
}

impl Tool for HttpGet {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "http-get";
    const DESCRIPTION: &'static str = "Fetches a URL with GET and returns status and body text.";

    fn invoke(input: Input) -> Result<Value, ToolError> {
        wstd::runtime::block_on(async {
            let request = Request::get(&input.url)
                .body(Body::empty())
                .map_err(ToolError::invalid_input)?;
            let response = Client::new()
                .send(request)
                .await
                .map_err(|e| ToolError::failed(format!("GET {}: {e}", input.url)))?;
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let text = body
                .str_contents()
                .await
                .map_err(|e| ToolError::failed(format!("reading body: {e}")))?;
            Ok(json!({ "status": status, "body": text }))
        })
    }
}

host_api::export_tool!(HttpGet);
