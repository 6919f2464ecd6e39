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
            // A private key in a public document is a leak to stop, not a key to use or skip,
            // whatever its type (RFC 7518 section 6: `d`, RSA's primes and CRT values, a
            // symmetric key's `k`).
            if let Some(member) = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"]
                .into_iter()
                .find(|m| jwk.get(m).is_some())
            {
                return Err(format!(
                    "key {} holds private key material (`{member}`): publish public keys only",
                    jwk["kid"]
                ));
            }
            // A key for encryption (`use: enc`) signs nothing Warden accepts.
            let signs = jwk.get("use").is_none_or(|u| u == "sig");
            if jwk["kty"] != "OKP" || jwk["crv"] != "Ed25519" || !signs {
                continue;
            }
            let key = public_from_base64url(jwk["x"].as_str().unwrap_or(""))
                .map_err(|e| format!("key {}: {e}", jwk["kid"]))?;
            let kid = jwk["kid"].as_str().map(str::to_string);
            // Two keys under one `kid`: which one signs would be an accident of order.
            if kid.is_some() && keys.iter().any(|(k, _)| *k == kid) {
                return Err(format!("two keys have the kid {}", jwk["kid"]));
            }
            keys.push((kid, key));
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
        let mut doubled = set.to_json();
        doubled["keys"][1]["kid"] = "a".into();
        let e = KeySet::from_json(&doubled).unwrap_err();
        assert!(e.contains("two keys"), "{e}");
        let mut private = set.to_json();
        private["keys"][0]["d"] = "c2VjcmV0".into();
        let e = KeySet::from_json(&private).unwrap_err();
        assert!(e.contains("private") && !e.contains("c2VjcmV0"), "{e}");
        // Also where the key is one Warden would skip (an RSA key's private exponent).
        let mut rsa = set.to_json();
        let private_rsa =
            serde_json::json!({ "kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "c2VjcmV0" });
        rsa["keys"].as_array_mut().unwrap().push(private_rsa);
        let e = KeySet::from_json(&rsa).unwrap_err();
        assert!(e.contains("`d`") && !e.contains("c2VjcmV0"), "{e}");
    }
}
