//! The smallest useful tool: greets someone and says who asked.
use host_api::{
    Tool, ToolError,
    serde_json::{Value, json},
};

struct Hello;

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    #[schemars(length(min = 1, max = 200))]
    name: String,
}

impl Tool for Hello {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "hello";
    const DESCRIPTION: &'static str = "Greets someone by name.";

    fn invoke(input: Input) -> Result<Value, ToolError> {
        let ctx = host_api::context();
        Ok(json!({
            "greeting": format!("Hello, {}!", input.name),
            "call_id": ctx.call_id,
            "agent": ctx.agent,
            "user": ctx.user,
        }))
    }
}

host_api::export_tool!(Hello);
