//! Warden: a sandboxed tool-execution runtime for AI agents.
//!
//! Each tool is a WebAssembly component run in a fresh sandbox per call, with exactly the
//! mounts and egress its manifest asks for and the deployment grants. Every call passes one
//! decision point and produces a report that explains it.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let deployment = warden::Deployment::load("warden.toml".as_ref())?;
//! let runtime = warden::Runtime::new(deployment)?;
//! let report = runtime
//!     .call(warden::CallRequest {
//!         tool: "hello".into(),
//!         agent: "demo-agent".into(),
//!         input: serde_json::json!({ "name": "Ada" }),
//!     })
//!     .await;
//! println!("{}", serde_json::to_string_pretty(&report)?);
//! # Ok(()) }
//! ```

pub mod call;
pub mod cli;
pub mod deployment;
pub mod engine;
pub mod loopback;
pub mod manifest;
pub mod policy;
pub mod registry;
pub mod runtime;
pub mod sandbox;
pub mod units;

pub use call::{CallReport, CallRequest, ErrorKind};
pub use deployment::Deployment;
pub use manifest::Manifest;
pub use runtime::Runtime;

/// The tools built from this repository's `tools/` (examples and hostile ones), one directory
/// each with a digest-pinned `tool.toml`. The demo and the tests use them.
pub const BUILT_TOOLS_DIR: &str = env!("WARDEN_BUILT_TOOLS");
