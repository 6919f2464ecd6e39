//! Warden: a sandboxed tool-execution runtime for AI agents.
//!
//! Each tool is a WebAssembly component run in a fresh sandbox per call, with exactly the
//! mounts and egress its manifest asks for and the deployment grants. Every call passes one
//! decision point and produces a report that explains it.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use warden::call::Caller;
//! use warden::credentials::Secret;
//! use warden::identity::{assertion, keys};
//!
//! let deployment = warden::Deployment::load("warden.toml".as_ref())?;
//! let runtime = warden::Runtime::new(deployment)?;
//! let agent_key = keys::read_private("keys/demo-agent.key".as_ref())?;
//! let input = serde_json::json!({ "name": "Ada" });
//! // The agent proves it makes this very call: tool, input, time and a nonce, signed.
//! let proof = assertion::sign(&agent_key, "demo-agent", "hello", &input);
//! let report = runtime
//!     .call(warden::CallRequest::new("hello", input, Caller::Assertion(Secret::new(proof))))
//!     .await;
//! println!("{}", serde_json::to_string_pretty(&report)?);
//! # Ok(()) }
//! ```

pub mod approval;
pub mod audit;
pub mod call;
pub mod cli;
pub mod credentials;
pub mod deployment;
pub mod drill;
pub mod engine;
pub mod identity;
pub mod loopback;
pub mod manifest;
pub mod mcp;
pub mod policy;
pub mod registry;
pub mod revocation;
pub mod runtime;
pub mod sandbox;
pub mod session;
pub mod state;
pub mod text;
pub mod units;

pub use call::{CallReport, CallRequest, ErrorKind};
pub use deployment::Deployment;
pub use manifest::Manifest;
pub use runtime::Runtime;

/// The tools built from this repository's `tools/` (examples and hostile ones), one directory
/// each with a digest-pinned `tool.toml`. The demo and the tests use them.
pub const BUILT_TOOLS_DIR: &str = env!("WARDEN_BUILT_TOOLS");
