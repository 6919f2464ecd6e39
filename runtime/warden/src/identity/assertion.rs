//! Call assertions: an agent proves it is making this very call by signing (agent, tool,
//! input digest, time, nonce) with its key. The runtime checks the signature against the key
//! registered in `warden.toml`, the binding to the call, the time, and that the nonce is new.

use super::{jwt, keys};
use crate::deployment::Deployment;
use crate::error::Error;
use crate::state::StateStore;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The `aud` of every call assertion.
pub const AUDIENCE: &str = "warden";
/// How long an assertion the CLI signs is valid.
pub const LIFETIME_SECS: i64 = 60;
const MAX_LIFETIME_SECS: i64 = 300;
/// The `tool` of a session assertion, which authenticates an agent for many calls.
pub const SESSION_TOOL: &str = "*";
const CLOCK_SKEW_SECS: i64 = 30;

#[derive(Debug, Serialize, Deserialize)]
pub struct CallAssertion {
    /// The agent.
    pub sub: String,
    pub aud: String,
    pub tool: String,
    /// `input_digest` of the input.
    pub input_sha256: String,
    pub iat: i64,
    pub exp: i64,
    /// Nonce: an assertion is accepted once.
    pub jti: String,
}

/// sha256 (hex) of the input's canonical JSON (object keys sorted, no spaces): the same
/// input has the same digest however its keys were ordered.
pub fn input_digest(input: &serde_json::Value) -> String {
    let mut canonical = Vec::new();
    write_canonical(input, &mut canonical);
    hex::encode(Sha256::digest(&canonical))
}

fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(Value::from(key.as_str()).to_string().into_bytes());
                out.push(b':');
                write_canonical(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend(scalar.to_string().into_bytes()),
    }
}

/// What the CLI (or any caller holding the agent's key) sends with a call.
pub fn sign(key: &SigningKey, agent: &str, tool: &str, input: &serde_json::Value) -> String {
    let iat = jwt::now();
    let claims = CallAssertion {
        sub: agent.to_string(),
        aud: AUDIENCE.into(),
        tool: tool.to_string(),
        input_sha256: input_digest(input),
        iat,
        exp: iat + LIFETIME_SECS,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    jwt::sign(key, None, &claims)
}

/// A session assertion: proves the agent once to a long-lived caller (`Runtime::authenticate`).
pub fn sign_session(key: &SigningKey, agent: &str) -> String {
    sign(key, agent, SESSION_TOOL, &serde_json::Value::Null)
}

/// Verifies `token` for a call of `tool` with `input`; returns the authenticated agent.
/// A refusal's reason is safe to show the caller; a failing store is `Error::Internal`.
pub fn verify(
    token: &str,
    deployment: &Deployment,
    state: &dyn StateStore,
    tool: &str,
    input: &serde_json::Value,
) -> Result<String, Error> {
    let claims = verify_claims(token, deployment, tool, input).map_err(Error::Refused)?;
    match state.use_nonce(&claims.jti, claims.exp) {
        Ok(true) => Ok(claims.sub),
        Ok(false) => Err(Error::Refused(
            "call assertion was already used (replay)".into(),
        )),
        Err(e) => Err(Error::Internal(
            e.context("recording the call assertion's nonce"),
        )),
    }
}

/// The assertion's claims, if it is valid for `tool` and `input` (its nonce not yet spent).
fn verify_claims(
    token: &str,
    deployment: &Deployment,
    tool: &str,
    input: &serde_json::Value,
) -> Result<CallAssertion, String> {
    let claimed: CallAssertion =
        jwt::peek_claims(token).map_err(|e| format!("call assertion: {e}"))?;
    let agent = &claimed.sub;
    let entry = deployment.agents.get(agent).ok_or_else(|| {
        format!(
            "agent `{agent}` is not registered in {}",
            deployment.file.display()
        )
    })?;
    let key = entry.public_key.as_deref().ok_or_else(|| {
        format!(
            "agent `{agent}` has no public_key in {}, so it cannot be authenticated",
            deployment.file.display()
        )
    })?;
    let key = keys::parse_public(key).map_err(|e| format!("agent `{agent}`: {e}"))?;
    let claims: CallAssertion = jwt::verify(token, &key)
        .map_err(|e| format!("call assertion for agent `{agent}`: {e} (wrong agent key?)"))?;
    if claims.aud != AUDIENCE {
        return Err(format!(
            "call assertion: audience `{}` is not `{AUDIENCE}`",
            claims.aud
        ));
    }
    jwt::check_times(claims.iat, claims.exp, MAX_LIFETIME_SECS, CLOCK_SKEW_SECS)
        .map_err(|e| format!("call assertion: {e}"))?;
    if claims.tool != tool {
        return Err(format!(
            "call assertion is for tool `{}`, not `{tool}`",
            claims.tool
        ));
    }
    if claims.input_sha256 != input_digest(input) {
        return Err("call assertion was signed for a different input".into());
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_input_digest_ignores_key_order_and_nothing_else() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b":[1,{"y":2,"x":"é"}],"a":null}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":null,"b":[1,{"x":"é","y":2}]}"#).unwrap();
        let c: serde_json::Value =
            serde_json::from_str(r#"{"a":null,"b":[{"x":"é","y":2},1]}"#).unwrap();
        assert_eq!(super::input_digest(&a), super::input_digest(&b));
        assert_ne!(super::input_digest(&a), super::input_digest(&c));
    }
}
