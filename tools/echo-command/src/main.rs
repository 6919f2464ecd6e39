//! A plain `wasi:cli/command` tool: JSON on stdin, JSON on stdout, exit status as the outcome.
use std::io::Read;

fn main() {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("cannot read stdin: {e}");
        std::process::exit(1);
    }
    let value: serde_json::Value = match serde_json::from_str(&input) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("input is not JSON: {e}");
            std::process::exit(1);
        }
    };
    if value.get("fail").and_then(|v| v.as_bool()) == Some(true) {
        eprintln!("asked to fail");
        std::process::exit(3);
    }
    println!("{}", serde_json::json!({ "echo": value }));
}
