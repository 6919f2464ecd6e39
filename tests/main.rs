//! Warden's black-box tests: one binary (so the suite links wasmtime once), one module per
//! concern, each running real components built from `tools/` against the real library, the
//! real `warden` binary and real servers on loopback.

mod common;

mod approvals;
mod audit;
mod authoring;
mod cli;
mod drill_isolation;
mod identity;
mod inbox;

mod isolation;
mod layering;
mod library;
mod mcp;
mod nodes;
mod oauth;
mod policy;
mod properties;
mod revocation;
mod tools;
