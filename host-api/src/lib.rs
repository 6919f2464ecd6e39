//! The Rust SDK for Warden tools.
//!
//! A tool is a typed function `Input -> Result<Output, ToolError>`. Implement [`Tool`] and
//! call [`export_tool!`]; build with `cargo build --release --target wasm32-wasip2`.
//!
//! The input's JSON Schema, which Warden checks every input against before the tool runs, is
//! derived from the input type (`schemars::JsonSchema`): doc comments become descriptions,
//! `#[serde(deny_unknown_fields)]` forbids other properties, and `#[schemars(length(..))]`
//! or `#[schemars(regex(pattern = ..))]` narrow a field. The README's example is the
//! `warden new --lang rust` template, which the tests build and call.

pub mod bindings {
    wit_bindgen::generate!({
        world: "tool",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_tool_world",
        default_bindings_module: "host_api::bindings",
    });
}

pub use bindings::warden::tool::context::CallContext;
pub use bindings::warden::tool::types::ToolError;
pub use schemars;
pub use serde;
pub use serde_json;

/// The call this tool is serving: call id, tool, agent and user. Never a secret.
pub fn context() -> CallContext {
    bindings::warden::tool::context::current()
}

impl ToolError {
    pub fn failed(message: impl std::fmt::Display) -> Self {
        ToolError::Failed(message.to_string())
    }
    pub fn invalid_input(message: impl std::fmt::Display) -> Self {
        ToolError::InvalidInput(message.to_string())
    }
}

/// A tool: a typed function from its input to its output.
pub trait Tool {
    type Input: serde::de::DeserializeOwned + schemars::JsonSchema;
    type Output: serde::Serialize;
    const NAME: &'static str;
    const DESCRIPTION: &'static str;

    fn invoke(input: Self::Input) -> Result<Self::Output, ToolError>;

    /// JSON Schema of `Input`, as JSON text, derived from the type. Warden checks every input
    /// against it before the tool runs.
    fn input_schema() -> String {
        schemars::schema_for!(Self::Input).as_value().to_string()
    }
}

/// Glue between the WIT exports and a [`Tool`]; used by [`export_tool!`].
#[doc(hidden)]
pub struct Adapter<T>(std::marker::PhantomData<T>);

impl<T: Tool> bindings::Guest for Adapter<T> {
    fn describe() -> bindings::ToolInfo {
        bindings::ToolInfo {
            name: T::NAME.to_string(),
            description: T::DESCRIPTION.to_string(),
            input_schema: T::input_schema(),
        }
    }

    fn invoke(input: String) -> Result<String, ToolError> {
        let input: T::Input = serde_json::from_str(&input).map_err(ToolError::invalid_input)?;
        let output = T::invoke(input)?;
        serde_json::to_string(&output).map_err(ToolError::failed)
    }
}

/// Exports a [`Tool`] as the component's `warden:tool/tool` world.
#[macro_export]
macro_rules! export_tool {
    ($tool:ty) => {
        type __WardenToolAdapter = $crate::Adapter<$tool>;
        $crate::bindings::__export_tool_world!(__WardenToolAdapter with_types_in $crate::bindings);
    };
}
