//! The drills: proofs, on a real deployment, that its controls hold. Each uses throwaway
//! principals and loopback upstreams only, records its calls as `origin.kind = "drill"`, and
//! never changes the deployment's tools, policies or keys.

pub mod isolation;
pub mod revocation;
