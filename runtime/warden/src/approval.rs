//! Out-of-band approvals. When policies hold a call for approval, Warden stores a pending
//! approval bound to a digest of the exact call (agent, user, tool, tool digest, input
//! digest). A registered approver signs (id, digest, expiry) with their own key, on another
//! channel (`warden approve`); the caller repeats the call with the approval's id, and Warden
//! checks everything again before using it once. Nothing an agent can reach grants one.

use crate::deployment::Deployment;
use crate::identity::keys;
use crate::state::{Approval, ApprovalStatus};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey};
use sha2::{Digest as _, Sha256};

/// How many approvals one agent may have waiting for a person at once: requests beyond it are
/// refused, not stored.
pub const MAX_PENDING_PER_AGENT: u64 = 20;

/// The exact call an approval is for: who, for whom (under which delegation), in which
/// session, which tool and version, which input. An approval given for a call in one session
/// is for that session only: what the approver was shown of it (its taint) holds.
pub struct CallIdentity<'a> {
    pub agent: &'a str,
    pub user: Option<&'a str>,
    pub delegation: Option<&'a str>,
    pub session: Option<&'a str>,
    pub tool: &'a str,
    pub tool_digest: &'a str,
    pub input_digest: &'a str,
}

impl CallIdentity<'_> {
    /// Changes whenever any part of the call does (parts are length-prefixed, and absent
    /// ones marked, so no two calls share one).
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"warden-approval-call-v2");
        for part in [
            self.agent,
            self.user.unwrap_or(""),
            presence(self.user),
            self.delegation.unwrap_or(""),
            presence(self.delegation),
            self.session.unwrap_or(""),
            presence(self.session),
            self.tool,
            self.tool_digest,
            self.input_digest,
        ] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
}

/// The link to approval `id` in the approval inbox at `origin`.
pub fn inbox_link(origin: &str, id: &str) -> String {
    format!("{origin}/#approval={id}")
}

/// Marks whether an optional part of a call is there (its text alone cannot: "" is a value).
fn presence(part: Option<&str>) -> &'static str {
    match part {
        Some(_) => "present",
        None => "absent",
    }
}

/// What an approver signs to approve: the same from `warden approve` and from the inbox.
pub fn message(approval: &Approval) -> Vec<u8> {
    format!(
        "warden-approval-v1\n{}\n{}\n{}",
        approval.id, approval.digest, approval.expires
    )
    .into_bytes()
}

/// What an approver signs to deny in the inbox (never valid as an approval).
pub fn deny_message(approval: &Approval) -> Vec<u8> {
    format!(
        "warden-approval-deny-v1\n{}\n{}\n{}",
        approval.id, approval.digest, approval.expires
    )
    .into_bytes()
}

/// Whether `approval` as stored is the call it claims to be: its input hashes to its input
/// digest, and its parts to its call digest. One altered in the store (the input a person
/// reads not being the one that would run) is not, and cannot be approved.
pub fn verifiable(approval: &Approval) -> Result<(), String> {
    if crate::identity::assertion::input_digest(&approval.input) != approval.input_digest {
        return Err("its stored input does not match the input of the held call".into());
    }
    let identity = CallIdentity {
        agent: &approval.agent,
        user: approval.user.as_deref(),
        delegation: approval.delegation.as_deref(),
        session: approval.session.as_deref(),
        tool: &approval.tool,
        tool_digest: &approval.tool_digest,
        input_digest: &approval.input_digest,
    };
    if identity.digest() != approval.digest {
        return Err(
            "its stored agent, user, delegation, session or tool does not match the held call"
                .into(),
        );
    }
    Ok(())
}

/// The approver's signature over `approval` (base64url).
pub fn sign(key: &SigningKey, approval: &Approval) -> String {
    B64.encode(key.sign(&message(approval)).to_bytes())
}

/// Checks an Ed25519 `signature` (base64url) over `message` by `key`.
pub fn verify_signature(
    key: &ed25519_dalek::VerifyingKey,
    message: &[u8],
    signature: &str,
) -> Result<(), String> {
    let signature = B64
        .decode(signature)
        .ok()
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or("the signature is not 64 bytes of base64url")?;
    key.verify_strict(message, &signature)
        .map_err(|_| "the signature does not verify".to_string())
}

/// Why a key approves nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotAnApprover {
    #[error("this is agent `{0}`'s key; an agent cannot approve")]
    Agent(String),
    #[error("this key belongs to no approver")]
    Unknown,
}

/// The registered approver whose key this is.
pub fn approver_of<'d>(
    deployment: &'d Deployment,
    public: &ed25519_dalek::VerifyingKey,
) -> Result<&'d str, NotAnApprover> {
    if let Some((name, _)) = deployment
        .approvers
        .iter()
        .find(|(_, a)| keys::parse_public(&a.public_key).ok().as_ref() == Some(public))
    {
        return Ok(name);
    }
    match crate::deployment::agent_with_key(&deployment.agents, public) {
        Some(agent) => Err(NotAnApprover::Agent(agent.to_string())),
        None => Err(NotAnApprover::Unknown),
    }
}

/// Checks that `approval` lets the call whose digest is `digest` run now: approved, signed
/// by an approver registered now, for this exact call, not expired, not used. Does not use
/// it (`StateStore::use_approval` does, atomically, once the call is on record).
pub fn check(
    approval: &Approval,
    deployment: &Deployment,
    digest: &str,
    now: i64,
) -> Result<(), String> {
    let id = &approval.id;
    match approval.status {
        ApprovalStatus::Approved => {}
        ApprovalStatus::Pending => return Err(format!("approval {id} has not been approved yet")),
        ApprovalStatus::Denied => return Err(format!("approval {id} was denied")),
        ApprovalStatus::Used => return Err(format!("approval {id} has already been used")),
    }
    let approver = approval.approver.as_deref().unwrap_or("");
    let registered = deployment
        .approvers
        .get(approver)
        .and_then(|a| keys::parse_public(&a.public_key).ok())
        .ok_or_else(|| {
            format!("approval {id} was signed by `{approver}`, who is not an approver")
        })?;
    let signature = approval
        .signature
        .as_deref()
        .ok_or_else(|| format!("approval {id} carries no signature"))?;
    verify_signature(&registered, &message(approval), signature)
        .map_err(|e| format!("approval {id}: `{approver}`'s signature: {e}"))?;
    if approval.digest != digest {
        return Err(format!(
            "approval {id} is for another call (agent, user, tool, tool version or input differ)"
        ));
    }
    if approval.expires <= now {
        return Err(format!("approval {id} has expired"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> Approval {
        let input = serde_json::json!({ "name": "a" });
        let input_digest = crate::identity::assertion::input_digest(&input);
        let identity = CallIdentity {
            agent: "bot",
            user: Some("alice"),
            delegation: Some("d1"),
            session: Some("s1"),
            tool: "delete-note",
            tool_digest: "sha256:t",
            input_digest: &input_digest,
        };
        Approval {
            id: "a1".into(),
            digest: identity.digest(),
            agent: "bot".into(),
            user: Some("alice".into()),
            tool: "delete-note".into(),
            tool_digest: "sha256:t".into(),
            input_digest: input_digest.clone(),
            input,
            reason: "r".into(),
            created: 0,
            expires: 60,
            status: ApprovalStatus::Pending,
            approver: None,
            signature: None,
            used_by: None,
            session: Some("s1".into()),
            delegation: Some("d1".into()),
        }
    }

    #[test]
    fn an_approval_altered_in_any_part_is_not_verifiable() {
        assert_eq!(verifiable(&held()), Ok(()));
        let changes: [fn(&mut Approval); 7] = [
            |a| a.input = serde_json::json!({ "name": "b" }),
            |a| a.agent = "other".into(),
            |a| a.user = None,
            |a| a.delegation = Some("d2".into()),
            |a| a.session = None,
            |a| a.tool = "write-note".into(),
            |a| a.tool_digest = "sha256:u".into(),
        ];
        for change in changes {
            let mut altered = held();
            change(&mut altered);
            assert!(verifiable(&altered).is_err(), "{altered:?}");
        }
    }

    #[test]
    fn a_deny_signature_is_no_approval() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let a = held();
        let denied = B64.encode(key.sign(&deny_message(&a)).to_bytes());
        assert!(verify_signature(&key.verifying_key(), &deny_message(&a), &denied).is_ok());
        assert!(verify_signature(&key.verifying_key(), &message(&a), &denied).is_err());
        assert!(verify_signature(&key.verifying_key(), &message(&a), "not base64!").is_err());
    }
}
