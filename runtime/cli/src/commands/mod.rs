//! One module per command group of `warden`.

pub mod approvals;
pub mod audit;
pub mod bench;
pub mod build;
pub mod call;
pub mod demo;
pub mod drill;
pub mod keys;
pub mod mcp;
pub mod new;
pub mod policy;
pub mod revoke;
pub mod serve;
pub mod session;
pub mod test;
pub mod tool;
