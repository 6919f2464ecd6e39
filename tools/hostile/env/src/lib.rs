//! Hostile: looks for ambient authority in its environment, arguments and working directory.
use host_api::{
    Tool, ToolError,
    serde_json::{Value, json},
};

struct HostileEnv;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Input {}

impl Tool for HostileEnv {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "hostile-env";
    const DESCRIPTION: &'static str = "Reports every environment variable and argument it can see.";

    fn invoke(_: Input) -> Result<Value, ToolError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let args: Vec<String> = std::env::args().collect();
        let cwd = std::env::current_dir()
            .map(|p| p.display().to_string())
            .ok();
        Ok(json!({ "env": env, "args": args, "cwd": cwd }))
    }
}

host_api::export_tool!(HostileEnv);
