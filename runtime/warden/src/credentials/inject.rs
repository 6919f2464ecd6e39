//! Credential injection: the host adds a granted credential to a request its rule and the
//! policies allowed, minting a short-lived token for the call or adding a static key, and
//! puts its secret in the call's set before it leaves, so that every response is scrubbed of
//! it. The tool never holds it.

use super::mint::{Minted, Minter};
use super::scrub::{MAX_SECRETS, SecretSet};
use super::{Granted, Secret};
use crate::deployment::CredentialKind;
use crate::identity::{CallContext, jwt};
use crate::sandbox::egress::Target;
use crate::state::RevocationKind;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// A credential added to one request, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialUse {
    pub name: String,
    pub kind: CredentialKind,
    pub audience: String,
    /// Minted: the token's id and expiry.
    pub jti: Option<String>,
    pub expires: Option<i64>,
    /// A static key is a long-lived secret: every use is flagged.
    #[serde(default)]
    pub long_lived: bool,
}

/// Everything needed to add credentials to one call's requests, and to keep them from its
/// tool.
#[derive(Clone)]
pub struct Credentials {
    pub granted: Arc<HashMap<String, Arc<Granted>>>,
    /// Present when the tool may carry minted credentials.
    pub minter: Option<Arc<Minter>>,
    pub call: CallContext,
    /// Every secret the call holds: its static keys from the start, each token as it is
    /// minted. Every response of the call is scrubbed of all of them.
    pub secrets: SecretSet,
    /// The token minted for each credential so far: the call's next requests carry it again
    /// while more than half its lifetime is left (the set grows by tokens, not requests).
    minted: Arc<Mutex<HashMap<String, (Secret, Minted)>>>,
}

impl Credentials {
    /// `secrets`: the call's own set, holding the granted static keys already.
    pub fn new(
        granted: Arc<HashMap<String, Arc<Granted>>>,
        secrets: SecretSet,
        minter: Option<Arc<Minter>>,
        call: CallContext,
    ) -> Credentials {
        Credentials {
            granted,
            minter,
            call,
            secrets,
            minted: Arc::default(),
        }
    }

    /// Adds the credential `name` to a request for `target` (its `headers`), minting one
    /// for this call if it is minted, and adds its secret to the call's set first. `ids`:
    /// the call's revocable ids, which a minted token names. Err: why it is not added.
    pub fn inject(
        &self,
        headers: &mut http::HeaderMap,
        name: &str,
        target: &Target,
        ids: &[(RevocationKind, String)],
    ) -> Result<CredentialUse, String> {
        let credentials = self;
        let granted = credentials
            .granted
            .get(name)
            .ok_or_else(|| format!("credential `{name}` is not granted to this tool"))?;
        // The rule and the grant agree on the origin; check the request once more anyway.
        if target.origin() != granted.origin {
            return Err(format!(
                "credential `{name}` may only be sent to {}",
                granted.audience
            ));
        }
        let (secret, minted) = match granted.kind {
            CredentialKind::Minted => {
                let minter = credentials
                    .minter
                    .as_ref()
                    .ok_or("no signing key is loaded")?;
                let mut tokens = credentials
                    .minted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let fresh = |m: &Minted| {
                    m.expires.saturating_sub(jwt::now())
                        > (granted.lifetime.as_secs() / 2)
                            .try_into()
                            .unwrap_or(i64::MAX)
                };
                let (token, minted) = match tokens.get(name).filter(|(_, m)| fresh(m)) {
                    Some(kept) => kept.clone(),
                    None => minter.mint(granted, &credentials.call, ids),
                };
                tokens.insert(name.to_string(), (token.clone(), minted.clone()));
                (token, Some(minted))
            }
            CredentialKind::Static => (
                granted
                    .secret
                    .clone()
                    .ok_or("static credential without a secret")?,
                None,
            ),
        };
        // Before it leaves: a response can only echo a secret already in the set.
        if !credentials.secrets.add(&secret) {
            return Err(format!(
                "the call holds {MAX_SECRETS} secrets already: credential `{name}` is not added"
            ));
        }
        let mut value =
            http::HeaderValue::from_str(&format!("{}{}", granted.prefix, secret.expose()))
                .map_err(|_| format!("credential `{name}` is not a valid header value"))?;
        value.set_sensitive(true);
        headers.insert(granted.header.clone(), value);
        tracing::info!(credential = name, kind = ?granted.kind, jti = ?minted.as_ref().map(|m| &m.jti), "credential added");
        let used = CredentialUse {
            name: name.to_string(),
            kind: granted.kind,
            audience: granted.audience.clone(),
            jti: minted.as_ref().map(|m| m.jti.clone()),
            expires: minted.map(|m| m.expires),
            long_lived: granted.kind == CredentialKind::Static,
        };
        Ok(used)
    }
}
