//! The decision point. Every tool call (`invoke`, resource = the tool) and every outgoing
//! request of a running tool (`egress`, resource = the host) is decided by the Cedar policies
//! of the deployment's policy directory, validated against Warden's schema. Deny by default.
//!
//! Three outcomes: allow, deny, and approval required — a call that policies would permit
//! only with a human approval (a permit annotated `@approval`, or one whose condition needs
//! `context.approved`). The outcome is computed: a denied request is decided a second time
//! as if approved, and only if that permits it is an approval what it needs.
//!
//! Every decision names the policies that determined it (`@id`, else `file.cedar:index`) and
//! carries their `@reason` texts.

mod cache;
pub mod cases;
mod facts;
mod load;
mod select;
/// `warden-test-support`'s generated policies, for the tests here that compare how policies
/// are chosen (the library cannot depend on that crate, which depends on it).
#[cfg(test)]
#[path = "../../../test-support/src/synthetic.rs"]
mod synthetic;

pub use facts::{CallFacts, Origin, OriginKind, SessionFacts, ToolFacts, UserFacts};
pub use load::{INPUT_SCHEMA_FILE, PolicyError, PolicyProblem, SCHEMA};

use crate::deployment::Deployment;
use crate::sandbox::egress::Target;
use cedar_policy::{
    Authorizer, Context, Effect, Entities, EntityUid, PolicySet, Request, Response,
};
use facts::{Names, Principals};
use load::one_line;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Deny,
    ApprovalRequired,
}

/// A decision and what determined it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Decision {
    pub outcome: Outcome,
    /// Ids of the policies that determined the outcome, sorted.
    pub policies: Vec<String>,
    /// Why, in words: a summary, then the `@reason` of each of those policies.
    pub reasons: Vec<String>,
    /// Policies that could not be evaluated (a forbid among them denies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl Decision {
    /// A refusal made before any policy could be asked (authentication, delegation).
    pub fn deny(reason: String) -> Decision {
        Decision {
            outcome: Outcome::Deny,
            policies: vec![],
            reasons: vec![reason],
            errors: vec![],
        }
    }

    /// The reasons on one line, for messages.
    pub fn summary(&self) -> String {
        self.reasons.join("; ")
    }
}

/// Whether an agent may call a tool, as far as can be told without the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Allowed,
    ApprovalRequired,
    /// Some policy permits it for some inputs (its condition reads the input).
    DependsOnInput,
}

/// The deployment's policies, validated and ready to decide.
pub struct Policies {
    /// Every policy, with the whole context: what the choice is checked against.
    all: select::Chosen,
    selector: select::Selector,
    /// Entities per (agent, tool, user, host): built once, like the policy choice.
    entities: cache::Cache<(String, ToolFacts, Option<String>, Option<String>), Entities>,
    authorizer: Authorizer,
    /// What decisions need to know of each policy, read once (Cedar parses the key of
    /// every annotation lookup).
    notes: HashMap<String, Notes>,
    input_type: serde_json::Value,
    names: Names,
    principals: Principals,
    pub files: Vec<PathBuf>,
    pub dir: PathBuf,
}

impl Policies {
    /// Reads and validates the deployment's policy directory.
    pub fn load(deployment: &Deployment) -> Result<Policies, PolicyError> {
        let loaded = load::load_dir(&deployment.policy_dir)?;
        let mut set = PolicySet::new();
        for policy in &loaded.policies {
            set.add(policy.clone()).expect("policy ids are unique");
        }
        // Every policy, with the whole context (what the chosen ones are checked against).
        let all = select::Chosen::new(set, None, true);
        let names = Names::new();
        Ok(Policies {
            principals: Principals::of(deployment, &names),
            names,
            all,
            notes: loaded
                .policies
                .iter()
                .map(|p| {
                    let notes = Notes {
                        forbid: p.effect() == Effect::Forbid,
                        approval: p.annotation("approval").is_some(),
                        reason: p.annotation("reason").map(str::to_string),
                    };
                    (p.id().to_string(), notes)
                })
                .collect(),
            selector: select::Selector::new(loaded.policies),
            entities: cache::Cache::default(),
            authorizer: Authorizer::new(),
            input_type: loaded.input_type,
            files: loaded.files,
            dir: deployment.policy_dir.clone(),
        })
    }

    pub fn len(&self) -> usize {
        self.notes.len()
    }

    /// The policies' ids, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.notes.keys().cloned().collect();
        ids.sort();
        ids
    }

    pub fn is_empty(&self) -> bool {
        self.notes.is_empty()
    }

    /// May the call described by `call` run with `input`?
    pub fn decide_invoke(
        &self,
        call: &CallFacts,
        input: &serde_json::Value,
        untrusted_input: bool,
        approved: bool,
    ) -> Decision {
        self.invoke(call, input, untrusted_input, approved, Selection::Chosen)
    }

    /// Can a decision depend on a count (`calls_last_minute`, `session.calls`)? If none can,
    /// a call may be decided before it is counted, and counted when it ends. Any decision:
    /// a call counted late is missing meanwhile from the counts of every other.
    pub fn read_counts(&self, call: &CallFacts) -> bool {
        if let Some(known) = self.selector.known_any_reads_counts() {
            return known;
        }
        // This call's policies first (known per request triple): in most deployments one
        // of them does, and the whole set need not be looked at.
        self.selector
            .select(
                &self.names.uid(&self.names.agent, &call.agent),
                &self.names.invoke,
                &self.names.uid(&self.names.tool, &call.tool.name),
            )
            .reads_counts()
            || self.selector.any_reads_counts()
    }

    /// May the running tool of `call` send this request? (No approval can be attached to a
    /// single request: one that would need it is denied by the caller.)
    pub fn decide_egress(&self, call: &CallFacts, target: &Target) -> Decision {
        self.egress(call, target, Selection::Chosen)
    }

    fn egress(&self, call: &CallFacts, target: &Target, selection: Selection) -> Decision {
        let entities = match self.entities(call, Some(&target.host)) {
            Ok(entities) => entities,
            Err(refusal) => return refusal,
        };
        let question = Question {
            action: &self.names.egress,
            principal: self.names.uid(&self.names.agent, &call.agent),
            resource: self.names.uid(&self.names.host, &target.host),
            what: format!(
                "agent `{}` (tool `{}`) to send {} {}",
                call.agent,
                call.tool.name,
                target.method,
                target.display()
            ),
        };
        let context = |chosen: &select::Chosen, _| {
            Ok(facts::egress_context(&self.names, chosen, call, target))
        };
        self.evaluate(&question, &entities, context, None, selection)
    }

    /// What `call`'s agent may do with its tool before any input is known, decided with an
    /// empty input. A tool denied by default may be allowed for another input if a permit
    /// that can name it reads the input (`DependsOnInput`); one a forbid denies, or no such
    /// permit names, is `None`.
    pub fn access(&self, call: &CallFacts) -> Option<Access> {
        let empty = serde_json::json!({});
        let decision = self.invoke(call, &empty, false, false, Selection::Chosen);
        match decision.outcome {
            Outcome::Allow => Some(Access::Allowed),
            Outcome::ApprovalRequired => Some(Access::ApprovalRequired),
            Outcome::Deny if !decision.policies.is_empty() => None,
            Outcome::Deny => self
                .selector
                .select(
                    &self.names.uid(&self.names.agent, &call.agent),
                    &self.names.invoke,
                    &self.names.uid(&self.names.tool, &call.tool.name),
                )
                .permit_reads_input
                .then_some(Access::DependsOnInput),
        }
    }

    fn invoke(
        &self,
        call: &CallFacts,
        input: &serde_json::Value,
        untrusted_input: bool,
        approved: bool,
        selection: Selection,
    ) -> Decision {
        let entities = match self.entities(call, None) {
            Ok(entities) => entities,
            Err(refusal) => return refusal,
        };
        let question = Question {
            action: &self.names.invoke,
            principal: self.names.uid(&self.names.agent, &call.agent),
            resource: self.names.uid(&self.names.tool, &call.tool.name),
            what: format!("agent `{}` to invoke `{}`", call.agent, call.tool.name),
        };
        let context = |chosen: &select::Chosen, approved| {
            facts::invoke_context(
                &self.names,
                chosen,
                call,
                input,
                &self.input_type,
                untrusted_input,
                approved,
            )
        };
        self.evaluate(&question, &entities, context, Some(approved), selection)
    }

    /// The entities a decision about `call` (and `host`) refers to, built once per set of
    /// facts. A decision about an agent the deployment does not know is a refusal.
    fn entities(&self, call: &CallFacts, host: Option<&str>) -> Result<Arc<Entities>, Decision> {
        let Some(agent) = self.principals.agents.get(&call.agent) else {
            return Err(unknown_agent(&call.agent));
        };
        let user = call.user.as_ref().map(|u| u.name.clone());
        let key = (
            call.agent.clone(),
            call.tool.clone(),
            user,
            host.map(str::to_string),
        );
        Ok(self.entities.get_or_make(key, || {
            let mut entities = vec![agent.clone(), facts::tool_entity(&self.names, &call.tool)];
            if let Some(user) = &call.user {
                entities.push(self.principals.user(&self.names, &user.name));
            }
            if let Some(host) = host {
                entities.push(facts::host_entity(&self.names, host));
            }
            // Distinct entities without parents: nothing here can fail.
            Entities::from_entities(entities, None).expect("distinct entities")
        }))
    }

    /// Decides `question`. `approved`: whether an approval is attached (None: the action
    /// has no such notion). See the module comment for the three outcomes.
    fn evaluate(
        &self,
        question: &Question,
        entities: &Entities,
        context: impl Fn(&select::Chosen, bool) -> Result<facts::Pairs, String>,
        approved: Option<bool>,
        selection: Selection,
    ) -> Decision {
        let selected;
        let chosen = match selection {
            Selection::Chosen => {
                selected =
                    self.selector
                        .select(&question.principal, question.action, &question.resource);
                &*selected
            }
            Selection::All => &self.all,
        };
        let set = &chosen.set;
        let run = |approved: bool| -> Result<Response, String> {
            let context =
                Context::from_pairs(context(chosen, approved)?).map_err(|e| one_line(&e))?;
            // Not checked against the schema here (a third of a decision's time): Warden
            // builds the context in the schema's shape, and the input was checked against its
            // declaration (`facts::declared`). A test holds the shape to the schema.
            let request = Request::new(
                question.principal.clone(),
                question.action.clone(),
                question.resource.clone(),
                context,
                None,
            )
            .map_err(|e| one_line(&e))?;
            Ok(self.authorizer.is_authorized(&request, set, entities))
        };
        let first = match run(approved.unwrap_or(false)) {
            Ok(response) => response,
            Err(reason) => return Decision::deny(reason),
        };
        let mut decision = self.conclude(&first, question);
        // Would an approval change a denial? Decided, not guessed: once more, as if approved.
        let needs_second_look = decision.outcome == Outcome::Deny && approved == Some(false);
        if needs_second_look
            && let Ok(second) = run(true)
            && self.conclude(&second, question).outcome == Outcome::Allow
        {
            let permits = ids(&second);
            let mut policies: BTreeSet<String> = decision.policies.drain(..).collect();
            policies.extend(permits.iter().cloned());
            decision = Decision {
                outcome: Outcome::ApprovalRequired,
                reasons: vec![format!(
                    "{} needs a human approval: permitted by {} only when approved",
                    question.what,
                    quoted(&permits)
                )],
                policies: policies.into_iter().collect(),
                errors: vec![],
            };
            self.add_annotated_reasons(&mut decision);
        } else if decision.outcome == Outcome::Allow
            && approved == Some(false)
            && decision
                .policies
                .iter()
                .all(|id| self.notes.get(id).is_some_and(|n| n.approval))
        {
            decision.outcome = Outcome::ApprovalRequired;
            decision.reasons[0] = format!(
                "{} needs a human approval: {} asks for one",
                question.what,
                quoted(&decision.policies)
            );
        }
        decision
    }

    /// Turns one Cedar response into a decision (allow or deny).
    fn conclude(&self, response: &Response, question: &Question) -> Decision {
        // A forbid that cannot be evaluated denies: otherwise an input of an unexpected
        // shape could switch a forbid off.
        let mut errors = Vec::new();
        let mut broken_forbids = Vec::new();
        for error in response.diagnostics().errors() {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = error;
            errors.push(format!("`{}`: {}", e.policy_id(), one_line(e)));
            if self
                .notes
                .get(&e.policy_id().to_string())
                .is_some_and(|n| n.forbid)
            {
                broken_forbids.push(e.policy_id().to_string());
            }
        }
        let (outcome, policies, summary) = if !broken_forbids.is_empty() {
            broken_forbids.sort();
            let summary = format!(
                "{} is denied: forbid {} could not be evaluated",
                question.what,
                quoted(&broken_forbids)
            );
            (Outcome::Deny, broken_forbids, summary)
        } else {
            let determining = ids(response);
            match response.decision() {
                cedar_policy::Decision::Allow => {
                    let s = format!("{} is permitted by {}", question.what, quoted(&determining));
                    (Outcome::Allow, determining, s)
                }
                cedar_policy::Decision::Deny if determining.is_empty() => {
                    let s = format!("no policy permits {} (deny by default)", question.what);
                    (Outcome::Deny, determining, s)
                }
                cedar_policy::Decision::Deny => {
                    let s = format!("{} is forbidden by {}", question.what, quoted(&determining));
                    (Outcome::Deny, determining, s)
                }
            }
        };
        let mut decision = Decision {
            outcome,
            policies,
            reasons: vec![summary],
            errors,
        };
        self.add_annotated_reasons(&mut decision);
        decision
    }

    fn add_annotated_reasons(&self, decision: &mut Decision) {
        for id in &decision.policies {
            if let Some(reason) = self.notes.get(id).and_then(|n| n.reason.as_ref()) {
                decision.reasons.push(format!("{id}: {reason}"));
            }
        }
    }
}

struct Notes {
    forbid: bool,
    /// Annotated `@approval`: the permit allows only with an approval.
    approval: bool,
    reason: Option<String>,
}

/// What is being decided, in Cedar terms and in words.
struct Question<'a> {
    action: &'a EntityUid,
    principal: EntityUid,
    resource: EntityUid,
    /// "agent `a` to invoke `t`", for reasons.
    what: String,
}

/// Which policies Cedar is handed: those that can apply, or (to check that choice) all.
#[derive(Clone, Copy)]
enum Selection {
    Chosen,
    All,
}

fn ids(response: &Response) -> Vec<String> {
    let mut ids: Vec<String> = response
        .diagnostics()
        .reason()
        .map(|id| AsRef::<str>::as_ref(id).to_string())
        .collect();
    ids.sort();
    ids
}

fn quoted(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("`{id}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn unknown_agent(agent: &str) -> Decision {
    Decision::deny(format!(
        "agent `{agent}` is not registered in the deployment"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Impact;
    use synthetic::call;

    /// A deployment with agents `agent-0` … (agent-0 trusted high) and `files` as its
    /// policy directory.
    fn policies(files: &[(&str, &str)]) -> Result<Policies, PolicyError> {
        let dir = tempfile::tempdir().unwrap();
        let mut toml = String::new();
        for i in 0..synthetic::AGENTS {
            let trust = if i == 0 { "high" } else { "low" };
            toml.push_str(&format!("[agents.agent-{i}]\ntrust = \"{trust}\"\n"));
        }
        std::fs::write(dir.path().join("warden.toml"), toml).unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join("policies").join(name), text).unwrap();
        }
        let deployment = Deployment::load(&dir.path().join("warden.toml")).unwrap();
        Policies::load(&deployment)
    }

    fn problem(files: &[(&str, &str)]) -> String {
        match policies(files) {
            Ok(_) => panic!("the policies were accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn invalid_policies_are_reported_with_file_and_line() {
        let syntax = problem(&[(
            "a.cedar",
            "\n\npermit(principal, action, resource) when { };\n",
        )]);
        assert!(syntax.contains("a.cedar:3:"), "{syntax}");

        let attribute = problem(&[(
            "b.cedar",
            "permit(principal, action, resource);\n\npermit(principal, action == Action::\"invoke\", resource)\n  when { resource.riskk == \"high\" };\n",
        )]);
        assert!(
            attribute.contains("b.cedar:4:") && attribute.contains("riskk"),
            "{attribute}"
        );

        let entity = problem(&[(
            "c.cedar",
            "permit(principal == Robot::\"r2\", action == Action::\"invoke\", resource);\n",
        )]);
        assert!(
            entity.contains("c.cedar:1:") && entity.contains("Robot"),
            "{entity}"
        );

        let input = problem(&[(
            "d.cedar",
            "permit(principal, action == Action::\"invoke\", resource)\n  when { context.input.path == \"/x\" };\n",
        )]);
        assert!(
            input.contains("d.cedar:2:") && input.contains("path"),
            "{input}"
        );

        let twice = problem(&[
            (
                "e.cedar",
                "@id(\"same\") permit(principal, action, resource);",
            ),
            (
                "f.cedar",
                "@id(\"same\") permit(principal, action, resource);",
            ),
        ]);
        assert!(
            twice.contains("f.cedar") && twice.contains("same"),
            "{twice}"
        );
    }

    #[test]
    fn no_policy_denies_everything() {
        let p = policies(&[]).unwrap();
        let d = p.decide_invoke(
            &call("agent-0", "t", Impact::Read),
            &serde_json::json!({}),
            false,
            false,
        );
        assert_eq!(d.outcome, Outcome::Deny);
        assert!(d.policies.is_empty());
        assert!(d.reasons[0].contains("deny by default"), "{:?}", d.reasons);
    }

    #[test]
    fn approval_is_computed_from_annotations_and_conditions() {
        let p = policies(&[(
            "approval.cedar",
            r#"
@id("annotated")
@approval("human")
@reason("deleting needs a human")
permit(principal, action == Action::"invoke", resource == Tool::"delete");

@id("conditional")
permit(principal, action == Action::"invoke", resource == Tool::"wire")
when { context.approved };

@id("plain")
permit(principal, action == Action::"invoke", resource == Tool::"read");
"#,
        )])
        .unwrap();
        let input = serde_json::json!({});
        let decide = |tool: &str, approved| {
            p.decide_invoke(
                &call("agent-1", tool, Impact::Irreversible),
                &input,
                false,
                approved,
            )
        };
        let d = decide("delete", false);
        assert_eq!(
            (d.outcome, d.policies.clone()),
            (Outcome::ApprovalRequired, vec!["annotated".into()])
        );
        assert!(
            d.reasons
                .iter()
                .any(|r| r.contains("deleting needs a human")),
            "{:?}",
            d.reasons
        );
        assert_eq!(decide("delete", true).outcome, Outcome::Allow);
        let d = decide("wire", false);
        assert_eq!(
            (d.outcome, d.policies),
            (Outcome::ApprovalRequired, vec!["conditional".into()])
        );
        assert_eq!(decide("wire", true).outcome, Outcome::Allow);
        assert_eq!(decide("read", false).outcome, Outcome::Allow);
        assert_eq!(decide("other", false).outcome, Outcome::Deny);
    }

    #[test]
    fn a_forbid_that_cannot_be_evaluated_denies() {
        let p = policies(&[(
            "overflow.cedar",
            r#"
@id("allow-all")
permit(principal, action, resource);

@id("overflowing")
forbid(principal, action == Action::"invoke", resource)
when { context.calls_last_minute + 9223372036854775807 > 0 };
"#,
        )])
        .unwrap();
        let mut facts = call("agent-1", "t", Impact::Read);
        facts.calls_last_minute = 5;
        let d = p.decide_invoke(&facts, &serde_json::json!({}), false, false);
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(d.policies, vec!["overflowing".to_string()]);
        assert!(!d.errors.is_empty());
    }

    #[test]
    fn an_input_of_the_wrong_type_is_denied() {
        let p = policies(&[
            ("input.cedarschema", "type Input = { amount?: Long };"),
            (
                "limit.cedar",
                r#"
permit(principal, action, resource);
@id("small-amounts")
forbid(principal, action == Action::"invoke", resource)
when { context.input has amount && context.input.amount > 100 };
"#,
            ),
        ])
        .unwrap();
        let facts = call("agent-1", "pay", Impact::Irreversible);
        let decide = |input| p.decide_invoke(&facts, &input, false, false).outcome;
        assert_eq!(
            decide(serde_json::json!({"amount": 5, "memo": "x"})),
            Outcome::Allow
        );
        assert_eq!(decide(serde_json::json!({"amount": 500})), Outcome::Deny);
        // A string where a Long is declared cannot slip past the forbid.
        assert_eq!(decide(serde_json::json!({"amount": "500"})), Outcome::Deny);
    }

    /// The contexts Warden builds are not checked against the schema on each decision (see
    /// `evaluate`); this holds their shape to it.
    #[test]
    fn the_contexts_warden_builds_fit_the_schema() {
        let declaration = (
            "input.cedarschema",
            "type Input = { path?: String, n?: Long, tags?: Set<String> };",
        );
        let p = policies(&[declaration]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(declaration.0), declaration.1).unwrap();
        let (schema, _) = load::load_schema(dir.path()).unwrap();
        let mut facts = call("agent-0", "t", Impact::Read);
        facts.user = Some(UserFacts {
            name: "ada".into(),
            scope: vec!["t".into()],
        });
        let input = serde_json::json!({"path": "/x", "n": 3, "tags": ["a"], "other": null});
        let check = |action: &EntityUid, resource: EntityUid, pairs: facts::Pairs| {
            let context = Context::from_pairs(pairs).unwrap();
            let principal = p.names.uid(&p.names.agent, "agent-0");
            Request::new(principal, action.clone(), resource, context, Some(&schema))
                .unwrap_or_else(|e| panic!("{action}: {e:?}"));
        };
        for user in [facts.user.clone(), None] {
            facts.user = user;
            let invoke =
                facts::invoke_context(&p.names, &p.all, &facts, &input, &p.input_type, true, false);
            check(
                &p.names.invoke,
                p.names.uid(&p.names.tool, "t"),
                invoke.unwrap(),
            );
            let target = Target::from_uri("GET", &"https://h.example/a".parse().unwrap()).unwrap();
            let egress = facts::egress_context(&p.names, &p.all, &facts, &target);
            check(
                &p.names.egress,
                p.names.uid(&p.names.host, "h.example"),
                egress,
            );
        }
    }

    #[test]
    fn the_chosen_policies_decide_exactly_as_all_policies() {
        let p = policies(&[("generated.cedar", &synthetic::policies(100))]).unwrap();
        assert_eq!(p.len(), 100);
        let impacts = [Impact::Read, Impact::Write, Impact::Irreversible];
        let mut compared = 0;
        let mut outcomes = std::collections::HashSet::new();
        for a in 0..synthetic::AGENTS + 1 {
            for t in 0..synthetic::TOOLS + 1 {
                for variant in 0..4u64 {
                    let mut facts = call(
                        &format!("agent-{a}"),
                        &format!("tool-{t}"),
                        impacts[(a + t) % 3],
                    );
                    facts.calls_last_minute = variant * 20;
                    facts.session.tainted = variant % 2 == 1;
                    facts.session.calls = variant * 60;
                    let input = serde_json::json!({});
                    let untrusted = variant == 3;
                    let chosen = p.invoke(&facts, &input, untrusted, false, Selection::Chosen);
                    let all = p.invoke(&facts, &input, untrusted, false, Selection::All);
                    assert_eq!(
                        (chosen.outcome, &chosen.policies, &chosen.reasons),
                        (all.outcome, &all.policies, &all.reasons),
                        "agent-{a} tool-{t} variant {variant}"
                    );
                    outcomes.insert(format!("{:?}", chosen.outcome));
                    let target = Target::from_uri(
                        "POST",
                        &format!("https://tool-{t}.example/x").parse().unwrap(),
                    )
                    .unwrap();
                    let chosen = p.egress(&facts, &target, Selection::Chosen);
                    let all = p.egress(&facts, &target, Selection::All);
                    assert_eq!(
                        (chosen.outcome, &chosen.policies),
                        (all.outcome, &all.policies)
                    );
                    compared += 2;
                }
            }
        }
        // The generated set exercises every outcome.
        assert_eq!(outcomes.len(), 3, "{outcomes:?}");
        assert!(compared > 2000);
    }
}
