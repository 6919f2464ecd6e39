//! Delegations: a user's signed, expiring grant that lets one agent call some tools on the
//! user's behalf (a JWT: `sub` user, `act.sub` and `azp` agent, `scope` tools, `exp`, `jti`).
//!
//! Signed either by a user registered with a public key (`iss` = `user:<name>`) or by a
//! trusted issuer whose keys are in a JWKS file (`iss` = the issuer's name). A token's
//! signature is checked once and remembered; expiry is checked on every call.

use super::{jwt, keys};
use crate::deployment::Deployment;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Longest delegation Warden accepts.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DelegationClaims {
    pub iss: String,
    pub sub: String,
    pub act: Actor,
    pub azp: String,
    /// Space-separated tool names.
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// A verified delegation.
#[derive(Debug, Clone, Serialize)]
pub struct Delegation {
    pub user: String,
    pub agent: String,
    pub tools: Vec<String>,
    pub id: String,
    pub expires: i64,
}

impl Delegation {
    pub fn allows(&self, tool: &str) -> bool {
        self.tools.iter().any(|t| t == tool || t == "*")
    }
}

pub fn issue(
    user_key: &SigningKey,
    user: &str,
    agent: &str,
    tools: &[String],
    ttl: Duration,
) -> String {
    let iat = jwt::now();
    let claims = DelegationClaims {
        iss: format!("user:{user}"),
        sub: user.to_string(),
        act: Actor {
            sub: agent.to_string(),
        },
        azp: agent.to_string(),
        scope: tools.join(" "),
        iat,
        exp: iat + ttl.as_secs() as i64,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    jwt::sign(user_key, None, &claims)
}

/// Verifies delegation tokens, remembering the ones whose signature already checked out.
/// Verified delegations a process keeps at most.
const MAX_CACHED: usize = 4096;

#[derive(Default)]
pub struct Verifier {
    verified: Mutex<Verified>,
}

/// Delegations verified, and how many times the deployment changed: a delegation verified
/// against an older deployment is not kept.
#[derive(Default)]
struct Verified {
    delegations: HashMap<[u8; 32], Delegation>,
    generation: u64,
}

impl Verifier {
    /// Forgets every delegation verified so far, and those being verified now (the issuers
    /// or users may have changed).
    pub fn forget(&self) {
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        verified.delegations.clear();
        verified.generation += 1;
    }

    pub fn verify(&self, token: &str, deployment: &Deployment) -> Result<Delegation, String> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let (cached, generation) = {
            let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            (verified.delegations.get(&key).cloned(), verified.generation)
        };
        let delegation = match cached {
            Some(d) => d,
            None => {
                let d = verify_signature(token, deployment)?;
                let mut guard = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
                if guard.generation != generation {
                    // Checked against a deployment that was replaced meanwhile: not kept.
                    return Err(
                        "the deployment changed while the delegation was checked: try again".into(),
                    );
                }
                let verified = &mut guard.delegations;
                // Bounded: a long-running server sees new tokens without end. Expired ones go
                // first; if all are live, the cache starts over (a miss only costs a check).
                if verified.len() >= MAX_CACHED {
                    let now = jwt::now();
                    verified.retain(|_, d| d.expires > now);
                    if verified.len() >= MAX_CACHED {
                        verified.clear();
                    }
                }
                verified.insert(key, d.clone());
                d
            }
        };
        if delegation.expires <= jwt::now() {
            return Err(format!(
                "delegation {} expired {} s ago",
                delegation.id,
                jwt::now().saturating_sub(delegation.expires)
            ));
        }
        Ok(delegation)
    }
}

fn verify_signature(token: &str, deployment: &Deployment) -> Result<Delegation, String> {
    // An access token of an issuer trusted for both (an identity provider) is no delegation.
    if jwt::peek_header(token)?
        .typ
        .is_some_and(|t| jwt::is_access_token_type(&t))
    {
        return Err("delegation: an access token is not a delegation".into());
    }
    let claimed: DelegationClaims =
        jwt::peek_claims(token).map_err(|e| format!("delegation: {e}"))?;
    let key = if let Some(user) = claimed.iss.strip_prefix("user:") {
        if user != claimed.sub {
            return Err(format!(
                "delegation: user `{user}` cannot delegate for `{}`",
                claimed.sub
            ));
        }
        let entry = deployment
            .users
            .get(user)
            .ok_or_else(|| format!("delegation: user `{user}` is not registered"))?;
        keys::parse_public(&entry.public_key).map_err(|e| format!("user `{user}`: {e}"))?
    } else {
        let issuer = deployment
            .issuers
            .get(&claimed.iss)
            .ok_or_else(|| format!("delegation: issuer `{}` is not trusted", claimed.iss))?;
        let kid = jwt::peek_header(token)?.kid;
        issuer
            .key(kid.as_deref())
            .ok_or_else(|| format!("delegation: issuer `{}` has no key {kid:?}", claimed.iss))?
    };
    let claims: DelegationClaims =
        jwt::verify(token, &key).map_err(|e| format!("delegation: {e}"))?;
    jwt::check_times(claims.iat, claims.exp, MAX_TTL.as_secs() as i64, 30)
        .map_err(|e| format!("delegation {}: {e}", claims.jti))?;
    if claims.azp != claims.act.sub {
        return Err("delegation: `azp` and `act.sub` name different agents".into());
    }
    Ok(Delegation {
        user: claims.sub,
        agent: claims.act.sub,
        tools: claims
            .scope
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        id: claims.jti,
        expires: claims.exp,
    })
}
