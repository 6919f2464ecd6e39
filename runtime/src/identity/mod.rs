//! Principals and their proofs: agent keys, call assertions, user delegations.

pub mod assertion;
pub mod delegation;
pub mod jwks;
pub mod jwt;
pub mod keys;
