//! Hostile: sends exactly the request line it is told to through raw `wasi:http` calls (no
//! client library to tidy it up): any method text, scheme, authority and path-with-query
//! (`?x`, empty, `//x`, huge), each repeated as often as asked, to show that the host neither
//! crashes nor lets anything but the normal form of an allowed request leave.
use host_api::{
    Tool, ToolError,
    serde_json::{Value, json},
};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingRequest, Scheme};

struct HostileEgress;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Input {
    requests: Vec<Outgoing>,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Outgoing {
    #[serde(default = "get")]
    method: String,
    #[serde(default = "http")]
    scheme: String,
    authority: String,
    /// The path-with-query exactly as sent; absent: none is set.
    path: Option<String>,
    /// How many times to send it (only the last result is returned).
    #[serde(default = "once")]
    repeat: u32,
}

fn get() -> String {
    "GET".into()
}

fn http() -> String {
    "http".into()
}

fn once() -> u32 {
    1
}

impl Tool for HostileEgress {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "hostile-egress";
    const DESCRIPTION: &'static str = "Sends raw wasi:http requests, exactly as given.";

    /// One result per request: `{sent, status, body}` or `{sent: false, error}`, and `count`,
    /// how many times it was sent.
    fn invoke(input: Input) -> Result<Value, ToolError> {
        let results = input
            .requests
            .iter()
            .map(|r| {
                let mut last = json!(null);
                for _ in 0..r.repeat {
                    last = send(r);
                }
                last["count"] = json!(r.repeat);
                last
            })
            .collect();
        Ok(Value::Array(results))
    }
}

fn method(text: &str) -> Method {
    match text {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    }
}

fn refused(what: &str) -> Value {
    json!({ "sent": false, "error": format!("the guest API refused the {what}") })
}

fn send(r: &Outgoing) -> Value {
    let request = OutgoingRequest::new(Fields::new());
    if request.set_method(&method(&r.method)).is_err() {
        return refused("method");
    }
    let scheme = match r.scheme.as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    if request.set_scheme(Some(&scheme)).is_err() {
        return refused("scheme");
    }
    if request.set_authority(Some(&r.authority)).is_err() {
        return refused("authority");
    }
    if request.set_path_with_query(r.path.as_deref()).is_err() {
        return refused("path");
    }
    let future = match outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(e) => return json!({ "sent": false, "error": format!("{e:?}") }),
    };
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return json!({ "sent": false, "error": format!("{e:?}") }),
        _ => return json!({ "sent": false, "error": "no response" }),
    };
    let status = response.status();
    let mut body = Vec::new();
    if let Ok(incoming) = response.consume() {
        if let Ok(stream) = incoming.stream() {
            while let Ok(chunk) = stream.blocking_read(16 * 1024) {
                body.extend(chunk);
            }
        }
    }
    json!({ "sent": true, "status": status, "body": String::from_utf8_lossy(&body) })
}

host_api::export_tool!(HostileEgress);
