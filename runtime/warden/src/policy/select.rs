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
//! x`); a policy that uses `context` as a whole gets all of it. What they read is known to the
//! field (`context.session.tainted`), so a call also knows whether its decision can depend on
//! a count (`Chosen::reads_counts`).

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
    /// The top-level context attributes they read; None: every one.
    attributes: Option<BTreeSet<String>>,
    /// Some permit among them reads the input (or the whole context): what it allows may
    /// depend on the input.
    pub permit_reads_input: bool,
    /// Their decision can depend on how many calls were made before (`calls_last_minute`,
    /// `session.calls`, or a record holding one, read whole).
    reads_counts: bool,
}

impl Chosen {
    /// `set`, which reads the context paths `reads` (`session`, `session.tainted`; None: the
    /// whole context).
    pub fn new(
        set: PolicySet,
        reads: Option<BTreeSet<String>>,
        permit_reads_input: bool,
    ) -> Chosen {
        Chosen {
            set,
            reads_counts: reads_a_count(&reads),
            attributes: reads.map(|r| r.iter().map(|p| top_level(p).to_string()).collect()),
            permit_reads_input,
        }
    }

    /// Should the context carry `attribute`?
    pub fn reads(&self, attribute: &str) -> bool {
        self.attributes
            .as_ref()
            .is_none_or(|a| a.contains(attribute))
    }

    pub fn reads_counts(&self) -> bool {
        self.reads_counts
    }
}

/// Do the paths `reads` (None: the whole context) read a count, or a record holding one?
fn reads_a_count(reads: &Option<BTreeSet<String>>) -> bool {
    reads.as_ref().is_none_or(|r| {
        r.iter().any(|path| {
            let mut parts = path.split('.');
            matches!(
                (parts.next(), parts.next()),
                (Some("calls_last_minute"), _) | (Some("session"), None | Some("calls"))
            )
        })
    })
}

/// The attribute of the context a path (`session.tainted`) starts at.
fn top_level(path: &str) -> &str {
    path.split('.').next().unwrap_or(path)
}

pub struct Selector {
    /// Every policy, with the context attributes it reads, found the first time a request
    /// can apply it (finding them converts the policy to JSON: a process that makes one call
    /// does so only for the policies of that call, and for the others only if none of its
    /// own reads a count: `any_reads_counts`).
    policies: Vec<(Policy, OnceLock<Option<BTreeSet<String>>>)>,
    chosen: Cache<(EntityUid, EntityUid, EntityUid), Chosen>,
    /// Whether any policy reads a count, found the first time it is asked.
    any_reads_counts: OnceLock<bool>,
}

impl Selector {
    pub fn new(policies: Vec<Policy>) -> Selector {
        Selector {
            policies: policies.into_iter().map(|p| (p, OnceLock::new())).collect(),
            chosen: Cache::default(),
            any_reads_counts: OnceLock::new(),
        }
    }

    /// Whether any policy reads a count, if that is known yet.
    pub fn known_any_reads_counts(&self) -> Option<bool> {
        self.any_reads_counts.get().copied()
    }

    /// Does any policy, for any request, read a count?
    pub fn any_reads_counts(&self) -> bool {
        *self.any_reads_counts.get_or_init(|| {
            self.policies
                .iter()
                .any(|(policy, reads)| reads_a_count(reads.get_or_init(|| context_reads(policy))))
        })
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
                        && its_reads
                            .as_ref()
                            .is_none_or(|r| r.iter().any(|p| top_level(p) == "input"));
                    reads = match (reads, its_reads) {
                        (Some(mut all), Some(its)) => {
                            all.extend(its.iter().cloned());
                            Some(all)
                        }
                        _ => None,
                    };
                }
            }
            Chosen::new(set, reads, permit_reads_input)
        })
    }
}

/// The paths into the context `policy` reads; None when it uses `context` as a whole.
fn context_reads(policy: &Policy) -> Option<BTreeSet<String>> {
    let json = policy.to_json().ok()?;
    let mut reads = BTreeSet::new();
    walk(&json, &mut reads).then_some(reads)
}

/// Collects `context.x.y` and `context.x has y` as `x.y` into `reads`; false if `context`
/// appears in any other way.
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
                if let (Some(path), Some(attribute)) = (
                    inner.get("left").and_then(context_path),
                    inner.get("attr").and_then(Value::as_str),
                ) {
                    reads.insert(join(path, attribute));
                    return true;
                }
            }
            map.values().all(|v| walk(v, reads))
        }
        Value::Array(items) => items.iter().all(|v| walk(v, reads)),
        _ => true,
    }
}

/// `value`'s path into the context: "" for `context`, `x.y` for `context.x.y`; None if it is
/// not one.
fn context_path(value: &Value) -> Option<String> {
    if value.get("Var").and_then(Value::as_str) == Some("context") {
        return Some(String::new());
    }
    let access = value.get(".")?;
    Some(join(
        context_path(access.get("left")?)?,
        access.get("attr")?.as_str()?,
    ))
}

fn join(path: String, attribute: &str) -> String {
    match path.is_empty() {
        true => attribute.to_string(),
        false => format!("{path}.{attribute}"),
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
            Some(vec!["approved".into(), "input.path".into(), "user".into()])
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

    /// A decision made without the counts must be one that cannot depend on them.
    #[test]
    fn a_decision_that_can_read_a_count_is_known() {
        let reads_counts = |text: &str| {
            let policy = Policy::parse(None, text).unwrap();
            let set = Chosen::new(PolicySet::new(), context_reads(&policy), false);
            (set.reads_counts(), set.reads("session"), set.reads("input"))
        };
        for (condition, counts) in [
            ("context.calls_last_minute > 5", true),
            ("context.session.calls > 5", true),
            ("context[\"session\"][\"calls\"] > 5", true),
            (
                "context.session == {id: \"\", tainted: false, calls: 0}",
                true,
            ),
            ("context.session has calls", true),
            ("context has calls_last_minute", true),
            ("context == {}", true),
            ("context.session.tainted", false),
            (
                "context.session.id == \"s\" && context.input.a.b == 1",
                false,
            ),
            ("context has user && context.approved", false),
            ("if context.session.calls > 1 then true else false", true),
            ("context has session.calls", true),
        ] {
            let text = format!("forbid(principal, action, resource) when {{ {condition} }};");
            let (read, session, _) = reads_counts(&text);
            assert_eq!(read, counts, "{condition}");
            // Whatever reads a field of the session gets the session in its context.
            if condition.contains("session") {
                assert!(session, "{condition}");
            }
        }
        let (_, _, input) = reads_counts(
            "permit(principal, action, resource) when { context.input.path like \"/x*\" };",
        );
        assert!(input, "a field of the input is a read of the input");
    }

    /// A count one policy reads, for whatever request, is a count the whole set reads.
    #[test]
    fn a_count_read_by_any_policy_is_known() {
        let parse = |id: &str, text: &str| {
            Policy::parse(Some(cedar_policy::PolicyId::new(id)), text).unwrap()
        };
        let calm = parse(
            "calm",
            "permit(principal, action, resource) when { context.session.tainted };",
        );
        let counted = parse(
            "counted",
            "forbid(principal == Agent::\"other\", action, resource) when { context.calls_last_minute > 9 };",
        );
        assert!(!Selector::new(vec![calm.clone()]).any_reads_counts());
        assert!(Selector::new(vec![calm, counted]).any_reads_counts());
    }
}
