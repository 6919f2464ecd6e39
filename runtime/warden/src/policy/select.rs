//! Choosing the policies that can apply to a request before Cedar evaluates them. Cedar
//! evaluates every policy it is handed (about 1.2 µs each here), so a decision hands it only
//! the policies whose scope can match this principal, action and resource.
//!
//! This is sound because Warden's entities have no parents: `principal in X` holds only when
//! the principal is X, so a policy whose scope names another entity can never apply. A scope
//! this code does not narrow on (no constraint, `is Type`) keeps the policy.
//!
//! Building the context costs about as much as evaluating a few policies, so a decision also
//! builds only the context attributes the chosen policies read (`context.x` or `context has
//! x`); a policy that uses `context` as a whole gets all of it.

use super::cache::Cache;
use cedar_policy::{
    ActionConstraint, EntityUid, Policy, PolicySet, PrincipalConstraint, ResourceConstraint,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

/// The policies that can apply to a request, and the context attributes they read.
pub struct Chosen {
    pub set: PolicySet,
    /// None: every attribute.
    pub reads: Option<BTreeSet<String>>,
    /// Some permit among them reads the input (or the whole context): what it allows may
    /// depend on the input.
    pub permit_reads_input: bool,
}

impl Chosen {
    /// Should the context carry `attribute`?
    pub fn reads(&self, attribute: &str) -> bool {
        self.reads.as_ref().is_none_or(|r| r.contains(attribute))
    }
}

pub struct Selector {
    /// Every policy, with the context attributes it reads, found the first time a request
    /// can apply it (finding them converts the policy to JSON: a process that makes one call
    /// does so only for the policies of that call).
    policies: Vec<(Policy, OnceLock<Option<BTreeSet<String>>>)>,
    chosen: Cache<(EntityUid, EntityUid, EntityUid), Chosen>,
}

impl Selector {
    pub fn new(policies: Vec<Policy>) -> Selector {
        Selector {
            policies: policies.into_iter().map(|p| (p, OnceLock::new())).collect(),
            chosen: Cache::default(),
        }
    }

    /// The policies that can apply to this request, computed once per triple.
    pub fn select(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
    ) -> Arc<Chosen> {
        let key = (principal.clone(), action.clone(), resource.clone());
        self.chosen.get_or_make(key, || {
            let mut set = PolicySet::new();
            let mut reads = Some(BTreeSet::new());
            let mut permit_reads_input = false;
            for (policy, its_reads) in &self.policies {
                if can_apply(policy, principal, action, resource) {
                    let its_reads = its_reads.get_or_init(|| context_reads(policy));
                    set.add(policy.clone()).expect("policy ids are unique");
                    permit_reads_input |= policy.effect() == cedar_policy::Effect::Permit
                        && its_reads.as_ref().is_none_or(|r| r.contains("input"));
                    reads = match (reads, its_reads) {
                        (Some(mut all), Some(its)) => {
                            all.extend(its.iter().cloned());
                            Some(all)
                        }
                        _ => None,
                    };
                }
            }
            Chosen {
                set,
                reads,
                permit_reads_input,
            }
        })
    }
}

/// The context attributes `policy` reads; None when it uses `context` as a whole.
fn context_reads(policy: &Policy) -> Option<BTreeSet<String>> {
    let json = policy.to_json().ok()?;
    let mut reads = BTreeSet::new();
    walk(&json, &mut reads).then_some(reads)
}

/// Collects `context.x` and `context has x` into `reads`; false if `context` appears in any
/// other way.
fn walk(value: &Value, reads: &mut BTreeSet<String>) -> bool {
    match value {
        Value::Object(map) => {
            if map.get("Var").and_then(Value::as_str) == Some("context") {
                return false;
            }
            for access in [".", "has"] {
                let Some(inner) = map.get(access) else {
                    continue;
                };
                let on_context = inner
                    .get("left")
                    .and_then(|l| l.get("Var"))
                    .and_then(Value::as_str)
                    == Some("context");
                if let (true, Some(attribute)) =
                    (on_context, inner.get("attr").and_then(Value::as_str))
                {
                    reads.insert(attribute.to_string());
                    return true;
                }
            }
            map.values().all(|v| walk(v, reads))
        }
        Value::Array(items) => items.iter().all(|v| walk(v, reads)),
        _ => true,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(text: &str) -> Option<Vec<String>> {
        let policy = Policy::parse(None, text).unwrap();
        context_reads(&policy).map(|r| r.into_iter().collect())
    }

    #[test]
    fn the_context_a_policy_reads_is_found() {
        assert_eq!(reads("permit(principal, action, resource);"), Some(vec![]));
        assert_eq!(
            reads(
                "forbid(principal, action, resource) when { context has user && context.input.path like \"x\" } unless { context.approved };"
            ),
            Some(vec!["approved".into(), "input".into(), "user".into()])
        );
        assert_eq!(
            reads("permit(principal, action, resource) when { context == {} };"),
            None
        );
        assert_eq!(
            reads("permit(principal, action, resource) when { [context].contains({}) };"),
            None
        );
    }
}
