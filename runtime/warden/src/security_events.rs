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

use crate::credentials::mint::ISSUER;
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
pub const PUBLISHER_REVOKED: &str = "urn:warden:secevent:publisher-revoked";
/// The media type of a pushed SET (RFC 8935, section 2).
pub const MEDIA_TYPE: &str = "application/secevent+jwt";

/// How many events of one receiver one pass delivers at most, one after another, each post
/// taking at most `POST_TIMEOUT`: the claim's `HOLD` outlasts the pass, so no other process
/// takes an event while this one is still posting it.
const PER_PASS: usize = 16;
const POST_TIMEOUT: Duration = Duration::from_secs(5);
const HOLD: Duration = Duration::from_secs(120);
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
        RevocationKind::Publisher => PUBLISHER_REVOKED,
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
    // RFC 7515: a `typ` may be written with or without its `application/` prefix.
    let typ = header.typ.as_deref().unwrap_or_default();
    if !typ.eq_ignore_ascii_case("secevent+jwt")
        && !typ.eq_ignore_ascii_case("application/secevent+jwt")
    {
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
    let known = [
        SESSION_REVOKED,
        TOOL_REVOKED,
        CREDENTIAL_REVOKED,
        PUBLISHER_REVOKED,
    ];
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
    /// Delivers the revocation events that are due, each receiver's apart (a slow one does
    /// not hold the others up): claims them in the state store (so that processes delivering
    /// at once do not send one twice), signs and posts each, and records the attempt (an
    /// acknowledged event also in the audit). A no-op without receivers.
    pub async fn deliver_revocation_events(&self) -> Result<Vec<Delivery>> {
        let deployment = self.deployment();
        let passes = deployment
            .event_receivers
            .keys()
            .map(|name| self.deliver_revocation_events_to(name));
        let mut deliveries = vec![];
        for pass in futures_util::future::join_all(passes).await {
            deliveries.extend(pass?);
        }
        Ok(deliveries)
    }

    /// The same, for the receiver `name` alone (none if the deployment has no such receiver).
    pub async fn deliver_revocation_events_to(&self, name: &str) -> Result<Vec<Delivery>> {
        let deployment = self.deployment();
        let Some(receiver) = deployment.event_receivers.get(name) else {
            return Ok(vec![]);
        };
        let state = self.state()?.clone();
        let events = state
            .claim_events(&[name], jwt::now_ms(), HOLD.as_millis() as i64, PER_PASS)
            .context("claiming revocation events")?;
        let mut deliveries = Vec::with_capacity(events.len());
        for event in events {
            deliveries.push(self.deliver(state.as_ref(), receiver, event).await);
        }
        Ok(deliveries)
    }

    /// One attempt at one claimed event: signed now, posted, recorded. A failure to record
    /// is logged, not returned: the event is then tried again once its claim runs out, and
    /// the receiver recognises the repeat by its `jti`.
    async fn deliver(
        &self,
        state: &dyn crate::state::StateStore,
        receiver: &crate::deployment::EventReceiver,
        event: RevocationEvent,
    ) -> Delivery {
        let attempts = event.attempts + 1;
        let pushed = match self.minter() {
            Ok(minter) => {
                let token = minter.sign_event(&claims(&event, &receiver.audience, jwt::now()));
                push(&receiver.url, token).await
            }
            Err(e) => Err(format!("loading the signing key: {e:#}")),
        };
        let attempt = match &pushed {
            Ok(()) => Attempt::Delivered {
                at_ms: jwt::now_ms(),
            },
            Err(error) => Attempt::Failed {
                retry_at_ms: jwt::now_ms() + backoff(attempts).as_millis() as i64,
                error: error.clone(),
            },
        };
        if let Err(e) = self.record_attempt(state, &event, &attempt, attempts) {
            tracing::error!(receiver = %event.receiver, jti = %event.jti, error = %format!("{e:#}"), "recording a revocation event's attempt failed");
        }
        self.metrics().event_delivery(pushed.is_ok());
        match &pushed {
            Ok(()) => {
                tracing::info!(receiver = %event.receiver, jti = %event.jti, attempts, "revocation event delivered")
            }
            Err(error) => {
                tracing::warn!(receiver = %event.receiver, jti = %event.jti, attempts, %error, "revocation event not delivered; it is tried again")
            }
        }
        Delivery {
            revoked: format!("{} {}", event.revocation.kind.as_str(), event.revocation.id),
            receiver: event.receiver,
            error: pushed.err(),
        }
    }

    /// Keeps what became of an attempt; an acknowledged event is audited first, so that no
    /// event is marked delivered without its record.
    fn record_attempt(
        &self,
        state: &dyn crate::state::StateStore,
        event: &RevocationEvent,
        attempt: &Attempt,
        attempts: u32,
    ) -> Result<()> {
        if let Attempt::Delivered { at_ms } = attempt {
            let record = crate::audit::EventRecord {
                id: format!("event-{}", event.jti),
                time_ms: *at_ms,
                receiver: event.receiver.clone(),
                jti: event.jti.clone(),
                kind: event.revocation.kind,
                revoked: event.revocation.id.clone(),
                attempts,
            };
            state
                .append_audit(&[crate::audit::entry(
                    &crate::audit::Record::RevocationEvent(record),
                )?])
                .context("recording a delivered revocation event")?;
        }
        if !state.event_attempted(event, attempt)? {
            tracing::warn!(receiver = %event.receiver, jti = %event.jti, "a revocation event's claim ran out before its attempt was recorded");
        }
        Ok(())
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
            held_until: 0,
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
