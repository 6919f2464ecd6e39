//! What a decision is about, in Warden's terms, and how it becomes Cedar entities and context
//! (the shapes are those of `schema.cedarschema`).

use crate::deployment::{Deployment, Trust};
use crate::manifest::{Digest, Impact, Manifest, Sensitivity};
use crate::sandbox::egress::Target;
use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};

/// The facts shared by a call's `invoke` decision and its `egress` decisions.
#[derive(Debug, Clone)]
pub struct CallFacts {
    pub agent: String,
    pub tool: ToolFacts,
    pub user: Option<UserFacts>,
    pub origin: Origin,
    pub session: SessionFacts,
    /// Calls this agent made in the last 60 s (before this one).
    pub calls_last_minute: u64,
    /// Unix seconds.
    pub time: i64,
}

/// A tool as policies see it.
#[derive(Debug, Clone)]
pub struct ToolFacts {
    pub name: String,
    pub impact: Impact,
    pub sensitivity: Sensitivity,
    pub digest: String,
    pub ingests_untrusted: bool,
}

impl ToolFacts {
    pub fn of(manifest: &Manifest, digest: &Digest) -> ToolFacts {
        ToolFacts {
            name: manifest.name.clone(),
            impact: manifest.impact,
            sensitivity: manifest.sensitivity,
            digest: digest.to_string(),
            ingests_untrusted: manifest.ingests_untrusted,
        }
    }
}

/// The user a call is made for, and what their delegation lets the agent do.
#[derive(Debug, Clone)]
pub struct UserFacts {
    pub name: String,
    pub scope: Vec<String>,
}

/// Where a call came from.
#[derive(Debug, Clone, Serialize)]
pub struct Origin {
    pub kind: OriginKind,
    /// A label the caller chose (a framework's name, a CI job), "" when none.
    pub label: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginKind {
    Cli,
    Mcp,
    Api,
}

/// The session of a call, as it stood before the call.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionFacts {
    /// "" when the call has no session.
    pub id: String,
    pub tainted: bool,
    pub calls: u64,
}

/// Entity type names and action ids, parsed once.
pub(super) struct Names {
    pub agent: EntityTypeName,
    pub user: EntityTypeName,
    pub tool: EntityTypeName,
    pub host: EntityTypeName,
    pub invoke: EntityUid,
    pub egress: EntityUid,
}

impl Names {
    pub fn new() -> Names {
        let ty = |name: &str| name.parse::<EntityTypeName>().expect("a valid type name");
        let action =
            |name: &str| EntityUid::from_type_name_and_id(ty("Action"), EntityId::new(name));
        Names {
            agent: ty("Agent"),
            user: ty("User"),
            tool: ty("Tool"),
            host: ty("Host"),
            invoke: action("invoke"),
            egress: action("egress"),
        }
    }

    pub fn uid(&self, ty: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
    }
}

/// The principals of a deployment as Cedar entities, built once.
pub(super) struct Principals {
    pub agents: HashMap<String, Entity>,
    pub users: HashMap<String, Entity>,
}

impl Principals {
    pub fn of(deployment: &Deployment, names: &Names) -> Principals {
        let agents = deployment
            .agents
            .iter()
            .map(|(name, agent)| {
                let attrs = HashMap::from([
                    (
                        "owner".into(),
                        RestrictedExpression::new_string(agent.owner.clone()),
                    ),
                    (
                        "trust".into(),
                        RestrictedExpression::new_string(trust(agent.trust).into()),
                    ),
                ]);
                (name.clone(), entity(names.uid(&names.agent, name), attrs))
            })
            .collect();
        let users = deployment
            .users
            .iter()
            .map(|(name, user)| (name.clone(), user_entity(names, name, &user.roles)))
            .collect();
        Principals { agents, users }
    }

    /// A user's entity: as declared, or without roles for one known only from a token.
    pub fn user(&self, names: &Names, name: &str) -> Entity {
        self.users
            .get(name)
            .cloned()
            .unwrap_or_else(|| user_entity(names, name, &[]))
    }
}

fn user_entity(names: &Names, name: &str, roles: &[String]) -> Entity {
    let roles = roles
        .iter()
        .map(|r| RestrictedExpression::new_string(r.clone()));
    let attrs = HashMap::from([("roles".into(), RestrictedExpression::new_set(roles))]);
    entity(names.uid(&names.user, name), attrs)
}

pub(super) fn tool_entity(names: &Names, tool: &ToolFacts) -> Entity {
    let text = |v: &str| RestrictedExpression::new_string(v.into());
    let attrs = HashMap::from([
        ("impact".into(), text(impact(tool.impact))),
        ("sensitivity".into(), text(sensitivity(tool.sensitivity))),
        ("digest".into(), text(&tool.digest)),
        (
            "ingests_untrusted".into(),
            RestrictedExpression::new_bool(tool.ingests_untrusted),
        ),
    ]);
    entity(names.uid(&names.tool, &tool.name), attrs)
}

fn entity(uid: EntityUid, attrs: HashMap<String, RestrictedExpression>) -> Entity {
    Entity::new(uid, attrs, HashSet::new()).expect("Warden's entities have no duplicate attributes")
}

pub(super) fn host_entity(names: &Names, host: &str) -> Entity {
    Entity::new_no_attrs(names.uid(&names.host, host), HashSet::new())
}

/// The context parts `invoke` and `egress` share.
pub(super) fn common_context(call: &CallFacts) -> serde_json::Map<String, Value> {
    let time = call.time;
    let days = time.div_euclid(86_400);
    let mut context = serde_json::Map::new();
    context.insert("origin".into(), json!(call.origin));
    context.insert(
        "time".into(),
        // 1970-01-01 was a Thursday (3 when Monday is 0).
        json!({"unix": time, "hour": time.rem_euclid(86_400) / 3600, "weekday": (days + 3).rem_euclid(7)}),
    );
    context.insert("session".into(), json!(call.session));
    if let Some(user) = &call.user {
        context.insert(
            "user".into(),
            json!({"__entity": {"type": "User", "id": user.name}}),
        );
    }
    context
}

pub(super) fn invoke_context(
    call: &CallFacts,
    input: &Value,
    input_type: &Value,
    untrusted_input: bool,
    approved: bool,
) -> Value {
    let mut context = common_context(call);
    context.insert("input".into(), declared(input, input_type));
    if let Some(user) = &call.user {
        context.insert("scope".into(), json!(user.scope));
    }
    context.insert("calls_last_minute".into(), json!(call.calls_last_minute));
    context.insert("untrusted_input".into(), json!(untrusted_input));
    context.insert("approved".into(), json!(approved));
    Value::Object(context)
}

pub(super) fn egress_context(call: &CallFacts, target: &Target) -> Value {
    let mut context = common_context(call);
    context.insert(
        "tool".into(),
        json!({"__entity": {"type": "Tool", "id": call.tool.name}}),
    );
    context.insert("method".into(), json!(target.method));
    context.insert("scheme".into(), json!(target.scheme));
    context.insert("port".into(), json!(target.port));
    context.insert("path".into(), json!(target.path));
    Value::Object(context)
}

/// The part of a tool's input that the deployment declared for policies (`type Input`):
/// undeclared fields are dropped (a closed Cedar record cannot carry them) and so are nulls
/// (Cedar has none). Declared fields keep their value; one of the wrong type makes the
/// context invalid, and so the call denied.
fn declared(value: &Value, ty: &Value) -> Value {
    match (value, ty.get("type").and_then(Value::as_str)) {
        (Value::Object(fields), Some("Record")) => {
            let attributes = ty.get("attributes").and_then(Value::as_object);
            Value::Object(
                fields
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .filter_map(|(k, v)| {
                        let field_type = attributes?.get(k)?;
                        Some((k.clone(), declared(v, field_type)))
                    })
                    .collect(),
            )
        }
        (Value::Array(items), Some("Set")) => match ty.get("element") {
            Some(element) => Value::Array(items.iter().map(|v| declared(v, element)).collect()),
            None => value.clone(),
        },
        _ => value.clone(),
    }
}

pub fn impact(impact: Impact) -> &'static str {
    match impact {
        Impact::Read => "read",
        Impact::Write => "write",
        Impact::Irreversible => "irreversible",
    }
}

pub fn sensitivity(sensitivity: Sensitivity) -> &'static str {
    match sensitivity {
        Sensitivity::Public => "public",
        Sensitivity::Internal => "internal",
        Sensitivity::Confidential => "confidential",
        Sensitivity::Restricted => "restricted",
    }
}

fn trust(trust: Trust) -> &'static str {
    match trust {
        Trust::Low => "low",
        Trust::Medium => "medium",
        Trust::High => "high",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_declared_input_fields_reach_the_context() {
        let ty = json!({"type": "Record", "attributes": {
            "path": {"type": "EntityOrCommon", "name": "String", "required": false},
            "opts": {"type": "Record", "attributes": {"depth": {"type": "Long"}}},
        }});
        let input =
            json!({"path": "/a", "secret": "x", "opts": {"depth": 2, "other": 1}, "n": null});
        assert_eq!(
            declared(&input, &ty),
            json!({"path": "/a", "opts": {"depth": 2}})
        );
    }
}
