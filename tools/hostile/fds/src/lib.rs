//! Hostile: holds as many host handles as it can (open files, `wasi:http` fields), grows one
//! fields resource without end, or returns an enormous error message.
use host_api::{
    Tool, ToolError,
    serde_json::{Value, json},
};
use wasip2::http::types::Fields;

struct HostileFds;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Input {
    attack: String,
    /// How many times to try (files, fields, header bytes in KiB, error MiB).
    count: usize,
}

impl Tool for HostileFds {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "hostile-fds";
    const DESCRIPTION: &'static str =
        "Opens files or makes HTTP fields until refused, or returns a huge error.";

    fn invoke(input: Input) -> Result<Value, ToolError> {
        match input.attack.as_str() {
            // Every file stays open: only the host can stop this.
            "files" => {
                let mut open = Vec::new();
                for _ in 0..input.count {
                    match std::fs::File::open("/data/hello.txt") {
                        Ok(file) => open.push(file),
                        Err(e) => return Ok(json!({ "opened": open.len(), "error": e.to_string() })),
                    }
                }
                Ok(json!({ "opened": open.len() }))
            }
            "fields" => {
                let all: Vec<Fields> = (0..input.count).map(|_| Fields::new()).collect();
                Ok(json!({ "fields": all.len() }))
            }
            // One fields resource, one more KiB of header at a time, until refused; stdout
            // tells how far it got.
            "headers" => {
                let fields = Fields::new();
                let value = vec![b'v'; 1024];
                for i in 0..input.count {
                    println!("{i}");
                    if let Err(e) = fields.append(&format!("x-flood-{i}"), &value) {
                        return Ok(json!({ "kib": i, "error": format!("{e:?}") }));
                    }
                }
                Ok(json!({ "kib": input.count }))
            }
            "error" => Err(ToolError::failed("e".repeat(input.count << 20))),
            "invalid" => Err(ToolError::invalid_input("i".repeat(input.count << 20))),
            other => Err(ToolError::invalid_input(format!("unknown attack {other}"))),
        }
    }
}

host_api::export_tool!(HostileFds);
