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

/// The exact call an approval is for.
pub struct CallIdentity<'a> {
    pub agent: &'a str,
    pub user: Option<&'a str>,
    pub tool: &'a str,
    pub tool_digest: &'a str,
    pub input_digest: &'a str,
}

impl CallIdentity<'_> {
    /// Changes whenever any part of the call does (parts are length-prefixed, so no two
    /// calls share one).
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"warden-approval-call-v1");
        for part in [
            self.agent,
            self.user.unwrap_or(""),
            if self.user.is_some() {
                "user"
            } else {
                "nobody"
            },
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

/// What an approver signs.
fn message(approval: &Approval) -> Vec<u8> {
    format!(
        "warden-approval-v1\n{}\n{}\n{}",
        approval.id, approval.digest, approval.expires
    )
    .into_bytes()
}

/// The approver's signature over `approval` (base64url).
pub fn sign(key: &SigningKey, approval: &Approval) -> String {
    B64.encode(key.sign(&message(approval)).to_bytes())
}

/// The registered approver whose key this is.
pub fn approver_of<'d>(deployment: &'d Deployment, key: &SigningKey) -> Result<&'d str, String> {
    let public = key.verifying_key();
    if let Some((name, _)) = deployment
        .approvers
        .iter()
        .find(|(_, a)| keys::parse_public(&a.public_key).ok() == Some(public))
    {
        return Ok(name);
    }
    Err(
        match crate::deployment::agent_with_key(&deployment.agents, &public) {
            Some(agent) => format!("this is agent `{agent}`'s key; an agent cannot approve"),
            None => format!(
                "this key belongs to no approver in {}",
                deployment.file.display()
            ),
        },
    )
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
        .and_then(|s| B64.decode(s).ok())
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or_else(|| format!("approval {id} carries no readable signature"))?;
    registered
        .verify_strict(&message(approval), &signature)
        .map_err(|_| format!("approval {id}: the signature of `{approver}` does not verify"))?;
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
