//! Revocation: an agent, delegation, tool digest, credential or session revoked in the state
//! store stops at the next call and at the next egress request of calls already running, in
//! every process that shares the store. A revoked tool digest also leaves the warm and the
//! on-disk caches. `introspect` tells an upstream whether a minted token is still active.

pub use crate::credentials::mint::MintedClaims;
use crate::credentials::mint::{ISSUER, KeyStore};
use crate::identity::jwt;
use crate::runtime::Runtime;
use crate::state::{Revocation, RevocationKind, StateStore};
use anyhow::{Context as _, Result};
use serde::Serialize;
use std::sync::Arc;

/// The revocable ids one call runs under: its agent, delegation, session and tool digest.
pub struct CallIds {
    pub store: Arc<dyn StateStore>,
    pub ids: Vec<(RevocationKind, String)>,
}

/// Why a call or request may not go on.
pub struct Refused {
    /// What was revoked (None: the store could not be read).
    pub kind: Option<RevocationKind>,
    pub reason: String,
}

impl CallIds {
    /// Refused if any of the call's ids, or of `more`, is revoked. A store that cannot be
    /// read refuses: revocation fails closed.
    pub fn check(&self, more: &[(RevocationKind, &str)]) -> Result<(), Refused> {
        refused(self.store.revoked(&self.with(more)))
    }

    /// `check` for a caller in a task: it waits for the store without holding its thread.
    pub async fn check_in_task(&self) -> Result<(), Refused> {
        refused(self.store.revoked_in_task(&self.with(&[])).await)
    }

    fn with<'a>(&'a self, more: &[(RevocationKind, &'a str)]) -> Vec<(RevocationKind, &'a str)> {
        self.ids
            .iter()
            .map(|(kind, id)| (*kind, id.as_str()))
            .chain(more.iter().copied())
            .collect()
    }
}

/// What a revocation check found, as a refusal.
fn refused(found: anyhow::Result<Option<Revocation>>) -> Result<(), Refused> {
    match found {
        Ok(None) => Ok(()),
        Ok(Some(revoked)) => Err(Refused {
            kind: Some(revoked.kind),
            reason: revoked.to_string(),
        }),
        Err(e) => Err(Refused {
            kind: None,
            reason: format!("checking revocations: {e:#}"),
        }),
    }
}

impl Runtime {
    /// Revokes `id` of `kind` for every process sharing the state store. A tool is revoked
    /// by digest, or by name (the digest its manifest pins now). Returns what was revoked and
    /// whether it was new.
    pub fn revoke(
        &self,
        kind: RevocationKind,
        id: &str,
        reason: &str,
    ) -> Result<(Revocation, bool)> {
        let id = match kind {
            RevocationKind::Tool if !id.starts_with("sha256:") => match self.find(id)? {
                crate::runtime::Found::Warm(tool) => tool.digest.to_string(),
                crate::runtime::Found::OnDisk(files) => files.digest.to_string(),
            },
            RevocationKind::Tool => id
                .parse::<crate::manifest::Digest>()
                .map_err(InvalidRevocationId)?
                .to_string(),
            // A publisher is revoked by its key (its name here resolved to it), so that no
            // renaming in a warden.toml, on this node or another, undoes the revocation.
            RevocationKind::Publisher => {
                let key = match self.deployment().publishers.get(id) {
                    Some(publisher) => publisher.public_key.clone(),
                    None if id.starts_with(crate::identity::keys::PUBLIC_KEY_PREFIX) => {
                        id.to_string()
                    }
                    None => {
                        return Err(InvalidRevocationId(format!(
                            "no publisher `{id}` in [publishers], and not a key (ed25519:…)"
                        ))
                        .into());
                    }
                };
                crate::identity::keys::parse_public(&key)
                    .map(|key| crate::identity::keys::format_public(&key))
                    .map_err(InvalidRevocationId)?
            }
            _ => id.to_string(),
        };
        let revocation = Revocation {
            kind,
            id,
            at: jwt::now(),
            reason: reason.to_string(),
        };
        // Each downstream receiver is owed an event from the moment the revocation exists.
        let deployment = self.deployment();
        let receivers: Vec<&str> = deployment
            .event_receivers
            .keys()
            .map(String::as_str)
            .collect();
        let new = self.state()?.revoke(&revocation, &receivers)?;
        if kind == RevocationKind::Tool {
            self.evict(&revocation.id);
        }
        tracing::info!(kind = kind.as_str(), id = %revocation.id, "revoked");
        Ok((revocation, new))
    }

    /// Whether a token Warden minted is active: signed by one of its keys, not expired, and
    /// nothing it names revoked — its `jti`, its credential, the agent, the delegation, the
    /// session or the tool it was minted for (RFC 7662's answer).
    pub fn introspect(&self, token: &str) -> Result<Introspection> {
        let keys = KeyStore::new(&self.deployment().state_dir).jwks()?;
        let inactive = Introspection::default();
        let Some(key) = jwt::peek_header(token)
            .ok()
            .and_then(|h| keys.key(h.kid.as_deref()))
        else {
            return Ok(inactive);
        };
        let Ok(claims) = jwt::verify::<MintedClaims>(token, &key) else {
            return Ok(inactive);
        };
        if claims.iss != ISSUER || claims.exp <= jwt::now() {
            return Ok(inactive);
        }
        let revoked = self
            .state()?
            .revoked(&claims.revocable())
            .context("checking revocations")?;
        // An inactive token's claims are not disclosed (RFC 7662, section 2.2).
        Ok(match revoked {
            Some(_) => inactive,
            None => Introspection {
                active: true,
                claims: Some(claims),
            },
        })
    }
}

/// What to revoke named by something that names nothing of its kind: a tool by something that
/// is not a digest (`sha256:` and 64 hex digits), a publisher neither listed nor a key.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRevocationId(String);

#[derive(Debug, Clone, Default, Serialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub claims: Option<MintedClaims>,
}
