//! The call's mediator: what the sandbox asks about each request its tool sends. Revocations
//! first (anything the call runs under, or the credential the request would carry), then the
//! policies, with the facts the call was decided with.

use crate::policy::{CallFacts, Decision, Policies};
use crate::revocation::{CallIds, Refused};
use crate::sandbox::egress::Target;
use crate::sandbox::http::EgressGate;
use crate::state::RevocationKind;
use std::sync::Arc;

pub struct Mediator {
    pub revocations: CallIds,
    pub policies: Arc<Policies>,
    pub call: CallFacts,
}

impl EgressGate for Mediator {
    fn decide(&self, target: &Target, credentials: &[String]) -> Decision {
        let more: Vec<(RevocationKind, &str)> = credentials
            .iter()
            .map(|c| (RevocationKind::Credential, c.as_str()))
            .collect();
        match self.revocations.check(&more) {
            Ok(()) => {}
            // Fails closed; the store's error is logged, not shown to the tool.
            Err(Refused { kind: None, reason }) => {
                tracing::error!(url = %target.display(), %reason, "egress refused: revocations could not be checked");
                return Decision::deny(
                    "revocations could not be checked (Warden's state store failed)".into(),
                );
            }
            Err(Refused { reason, .. }) => {
                tracing::info!(url = %target.display(), %reason, "egress stopped by a revocation");
                return Decision::deny(reason);
            }
        }
        let decision = self.policies.decide_egress(&self.call, target);
        tracing::debug!(url = %target.display(), outcome = ?decision.outcome, policies = ?decision.policies, "egress decision");
        decision
    }

    fn call_ids(&self) -> &[(RevocationKind, String)] {
        &self.revocations.ids
    }
}
