//! Choosing the policies that can apply to a request before Cedar evaluates them. Cedar
//! evaluates every policy it is handed (about 1.2 µs each here), so a decision hands it only
//! the policies whose scope can match this principal, action and resource.
//!
//! This is sound because Warden's entities have no parents: `principal in X` holds only when
//! the principal is X, so a policy whose scope names another entity can never apply. A scope
//! this code does not narrow on (no constraint, `is Type`) keeps the policy.

use super::cache::Cache;
use cedar_policy::{
    ActionConstraint, EntityUid, Policy, PolicySet, PrincipalConstraint, ResourceConstraint,
};
use std::sync::Arc;

pub struct Selector {
    policies: Vec<Policy>,
    chosen: Cache<(EntityUid, EntityUid, EntityUid), PolicySet>,
}

impl Selector {
    pub fn new(policies: Vec<Policy>) -> Selector {
        Selector {
            policies,
            chosen: Cache::default(),
        }
    }

    /// The policies that can apply to this request, computed once per triple.
    pub fn select(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
    ) -> Arc<PolicySet> {
        let key = (principal.clone(), action.clone(), resource.clone());
        self.chosen.get_or_make(key, || {
            let mut set = PolicySet::new();
            for policy in &self.policies {
                if can_apply(policy, principal, action, resource) {
                    set.add(policy.clone()).expect("policy ids are unique");
                }
            }
            set
        })
    }
}

/// Could `policy`'s scope match? False only when it names a different entity.
fn can_apply(
    policy: &Policy,
    principal: &EntityUid,
    action: &EntityUid,
    resource: &EntityUid,
) -> bool {
    let principal_ok = match policy.principal_constraint() {
        PrincipalConstraint::Eq(uid)
        | PrincipalConstraint::In(uid)
        | PrincipalConstraint::IsIn(_, uid) => &uid == principal,
        PrincipalConstraint::Any | PrincipalConstraint::Is(_) => true,
    };
    let action_ok = match policy.action_constraint() {
        ActionConstraint::Eq(uid) => &uid == action,
        ActionConstraint::In(uids) => uids.contains(action),
        ActionConstraint::Any => true,
    };
    let resource_ok = match policy.resource_constraint() {
        ResourceConstraint::Eq(uid)
        | ResourceConstraint::In(uid)
        | ResourceConstraint::IsIn(_, uid) => &uid == resource,
        ResourceConstraint::Any | ResourceConstraint::Is(_) => true,
    };
    principal_ok && action_ok && resource_ok
}
