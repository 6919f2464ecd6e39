//! JSON Web Key Sets (RFC 7517) of Ed25519 keys: what `warden jwks` publishes for upstreams,
//! and how Warden reads a trusted issuer's keys.

use super::keys::{public_from_base64url, public_to_base64url};
use ed25519_dalek::VerifyingKey;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeySet {
    keys: Vec<(Option<String>, VerifyingKey)>,
}

impl KeySet {
    pub fn new(keys: Vec<(Option<String>, VerifyingKey)>) -> KeySet {
        KeySet { keys }
    }

    /// The key with this `kid`, or the only key when the token names none.
    pub fn key(&self, kid: Option<&str>) -> Option<VerifyingKey> {
        match (kid, self.keys.as_slice()) {
            (Some(kid), keys) => keys
                .iter()
                .find(|(k, _)| k.as_deref() == Some(kid))
                .map(|(_, key)| *key),
            (None, [(_, only)]) => Some(*only),
            (None, _) => None,
        }
    }

    /// Reads the Ed25519 (`OKP`) keys of a JWKS document; other key types are skipped.
    pub fn from_json(jwks: &serde_json::Value) -> Result<KeySet, String> {
        let mut keys = Vec::new();
        for jwk in jwks["keys"]
            .as_array()
            .ok_or("the JWKS has no `keys` array")?
        {
            // A key for encryption (`use: enc`) signs nothing Warden accepts.
            let signs = jwk.get("use").is_none_or(|u| u == "sig");
            if jwk["kty"] != "OKP" || jwk["crv"] != "Ed25519" || !signs {
                continue;
            }
            let key = public_from_base64url(jwk["x"].as_str().unwrap_or(""))
                .map_err(|e| format!("key {}: {e}", jwk["kid"]))?;
            keys.push((jwk["kid"].as_str().map(str::to_string), key));
        }
        if keys.is_empty() {
            return Err("the JWKS holds no Ed25519 keys".into());
        }
        Ok(KeySet { keys })
    }

    pub fn to_json(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .map(|(kid, key)| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": public_to_base64url(key),
                    "kid": kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_picks_keys_by_kid() {
        let (a, b) = (
            super::super::keys::generate().verifying_key(),
            super::super::keys::generate().verifying_key(),
        );
        let set = KeySet::new(vec![(Some("a".into()), a), (Some("b".into()), b)]);
        let back = KeySet::from_json(&set.to_json()).unwrap();
        assert_eq!(back.key(Some("b")), Some(b));
        assert_eq!(back.key(None), None, "ambiguous without a kid");
        assert!(KeySet::from_json(&serde_json::json!({ "keys": [] })).is_err());
    }
}
