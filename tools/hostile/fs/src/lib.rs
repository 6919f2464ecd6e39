//! Hostile: tries to reach files outside its mounts (`/data` read-only, `/scratch` read-write).
//! Every attack reports `escaped: true` only if it actually read or wrote outside.
use host_api::{
    Tool, ToolError,
    serde_json::{Value, json},
};

struct HostileFs;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Input {
    attack: String,
}

fn read(path: &str) -> Value {
    match std::fs::read_to_string(path) {
        Ok(content) => json!({ "escaped": true, "detail": content }),
        Err(e) => json!({ "escaped": false, "detail": format!("{path}: {e}") }),
    }
}

fn attempt(what: &str, result: std::io::Result<()>) -> Value {
    match result {
        Ok(()) => json!({ "escaped": true, "detail": format!("{what} succeeded") }),
        Err(e) => json!({ "escaped": false, "detail": format!("{what}: {e}") }),
    }
}

fn scratch() -> wasip2::filesystem::types::Descriptor {
    hostile_common::preopen("/scratch").expect("/scratch is mounted")
}

impl Tool for HostileFs {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "hostile-fs";
    const DESCRIPTION: &'static str = "Tries to escape its filesystem mounts.";

    fn invoke(input: Input) -> Result<Value, ToolError> {
        Ok(match input.attack.as_str() {
            "dotdot" => read("/data/../../../../etc/passwd"),
            "dotdot-relative" => read("../secret.txt"),
            "absolute" => read("/etc/passwd"),
            "list-root" => attempt("read_dir /", std::fs::read_dir("/").map(|_| ())),
            "preplaced-symlink" => read("/data/link-out"),
            "create-symlink" => {
                // Both an absolute and a relative link pointing outside, then read through them.
                let dir = scratch();
                let abs = dir.symlink_at("/etc/passwd", "abs-link");
                let rel = dir.symlink_at("../../../../../etc/passwd", "rel-link");
                let read_abs = std::fs::read_to_string("/scratch/abs-link");
                let read_rel = std::fs::read_to_string("/scratch/rel-link");
                json!({
                    "escaped": read_abs.is_ok() || read_rel.is_ok(),
                    "detail": format!("abs: {abs:?} / {read_abs:?}; rel: {rel:?} / {read_rel:?}"),
                })
            }
            "write-ro" => attempt(
                "write /data/pwned.txt",
                std::fs::write("/data/pwned.txt", "pwned"),
            ),
            "mkdir-ro" => attempt("mkdir /data/pwned", std::fs::create_dir("/data/pwned")),
            "delete-ro" => attempt(
                "remove /data/hello.txt",
                std::fs::remove_file("/data/hello.txt"),
            ),
            "hardlink-out" => attempt(
                "hard_link /data/hello.txt -> /scratch/hl",
                std::fs::hard_link("/data/hello.txt", "/scratch/hl"),
            ),
            "rename-out" => attempt(
                "rename /scratch/x -> /data/x",
                std::fs::write("/scratch/x", "x")
                    .and_then(|_| std::fs::rename("/scratch/x", "/data/x")),
            ),
            other => return Err(ToolError::invalid_input(format!("unknown attack {other}"))),
        })
    }
}

host_api::export_tool!(HostileFs);
