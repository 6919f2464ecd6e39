//! Principals and their proofs: agent keys, call assertions, user delegations.

pub mod assertion;
pub mod delegation;
pub mod issuance;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod oauth;

/// Who one call runs as: its id, its tool, its agent and the user it acts for. The tool may
/// read it (`warden:tool/context`); a token minted for the call names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    pub call_id: String,
    pub tool: String,
    pub agent: String,
    pub user: Option<String>,
}
