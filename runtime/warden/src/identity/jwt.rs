//! Compact JWS with EdDSA (Ed25519): the one token format Warden signs and checks — call
//! assertions, delegations, minted credentials. Only `alg: EdDSA` is accepted, and signatures
//! are checked with `verify_strict`. Claim checks (expiry, audience…) belong to the callers.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// RFC 9068's type of a JWT access token.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Whether a JWT header's `typ` says access token (RFC 9068 allows the media type's long form).
pub fn is_access_token_type(typ: &str) -> bool {
    typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE) || typ.eq_ignore_ascii_case("application/at+jwt")
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

pub fn sign(key: &SigningKey, kid: Option<&str>, claims: &impl Serialize) -> String {
    sign_typed(key, kid, "JWT", claims)
}

/// The same, with the header's `typ` set to `typ` (`secevent+jwt` for a Security Event Token,
/// which RFC 8417 types explicitly so that it cannot pass for another kind of token).
pub fn sign_typed(
    key: &SigningKey,
    kid: Option<&str>,
    typ: &str,
    claims: &impl Serialize,
) -> String {
    let header = Header {
        alg: "EdDSA".into(),
        typ: Some(typ.into()),
        kid: kid.map(str::to_string),
    };
    let header = B64.encode(serde_json::to_vec(&header).expect("a header serializes"));
    let payload = B64.encode(serde_json::to_vec(claims).expect("claims serialize"));
    let signing_input = format!("{header}.{payload}");
    let signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", B64.encode(signature.to_bytes()))
}

/// Reads the header without checking anything (to pick the key by `kid`).
pub fn peek_header(token: &str) -> Result<Header, String> {
    let header = token.split('.').next().unwrap_or("");
    let bytes = B64
        .decode(header)
        .map_err(|_| "the token is not a JWT".to_string())?;
    serde_json::from_slice(&bytes).map_err(|_| "the token header is not JSON".to_string())
}

/// Reads the claims without checking the signature (to find who claims to have signed).
pub fn peek_claims<T: DeserializeOwned>(token: &str) -> Result<T, String> {
    let payload = token.split('.').nth(1).ok_or("the token is not a JWT")?;
    let bytes = B64
        .decode(payload)
        .map_err(|_| "the token is not a JWT".to_string())?;
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("the token's claims are not as expected: {e}"))
}

/// Checks the signature with `key` and returns the claims.
pub fn verify<T: DeserializeOwned>(token: &str, key: &VerifyingKey) -> Result<T, String> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the token is not a JWT".into());
    };
    let alg = peek_header(token)?.alg;
    if alg != "EdDSA" {
        return Err(format!("the token's algorithm {alg} is not EdDSA"));
    }
    let signature = B64
        .decode(signature)
        .map_err(|_| "the token's signature is not base64url".to_string())?;
    let signature = Signature::from_slice(&signature)
        .map_err(|_| "the token's signature is malformed".to_string())?;
    key.verify_strict(format!("{header}.{payload}").as_bytes(), &signature)
        .map_err(|_| "the token's signature does not verify".to_string())?;
    peek_claims(token)
}

/// Unix seconds.
pub fn now() -> i64 {
    now_ms() / 1000
}

/// Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as i64
}

/// `iat`/`exp` sanity: not expired, not issued in the future (with `skew` seconds of slack),
/// and not living longer than `max_lifetime` seconds. The times come from a token anyone can
/// write: the arithmetic saturates.
pub fn check_times(iat: i64, exp: i64, max_lifetime: i64, skew: i64) -> Result<(), String> {
    let now = now();
    if exp <= now {
        return Err(format!("expired {} s ago", now.saturating_sub(exp)));
    }
    if iat > now.saturating_add(skew) {
        return Err("not valid yet (issued in the future)".into());
    }
    let lifetime = exp.saturating_sub(iat);
    if lifetime > max_lifetime {
        return Err(format!(
            "lives longer than the maximum of {max_lifetime} s (a lifetime of {lifetime} s)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn signs_and_verifies_and_refuses_tampering() {
        let key = crate::identity::keys::generate();
        let token = sign(&key, Some("k1"), &json!({ "sub": "alice" }));
        let claims: Value = verify(&token, &key.verifying_key()).unwrap();
        assert_eq!(claims["sub"], "alice");
        assert_eq!(peek_header(&token).unwrap().kid.as_deref(), Some("k1"));

        let other = crate::identity::keys::generate();
        assert!(verify::<Value>(&token, &other.verifying_key()).is_err());
        let forged = format!(
            "{}.{}.{}",
            token.split('.').next().unwrap(),
            B64.encode(br#"{"sub":"mallory"}"#),
            token.split('.').nth(2).unwrap()
        );
        assert!(verify::<Value>(&forged, &key.verifying_key()).is_err());
        let none = format!(
            "{}.{}.",
            B64.encode(br#"{"alg":"none"}"#),
            B64.encode(br#"{"sub":"x"}"#)
        );
        assert!(verify::<Value>(&none, &key.verifying_key()).is_err());
    }

    #[test]
    fn extreme_times_are_refused_without_overflow() {
        for (iat, exp) in [
            (i64::MIN, i64::MIN),
            (i64::MIN, i64::MAX),
            (i64::MAX, i64::MAX),
            (0, i64::MIN),
        ] {
            assert!(check_times(iat, exp, 3600, 60).is_err(), "{iat} {exp}");
        }
    }
}
