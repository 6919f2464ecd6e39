//! Warden: a sandboxed tool-execution runtime for AI agents, as a library a Rust
//! orchestrator embeds.
//!
//! Each tool is a WebAssembly component run in a fresh sandbox per call, with exactly the
//! mounts and egress its manifest asks for and the deployment grants. Every call passes one
//! decision point (Cedar policies) and produces a report that explains it; the audit keeps
//! its record, hash-chained, before the caller sees the result.
//!
//! Build a [`Runtime`] for a [`Deployment`] (choosing its state store, SQLite by default),
//! authenticate the agent once, call tools, read each [`CallReport`]:
//!
//! ```
//! use warden::identity::{assertion, keys};
//! use warden::{CallOutcome, CallRequest, Caller, Deployment, Runtime, Secret};
//!
//! # fn main() -> anyhow::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! # let root = dir.path();
//! // A deployment: one agent, one policy, one tool (the `hello` example).
//! let agent_key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
//! std::fs::write(
//!     root.join("warden.toml"),
//!     format!(
//!         "state_dir = \"state\"\ntool_dirs = [\"tools\"]\n\
//!          [agents.helper]\npublic_key = \"{}\"\n",
//!         keys::format_public(&agent_key.verifying_key())
//!     ),
//! )?;
//! std::fs::create_dir(root.join("policies"))?;
//! std::fs::write(
//!     root.join("policies/helper.cedar"),
//!     r#"permit(principal == Agent::"helper", action == Action::"invoke", resource == Tool::"hello");"#,
//! )?;
//! # warden_test_support::copy_built_tool("hello", &root.join("tools"))?;
//!
//! let runtime = Runtime::builder(Deployment::load(&root.join("warden.toml"))?).build()?;
//!
//! // The agent proves its key once; its calls need no signature of their own after that.
//! let proof = assertion::sign_session(&agent_key, "helper");
//! let agent = runtime.authenticate(&Secret::new(proof))?;
//!
//! let input = serde_json::json!({ "name": "Ada" });
//! let call = CallRequest::new("hello", input, Caller::Authenticated(agent));
//! let report = tokio::runtime::Runtime::new()?.block_on(runtime.call(call));
//!
//! assert_eq!(report.record.outcome, CallOutcome::Ok);
//! println!("{}", report.output.unwrap());
//! println!("allowed by {:?}", report.record.decision.policies);
//! # Ok(()) }
//! ```

pub mod approval;
pub mod audit;
mod bindings;
pub mod call;
pub mod credentials;
pub mod deployment;
mod engine;
pub mod error;
pub mod faults;
mod files;
pub mod identity;
pub mod manifest;
pub mod metrics;
pub mod notify;
pub mod outbound;

pub mod policy;
pub mod registry;
pub mod report;
pub mod revocation;
pub mod runtime;
pub mod security_events;

pub mod sandbox;
pub mod session;
pub mod signing;

pub mod state;
pub mod text;
pub mod trace;

pub mod units;

pub use call::{AuthenticatedAgent, CallRequest, Caller};
pub use credentials::Secret;
pub use deployment::Deployment;
pub use error::Error;
pub use policy::{Origin, OriginKind};
pub use report::{CallFailure, CallOutcome, CallRecord, CallReport, ErrorKind};
pub use runtime::{Runtime, RuntimeBuilder};
pub use state::StateStore;
pub use state::sqlite::SqliteStore;

// Code shared with `warden-test-support` names the library `warden`, here too.
#[cfg(test)]
extern crate self as warden;
