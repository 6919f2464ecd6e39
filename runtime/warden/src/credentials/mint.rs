//! Warden's own signing keys and the credentials it mints with them.
//!
//! Keys live in `<state>/keys/` (one PKCS#8 file per key, 0600; `current` names the key in
//! use). `warden keys rotate` makes a new current key; retired keys stay in the JWKS until
//! every token they signed has expired, so upstreams never see a valid token they cannot check.

use super::Granted;
use crate::deployment::MAX_CREDENTIAL_LIFETIME;
use crate::identity::CallContext;
use crate::identity::jwks::KeySet;
use crate::identity::{jwt, keys};
use crate::state::RevocationKind;
use anyhow::{Context as _, Result};
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The `iss` of every minted credential.
pub const ISSUER: &str = "warden";

/// The key that signs credentials, with its key id.
pub struct Minter {
    kid: String,
    key: SigningKey,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("kid", &self.kid)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
}

/// The claims of a minted token. Besides who it is for, it names everything a revocation can
/// reach it by — its credential, and the call's delegation, session and tool — so that
/// introspection can answer for every kind of revocation. None of these is a secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MintedClaims {
    pub iss: String,
    /// The user, or the agent when the call is on nobody's behalf.
    pub sub: String,
    /// The agent.
    pub act: Actor,
    pub aud: String,
    pub scope: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    /// The Warden call this token was minted for.
    pub call_id: String,
    /// The credential's name in the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// The tool's component digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_digest: Option<String>,
    /// The id of the delegation the call acts under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<String>,
    /// The session the call belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The publisher that signed the tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
}

impl MintedClaims {
    /// Everything a revocation can name this token by.
    pub fn revocable(&self) -> Vec<(RevocationKind, &str)> {
        [
            Some((RevocationKind::Credential, self.jti.as_str())),
            Some((RevocationKind::Agent, self.act.sub.as_str())),
            self.credential
                .as_deref()
                .map(|c| (RevocationKind::Credential, c)),
            self.tool_digest
                .as_deref()
                .map(|t| (RevocationKind::Tool, t)),
            self.delegation
                .as_deref()
                .map(|d| (RevocationKind::Delegation, d)),
            self.session
                .as_deref()
                .map(|s| (RevocationKind::Session, s)),
            self.publisher
                .as_deref()
                .map(|p| (RevocationKind::Publisher, p)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// What is recorded of a minted token (never the token).
#[derive(Debug, Clone, Serialize)]
pub struct Minted {
    pub jti: String,
    pub expires: i64,
}

impl Minter {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `claims` signed as a Security Event Token.
    pub fn sign_event(&self, claims: &impl Serialize) -> String {
        self.sign_typed("secevent+jwt", claims)
    }

    /// `claims` signed with this key, the header typed `typ` (a kind of token no other kind
    /// passes for: `secevent+jwt`, `at+jwt`).
    pub fn sign_typed(&self, typ: &str, claims: &impl Serialize) -> String {
        jwt::sign_typed(&self.key, Some(&self.kid), typ, claims)
    }

    /// The key that verifies what this key signs.
    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }

    /// A token of `credential` for `call`; `ids` are the revocable ids the call runs under.
    pub fn mint(
        &self,
        credential: &Granted,
        call: &CallContext,
        ids: &[(RevocationKind, String)],
    ) -> (super::Secret, Minted) {
        let iat = jwt::now();
        let exp = iat + credential.lifetime.as_secs() as i64;
        let jti = uuid::Uuid::new_v4().to_string();
        let id = |kind: RevocationKind| {
            ids.iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, id)| id.clone())
        };
        let claims = MintedClaims {
            iss: ISSUER.to_string(),
            sub: call.user.clone().unwrap_or_else(|| call.agent.clone()),
            act: Actor {
                sub: call.agent.clone(),
            },
            aud: credential.audience.clone(),
            scope: credential.scope.clone(),
            jti: jti.clone(),
            iat,
            exp,
            call_id: call.call_id.clone(),
            credential: Some(credential.name.clone()),
            tool_digest: id(RevocationKind::Tool),
            delegation: id(RevocationKind::Delegation),
            session: id(RevocationKind::Session),
            publisher: id(RevocationKind::Publisher),
        };
        let token = jwt::sign(&self.key, Some(&self.kid), &claims);
        (super::Secret::new(token), Minted { jti, expires: exp })
    }
}

/// The key directory of a state directory.
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    pub fn new(state_dir: &Path) -> KeyStore {
        KeyStore {
            dir: state_dir.join("keys"),
        }
    }

    /// The current signing key, made on first use.
    pub fn current(&self) -> Result<Minter> {
        match std::fs::read_to_string(self.dir.join("current")) {
            Ok(kid) => self.load(kid.trim()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let kid = self.create()?;
                self.load(&kid)
            }
            Err(e) => {
                Err(e).with_context(|| format!("reading {}", self.dir.join("current").display()))
            }
        }
    }

    fn load(&self, kid: &str) -> Result<Minter> {
        let key = keys::read_private(&self.dir.join(format!("{kid}.key")))?;
        Ok(Minter {
            kid: kid.to_string(),
            key,
        })
    }

    /// A new key, made current; the previous one is retired (kept in the JWKS for a while).
    pub fn rotate(&self) -> Result<String> {
        let previous = std::fs::read_to_string(self.dir.join("current")).ok();
        let kid = self.create()?;
        if let Some(previous) = previous {
            std::fs::write(
                self.dir.join(format!("{}.retired", previous.trim())),
                jwt::now().to_string(),
            )?;
        }
        self.prune()?;
        Ok(kid)
    }

    fn create(&self) -> Result<String> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let key = keys::generate();
        let kid = key_id(&key.verifying_key());
        keys::write_private(&self.dir.join(format!("{kid}.key")), &key)?;
        crate::files::write_atomically(&self.dir.join("current"), kid.as_bytes())?;
        Ok(kid)
    }

    /// Keys whose tokens may still be valid: the current ones and recently retired ones.
    fn live_keys(&self) -> Result<Vec<(String, ed25519_dalek::VerifyingKey)>> {
        let mut live = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(live);
        };
        let horizon = jwt::now() - MAX_CREDENTIAL_LIFETIME.as_secs() as i64 - 60;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(kid) = name.strip_suffix(".key") else {
                continue;
            };
            let retired: Option<i64> =
                std::fs::read_to_string(self.dir.join(format!("{kid}.retired")))
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
            if retired.is_some_and(|at| at < horizon) {
                continue;
            }
            live.push((kid.to_string(), self.load(kid)?.key.verifying_key()));
        }
        live.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(live)
    }

    fn prune(&self) -> Result<()> {
        let live: Vec<String> = self.live_keys()?.into_iter().map(|(kid, _)| kid).collect();
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let kid = name.split('.').next().unwrap_or("");
            if (name.ends_with(".key") || name.ends_with(".retired"))
                && !live.iter().any(|k| k == kid)
            {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// The public keys upstreams verify minted tokens with (RFC 7517, OKP/Ed25519).
    pub fn jwks(&self) -> Result<KeySet> {
        self.current()?;
        let keys = self
            .live_keys()?
            .into_iter()
            .map(|(kid, key)| (Some(kid), key))
            .collect();
        Ok(KeySet::new(keys))
    }
}

fn key_id(key: &ed25519_dalek::VerifyingKey) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(key.as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_old_key_in_the_jwks() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        let first = store.current().unwrap().kid().to_string();
        assert_eq!(store.current().unwrap().kid(), first);
        let second = store.rotate().unwrap();
        assert_ne!(first, second);
        assert_eq!(store.current().unwrap().kid(), second);
        let jwks = store.jwks().unwrap().to_json();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert!(
            kids.contains(&first.as_str()) && kids.contains(&second.as_str()),
            "{kids:?}"
        );
    }
}
