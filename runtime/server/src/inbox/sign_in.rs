//! Who is signed in to the inbox: challenges handed out and the sessions of approvers who
//! signed one. Both live in the node's memory, bounded, and expire; a token is kept only as
//! its hash. No HTTP here.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::VerifyingKey;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;

/// How long a challenge may be signed, and a sign-in lasts (seconds).
pub const CHALLENGE_LIFETIME: i64 = 120;
pub const SESSION_LIFETIME: i64 = 30 * 60;
/// At most this many of each at once: anyone who reaches the inbox may ask for challenges,
/// and their flood evicts the oldest, never grows the node.
const MAX_CHALLENGES: usize = 4096;
const MAX_SESSIONS: usize = 1024;

/// What an approver signs to sign in: the challenge, bound to the inbox's origin (a
/// signature made for another site's page is worth nothing here).
pub fn message(challenge: &str, origin: &str) -> Vec<u8> {
    format!("warden-inbox-sign-in-v1\n{challenge}\n{origin}").into_bytes()
}

/// A signed-in approver: their name and the key that signed, checked again against the
/// deployment at each request (a reload may remove them).
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub approver: String,
    pub key: VerifyingKey,
    pub expires: i64,
}

#[derive(Default)]
pub struct SignIns {
    challenges: HashMap<String, i64>,
    sessions: HashMap<[u8; 32], Session>,
}

impl SignIns {
    /// A fresh challenge, valid `CHALLENGE_LIFETIME`.
    pub fn challenge(&mut self, now: i64) -> String {
        let challenge = random_token();
        self.challenges.retain(|_, expires| *expires > now);
        if self.challenges.len() >= MAX_CHALLENGES
            && let Some(oldest) = self
                .challenges
                .iter()
                .min_by_key(|(_, expires)| **expires)
                .map(|(c, _)| c.clone())
        {
            self.challenges.remove(&oldest);
        }
        self.challenges
            .insert(challenge.clone(), now + CHALLENGE_LIFETIME);
        challenge
    }

    /// Uses `challenge` up: true once, if it was handed out and has not expired.
    pub fn take_challenge(&mut self, challenge: &str, now: i64) -> bool {
        self.challenges
            .remove(challenge)
            .is_some_and(|expires| expires > now)
    }

    /// Opens a session for `approver` and returns its bearer token.
    pub fn open(&mut self, approver: &str, key: VerifyingKey, now: i64) -> (String, i64) {
        let token = random_token();
        self.sessions.retain(|_, s| s.expires > now);
        if self.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(hash, _)| *hash)
        {
            self.sessions.remove(&oldest);
        }
        let expires = now + SESSION_LIFETIME;
        self.sessions.insert(
            hash(&token),
            Session {
                approver: approver.to_string(),
                key,
                expires,
            },
        );
        (token, expires)
    }

    /// The live session whose token this is.
    pub fn session(&self, token: &str, now: i64) -> Option<Session> {
        self.sessions
            .get(&hash(token))
            .filter(|s| s.expires > now)
            .cloned()
    }
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    B64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> VerifyingKey {
        ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key()
    }

    #[test]
    fn a_challenge_is_used_once_and_expires() {
        let mut s = SignIns::default();
        let c = s.challenge(100);
        assert!(!s.take_challenge("made-up", 100));
        assert!(s.take_challenge(&c, 101));
        assert!(!s.take_challenge(&c, 101), "a challenge is single-use");
        let late = s.challenge(100);
        assert!(!s.take_challenge(&late, 100 + CHALLENGE_LIFETIME));
    }

    #[test]
    fn sessions_expire_and_floods_stay_bounded() {
        let mut s = SignIns::default();
        let (token, expires) = s.open("carol", key(), 100);
        assert_eq!(s.session(&token, 100).unwrap().approver, "carol");
        assert!(s.session(&token, expires).is_none());
        assert!(s.session("guess", 100).is_none());
        for _ in 0..MAX_CHALLENGES + 10 {
            s.challenge(100);
        }
        assert_eq!(s.challenges.len(), MAX_CHALLENGES);
        for _ in 0..MAX_SESSIONS + 10 {
            s.open("carol", key(), 100);
        }
        assert_eq!(s.sessions.len(), MAX_SESSIONS);
    }
}
