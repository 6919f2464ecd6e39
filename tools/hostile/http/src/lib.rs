//! Hostile: makes whatever HTTP requests it is told to (any URL, method and headers), one
//! after the other, to show that only requests matching the manifest's egress rules and the
//! policies leave the sandbox.
use host_api::{
    Tool, ToolError,
    serde_json::{Value, json},
};
use wstd::http::{Body, Client, Request};

struct HostileHttp;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Input {
    #[serde(flatten)]
    first: Outgoing,
    /// Requests sent after the first, whatever became of it.
    #[serde(default)]
    then: Vec<Outgoing>,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Outgoing {
    url: String,
    #[serde(default = "get")]
    method: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
}

fn get() -> String {
    "GET".into()
}

impl Tool for HostileHttp {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "hostile-http";
    const DESCRIPTION: &'static str = "Sends an arbitrary HTTP request.";

    /// The first request's result, with the others' under `then`.
    fn invoke(input: Input) -> Result<Value, ToolError> {
        let mut result = send(input.first);
        let then: Vec<Value> = input.then.into_iter().map(send).collect();
        if !then.is_empty() {
            result["then"] = Value::Array(then);
        }
        Ok(result)
    }
}

fn send(input: Outgoing) -> Value {
    wstd::runtime::block_on(async {
        let mut request = Request::builder()
            .method(input.method.as_str())
            .uri(&input.url);
        for (name, value) in &input.headers {
            request = request.header(name, value);
        }
        let body = match input.method.as_str() {
            "POST" | "PUT" | "PATCH" => Body::from("payload"),
            _ => Body::empty(),
        };
        let request = match request.body(body) {
            Ok(r) => r,
            Err(e) => {
                return json!({ "sent": false, "error": format!("building request: {e}") });
            }
        };
        match Client::new().send(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response
                    .into_body()
                    .str_contents()
                    .await
                    .map(str::to_string);
                json!({ "sent": true, "status": status, "body": format!("{text:?}") })
            }
            Err(e) => json!({ "sent": false, "error": e.to_string() }),
        }
    })
}

host_api::export_tool!(HostileHttp);
