//! Revocation events for downstream systems: each revocation, pushed to every configured
//! receiver (`[event_receivers.NAME]`) as a Security Event Token (RFC 8417) signed with
//! Warden's signing key (verifiable with `warden jwks`), posted as RFC 8935 says (`Content-Type:
//! application/secevent+jwt`, a 2xx answer acknowledges it), and retried with backoff until
//! it is acknowledged. The events wait in the state store, written with their revocation in
//! one transaction, so a process that stops loses none; each acknowledged one is audited.
//!
//! Event types follow the OpenID Shared Signals Framework: an agent, a delegation or a
//! session revoked ends a session (CAEP `session-revoked`); a tool or a credential revoked is
//! a Warden event. The subject is `{"format": "opaque", "id": "<kind>:<id>"}`, and every
//! event says what was revoked under `warden`.

use crate::credentials::mint::{ISSUER, Minter};
use crate::identity::jwks::KeySet;
use crate::identity::jwt;
use crate::outbound;
use crate::runtime::Runtime;
use crate::state::{Attempt, RevocationEvent, RevocationKind};
use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
pub const TOOL_REVOKED: &str = "urn:warden:secevent:tool-revoked";
pub const CREDENTIAL_REVOKED: &str = "urn:warden:secevent:credential-revoked";
/// The media type of a pushed SET (RFC 8935, section 2).
pub const MEDIA_TYPE: &str = "application/secevent+jwt";

/// How many events one pass delivers at most.
const PER_PASS: usize = 64;
/// How long one post may take, and how long a claimed event is held.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
const HOLD: Duration = Duration::from_secs(60);
/// Waits between attempts: doubling from the first, never longer than the last.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LONGEST_RETRY: Duration = Duration::from_secs(300);

/// A revocation event's claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventClaims {
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub jti: String,
    pub sub_id: SubjectId,
    /// Event type → its payload: exactly one.
    pub events: BTreeMap<String, serde_json::Value>,
}

/// A subject identifier (RFC 9493) in the `opaque` format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectId {
    pub format: String,
    pub id: String,
}

/// The event type that tells of a revocation of `kind`.
pub fn event_type(kind: RevocationKind) -> &'static str {
    match kind {
        RevocationKind::Agent | RevocationKind::Delegation | RevocationKind::Session => {
            SESSION_REVOKED
        }
        RevocationKind::Tool => TOOL_REVOKED,
        RevocationKind::Credential => CREDENTIAL_REVOKED,
    }
}

/// The claims of `event` for a receiver whose audience is `audience`, issued at `now`.
pub fn claims(event: &RevocationEvent, audience: &str, now: i64) -> EventClaims {
    let revoked = &event.revocation;
    let mut payload = serde_json::json!({
        "event_timestamp": revoked.at,
        "initiating_entity": "admin",
        "warden": { "kind": revoked.kind, "id": revoked.id },
    });
    if !revoked.reason.is_empty() {
        payload["reason_admin"] = serde_json::json!({ "en": revoked.reason });
    }
    EventClaims {
        iss: ISSUER.into(),
        aud: audience.into(),
        iat: now,
        jti: event.jti.clone(),
        sub_id: SubjectId {
            format: "opaque".into(),
            id: format!("{}:{}", revoked.kind.as_str(), revoked.id),
        },
        events: BTreeMap::from([(event_type(revoked.kind).to_string(), payload)]),
    }
}

/// What a receiver checks of a pushed event: typed `secevent+jwt`, signed by a key of `keys`
/// (`warden jwks`), issued by Warden for `audience`, carrying exactly one event of a type
/// Warden sends.
pub fn verify(token: &str, keys: &KeySet, audience: &str) -> Result<EventClaims, String> {
    let header = jwt::peek_header(token)?;
    if header.typ.as_deref() != Some("secevent+jwt") {
        return Err("the token is not typed secevent+jwt".into());
    }
    let key = keys
        .key(header.kid.as_deref())
        .ok_or("no key of the set has the token's kid")?;
    let claims: EventClaims = jwt::verify(token, &key)?;
    if claims.iss != ISSUER {
        return Err(format!("the issuer is `{}`, not `{ISSUER}`", claims.iss));
    }
    if claims.aud != audience {
        return Err(format!(
            "the audience is `{}`, not `{audience}`",
            claims.aud
        ));
    }
    let known = [SESSION_REVOKED, TOOL_REVOKED, CREDENTIAL_REVOKED];
    match claims.events.keys().collect::<Vec<_>>()[..] {
        [only] if known.contains(&only.as_str()) => Ok(claims),
        _ => Err("the token does not carry exactly one revocation event".into()),
    }
}

/// The wait before the attempt after `attempts` failed ones.
fn backoff(attempts: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1)))
        .min(LONGEST_RETRY)
}

/// Posts one signed event to `endpoint`; Ok when the receiver acknowledged it (2xx).
pub async fn push(endpoint: &outbound::Endpoint, token: String) -> Result<(), String> {
    match outbound::post(endpoint, MEDIA_TYPE, token.into_bytes(), POST_TIMEOUT).await {
        Ok(status) if status.is_success() => Ok(()),
        Ok(status) => Err(format!("{endpoint} answered {status}")),
        Err(reason) => Err(reason),
    }
}

/// What became of one event in a delivery pass.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub receiver: String,
    pub revoked: String,
    /// None: acknowledged; else why not (it is tried again later).
    pub error: Option<String>,
}

impl Runtime {
    /// Delivers the revocation events that are due: claims them in the state store (so that
    /// nodes delivering at once do not send one twice), signs and posts each, and records the
    /// attempt (an acknowledged event also in the audit). A no-op without receivers.
    pub async fn deliver_revocation_events(&self) -> Result<Vec<Delivery>> {
        let receivers = &self.deployment().event_receivers;
        if receivers.is_empty() {
            return Ok(vec![]);
        }
        let names: Vec<&str> = receivers.keys().map(String::as_str).collect();
        let state = self.state()?.clone();
        let now_ms = jwt::now_ms();
        let events = state
            .claim_events(&names, now_ms, HOLD.as_millis() as i64, PER_PASS)
            .context("claiming revocation events")?;
        if events.is_empty() {
            return Ok(vec![]);
        }
        let minter: std::sync::Arc<Minter> = self.minter().context("loading the signing key")?;
        let mut deliveries = Vec::with_capacity(events.len());
        for event in events {
            // Claimed only for receivers that are configured.
            let Some(receiver) = receivers.get(&event.receiver) else {
                continue;
            };
            let token = minter.sign_event(&claims(&event, receiver.audience(), jwt::now()));
            let pushed = push(&receiver.url, token).await;
            let attempts = event.attempts + 1;
            let attempt = match &pushed {
                Ok(()) => Attempt::Delivered {
                    at_ms: jwt::now_ms(),
                },
                Err(error) => Attempt::Failed {
                    retry_at_ms: jwt::now_ms() + backoff(attempts).as_millis() as i64,
                    error: error.clone(),
                },
            };
            if let Attempt::Delivered { at_ms } = attempt {
                let record = crate::audit::EventRecord {
                    id: format!("event-{}", event.jti),
                    time_ms: at_ms,
                    receiver: event.receiver.clone(),
                    jti: event.jti.clone(),
                    kind: event.revocation.kind,
                    revoked: event.revocation.id.clone(),
                    attempts,
                };
                state
                    .append_audit(&[crate::audit::event_entry(&record)?])
                    .context("recording a delivered revocation event")?;
            }
            state
                .event_attempted(event.seq, &attempt)
                .context("recording a revocation event's attempt")?;
            self.metrics().event_delivery(pushed.is_ok());
            match &pushed {
                Ok(()) => {
                    tracing::info!(receiver = %event.receiver, jti = %event.jti, attempts, "revocation event delivered")
                }
                Err(error) => {
                    tracing::warn!(receiver = %event.receiver, jti = %event.jti, attempts, %error, "revocation event not delivered; it is tried again")
                }
            }
            deliveries.push(Delivery {
                receiver: event.receiver,
                revoked: format!("{} {}", event.revocation.kind.as_str(), event.revocation.id),
                error: pushed.err(),
            });
        }
        Ok(deliveries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Revocation;

    fn event(kind: RevocationKind) -> RevocationEvent {
        RevocationEvent {
            seq: 1,
            receiver: "idp".into(),
            jti: "e1".into(),
            revocation: Revocation {
                kind,
                id: "bot".into(),
                at: 1_700_000_000,
                reason: "leaked".into(),
            },
            attempts: 0,
        }
    }

    #[test]
    fn events_are_signed_typed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let keys = crate::credentials::mint::KeyStore::new(dir.path());
        let minter = keys.current().unwrap();
        let token = minter.sign_event(&claims(&event(RevocationKind::Agent), "https://idp", 5));
        let set = keys.jwks().unwrap();
        let checked = verify(&token, &set, "https://idp").unwrap();
        assert_eq!(checked.sub_id.id, "agent:bot");
        assert_eq!(
            checked.events[SESSION_REVOKED]["reason_admin"]["en"],
            "leaked"
        );
        assert_eq!(checked.events[SESSION_REVOKED]["warden"]["kind"], "agent");
        assert!(verify(&token, &set, "https://other").is_err());
        // The same claims as a plain JWT do not pass for an event.
        let plain = jwt::sign(
            &crate::identity::keys::generate(),
            Some(minter.kid()),
            &claims(&event(RevocationKind::Tool), "https://idp", 5),
        );
        assert!(verify(&plain, &set, "https://idp").is_err());
        let tool = claims(&event(RevocationKind::Tool), "a", 0);
        assert!(tool.events.contains_key(TOOL_REVOKED));
    }

    #[test]
    fn retries_back_off_to_a_bound() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(40), LONGEST_RETRY);
        assert_eq!(backoff(u32::MAX), LONGEST_RETRY);
    }
}
