//! What a decision is about, in Warden's terms, and how it becomes Cedar entities and context
//! (the shapes are those of `schema.cedarschema`).

use super::select::Chosen;
use crate::deployment::Deployment;
use crate::manifest::{Digest, Impact, Manifest, Sensitivity};
use crate::sandbox::egress::Target;
use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use serde::Serialize;
use serde_json::Value;
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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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
    /// `warden drill`: a throwaway call that proves a control on a real deployment.
    Drill,
}

impl OriginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OriginKind::Cli => "cli",
            OriginKind::Mcp => "mcp",
            OriginKind::Api => "api",
            OriginKind::Drill => "drill",
        }
    }
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
                        RestrictedExpression::new_string(agent.trust.as_str().into()),
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
        ("impact".into(), text(tool.impact.as_str())),
        ("sensitivity".into(), text(tool.sensitivity.as_str())),
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

/// A request context under construction.
pub(super) type Pairs = Vec<(String, RestrictedExpression)>;

fn text(value: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(value.into())
}

fn long(value: u64) -> RestrictedExpression {
    RestrictedExpression::new_long(i64::try_from(value).unwrap_or(i64::MAX))
}

fn record<'a>(
    fields: impl IntoIterator<Item = (&'a str, RestrictedExpression)>,
) -> RestrictedExpression {
    RestrictedExpression::new_record(fields.into_iter().map(|(k, v)| (k.to_string(), v)))
        .expect("distinct field names")
}

/// A context holding just the attributes the chosen policies read, each built only then.
struct ContextBuilder<'a> {
    chosen: &'a Chosen,
    pairs: Pairs,
}

impl ContextBuilder<'_> {
    fn add(&mut self, name: &str, make: impl FnOnce() -> RestrictedExpression) {
        if self.chosen.reads(name) {
            self.pairs.push((name.to_string(), make()));
        }
    }
}

/// The context parts `invoke` and `egress` share.
fn common_context<'a>(names: &Names, chosen: &'a Chosen, call: &CallFacts) -> ContextBuilder<'a> {
    let mut context = ContextBuilder {
        chosen,
        pairs: Vec::with_capacity(10),
    };
    context.add("origin", || {
        record([
            ("kind", text(call.origin.kind.as_str())),
            ("label", text(&call.origin.label)),
        ])
    });
    context.add("time", || {
        let time = call.time;
        let days = time.div_euclid(86_400);
        record([
            ("unix", RestrictedExpression::new_long(time)),
            (
                "hour",
                RestrictedExpression::new_long(time.rem_euclid(86_400) / 3600),
            ),
            // 1970-01-01 was a Thursday (3 when Monday is 0).
            (
                "weekday",
                RestrictedExpression::new_long((days + 3).rem_euclid(7)),
            ),
        ])
    });
    context.add("session", || {
        record([
            ("id", text(&call.session.id)),
            (
                "tainted",
                RestrictedExpression::new_bool(call.session.tainted),
            ),
            ("calls", long(call.session.calls)),
        ])
    });
    if let Some(user) = &call.user {
        context.add("user", || {
            RestrictedExpression::new_entity_uid(names.uid(&names.user, &user.name))
        });
    }
    context
}

pub(super) fn invoke_context(
    names: &Names,
    chosen: &Chosen,
    call: &CallFacts,
    input: &Value,
    input_type: &Value,
    untrusted_input: bool,
    approved: bool,
) -> Result<Pairs, String> {
    let mut context = common_context(names, chosen, call);
    // Checked whether or not a policy reads it, so that a call is refused alike by every
    // choice of policies.
    let input = declared(input, input_type, "input")?;
    context.add("input", || {
        cedar_value(&input).unwrap_or_else(|| record([]))
    });
    if let Some(user) = &call.user {
        context.add("scope", || {
            RestrictedExpression::new_set(user.scope.iter().map(|t| text(t)))
        });
    }
    context.add("calls_last_minute", || long(call.calls_last_minute));
    context.add("untrusted_input", || {
        RestrictedExpression::new_bool(untrusted_input)
    });
    context.add("approved", || RestrictedExpression::new_bool(approved));
    Ok(context.pairs)
}

pub(super) fn egress_context(
    names: &Names,
    chosen: &Chosen,
    call: &CallFacts,
    target: &Target,
) -> Pairs {
    let mut context = common_context(names, chosen, call);
    context.add("tool", || {
        RestrictedExpression::new_entity_uid(names.uid(&names.tool, &call.tool.name))
    });
    context.add("method", || text(&target.method));
    context.add("scheme", || text(&target.scheme));
    context.add("port", || long(target.port.into()));
    context.add("path", || text(&target.path));
    context.pairs
}

/// A JSON value as a Cedar value: integers are Longs, other numbers decimals (an error when
/// a policy reads one that is not a valid decimal), arrays sets, objects records; nulls are
/// left out (Cedar has none).
fn cedar_value(value: &Value) -> Option<RestrictedExpression> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => RestrictedExpression::new_long(i),
            None => RestrictedExpression::new_decimal(n.to_string()),
        },
        Value::String(s) => text(s),
        Value::Array(items) => RestrictedExpression::new_set(items.iter().filter_map(cedar_value)),
        Value::Object(fields) => RestrictedExpression::new_record(
            fields
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), cedar_value(v)?))),
        )
        .expect("JSON object keys are distinct"),
    })
}

/// The part of a tool's input that the deployment declared for policies (`type Input`),
/// checked against the declared types: undeclared fields are dropped (a closed Cedar record
/// cannot carry them) and so are nulls (Cedar has none); a declared field of another type is
/// an error, so that no value of an unexpected shape reaches a policy. Types this does not
/// know (extension types, entity references) are left to Cedar, whose evaluation error then
/// denies (see `Policies::conclude`).
fn declared(value: &Value, ty: &Value, at: &str) -> Result<Value, String> {
    let kind = match ty.get("type").and_then(Value::as_str) {
        Some("EntityOrCommon") => ty.get("name").and_then(Value::as_str),
        kind => kind,
    };
    let fits = match (kind, value) {
        (Some("String"), _) => value.is_string(),
        (Some("Bool" | "Boolean"), _) => value.is_boolean(),
        (Some("Long"), _) => value.as_i64().is_some(),
        (Some("Record"), Value::Object(fields)) => {
            let attributes = ty.get("attributes").and_then(Value::as_object);
            let mut kept = serde_json::Map::new();
            for (name, field) in fields.iter().filter(|(_, v)| !v.is_null()) {
                if let Some(field_type) = attributes.and_then(|a| a.get(name)) {
                    let field = declared(field, field_type, &format!("{at}.{name}"))?;
                    kept.insert(name.clone(), field);
                }
            }
            return Ok(Value::Object(kept));
        }
        (Some("Set"), Value::Array(items)) => {
            let element = ty.get("element").unwrap_or(&Value::Null);
            let items = items
                .iter()
                .enumerate()
                .map(|(i, item)| declared(item, element, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?;
            return Ok(Value::Array(items));
        }
        (Some("Record" | "Set"), _) => false,
        _ => true,
    };
    if fits {
        Ok(value.clone())
    } else {
        Err(format!(
            "`{at}` is not a {} as the policy schema declares",
            kind.unwrap_or("value")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_declared_input_fields_reach_the_context() {
        let ty = json!({"type": "Record", "attributes": {
            "path": {"type": "EntityOrCommon", "name": "String", "required": false},
            "opts": {"type": "Record", "attributes": {"depth": {"type": "Long"}}},
        }});
        let input =
            json!({"path": "/a", "secret": "x", "opts": {"depth": 2, "other": 1}, "n": null});
        assert_eq!(
            declared(&input, &ty, "input").unwrap(),
            json!({"path": "/a", "opts": {"depth": 2}})
        );
        let wrong = declared(&json!({"opts": {"depth": "2"}}), &ty, "input").unwrap_err();
        assert!(
            wrong.contains("input.opts.depth") && wrong.contains("Long"),
            "{wrong}"
        );
    }
}
