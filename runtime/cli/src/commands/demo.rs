//! `warden demo`: the example deployment, run end to end on the embedded defaults.
//!
//! It writes `examples/` and the example tools into a fresh directory, starts an HTTP server
//! on loopback, and makes calls that show an allowed file read, an allowed HTTP request,
//! and escapes that are denied, each with its decision and reasons; then an irreversible call
//! held for a person's approval, approved with the approver's key and used once, the audit
//! chain verified, and a revoked agent refused.

use anyhow::{Context as _, Result};
use clap::Args;
use ed25519_dalek::SigningKey;
use serde_json::json;
use std::path::{Path, PathBuf};
use warden::call::{CallRequest, Caller};
use warden::credentials::Secret;
use warden::credentials::mint::KeyStore;
use warden::deployment::Deployment;
use warden::identity::jwks::KeySet;
use warden::identity::{self, assertion, delegation, jwt};
use warden::policy::{Origin, OriginKind};
use warden::report::CallReport;
use warden::runtime::Runtime;
use warden_test_support::loopback::LoopbackServer;
use warden_test_support::{BuiltTool, DEMO_TOOLS};

#[derive(Args)]
pub struct DemoArgs {
    /// Where to write the demo deployment (default: a new temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the demo directory afterwards.
    #[arg(long)]
    keep: bool,
}

const DEPLOYMENT: &str = include_str!("../../../../examples/warden.toml");
const WELCOME: &str = include_str!("../../../../examples/data/welcome.txt");
/// The example policy directory (file name, text).
const POLICIES: [(&str, &str); 4] = [
    (
        "input.cedarschema",
        include_str!("../../../../examples/policies/input.cedarschema"),
    ),
    (
        "invoke.cedar",
        include_str!("../../../../examples/policies/invoke.cedar"),
    ),
    (
        "guards.cedar",
        include_str!("../../../../examples/policies/guards.cedar"),
    ),
    (
        "egress.cedar",
        include_str!("../../../../examples/policies/egress.cedar"),
    ),
];

pub async fn run(args: DemoArgs) -> Result<i32> {
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("warden-demo-{}", uuid::Uuid::new_v4()))
    });
    let server = LoopbackServer::start()
        .await
        .context("starting the loopback server")?;
    let keys = write_deployment(&dir, &server.url(""))?;
    println!(
        "Warden demo: deployment in {}, upstream on http://{}\n",
        dir.display(),
        server.addr
    );

    let runtime = Runtime::new(Deployment::load(&dir.join("warden.toml"))?)?;
    let delegation = Secret::new(delegation::issue(
        &keys.alice,
        "alice",
        "demo-agent",
        &["read-file".into(), "http-get".into()],
        std::time::Duration::from_secs(600),
    ));
    let stranger = identity::keys::generate();
    let agent = &keys.agent;
    let alice = Some(&delegation);
    let steps = [
        Step::new(
            "An allowed file read through a read-only mount",
            "read-file",
            agent,
            None,
            json!({ "path": "welcome.txt" }),
        ),
        Step::new(
            "An allowed HTTP request on behalf of alice: the host adds a token minted for this call",
            "http-get",
            agent,
            alice,
            json!({ "url": server.url("/echo-headers") }),
        ),
        Step::new(
            "A denied call: a policy reads the input and refuses hidden files",
            "read-file",
            agent,
            None,
            json!({ "path": ".env" }),
        ),
        Step::new(
            "A denied escape: HTTP to the cloud metadata address",
            "http-get",
            agent,
            None,
            json!({ "url": "http://169.254.169.254/latest/meta-data/" }),
        ),
        Step::new(
            "A denied escape: reading ../../etc/passwd from the mount",
            "hostile-fs",
            agent,
            None,
            json!({ "attack": "dotdot" }),
        ),
        Step::new(
            "A denied escape: writing into the read-only mount",
            "hostile-fs",
            agent,
            None,
            json!({ "attack": "write-ro" }),
        ),
        Step::new(
            "A denied call: the agent may not use write-note",
            "write-note",
            agent,
            None,
            json!({ "name": "x", "text": "y" }),
        ),
        Step::new(
            "A denied call: alice's delegation does not cover hostile-fs",
            "hostile-fs",
            agent,
            alice,
            json!({ "attack": "dotdot" }),
        ),
        Step::new(
            "A denied call: someone signing as demo-agent with another key",
            "hello",
            &stranger,
            None,
            json!({ "name": "Mallory" }),
        ),
    ];
    let count = steps.len();
    for (i, step) in steps.into_iter().enumerate() {
        step.run(i + 1, &runtime).await;
    }

    let received = server.received();
    println!(
        "The upstream received {} request(s): {:?}",
        received.len(),
        received.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    let jwks = KeyStore::new(&dir.join("state")).jwks()?;
    for request in &received {
        if let Some((_, value)) = request.headers.iter().find(|(k, _)| k == "authorization") {
            println!(
                "It carried a credential the tool never saw; checked against `warden jwks`: {}",
                describe_token(value, &jwks)
            );
        }
    }
    let leaked = dir.join("data/pwned.txt").exists();
    println!(
        "Nothing was written into the read-only mount: {}\n",
        if leaked { "NO" } else { "yes" }
    );

    let controls = approve_audit_revoke(&runtime, &keys, &dir, count).await?;
    if !args.keep && args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(if leaked || !controls { 1 } else { 0 })
}

/// An irreversible call held for approval, approved by carol and used once; the audit chain
/// verified; a revoked agent refused. True if every control held.
async fn approve_audit_revoke(
    runtime: &Runtime,
    keys: &DemoKeys,
    dir: &Path,
    done: usize,
) -> Result<bool> {
    let delete = |approval: Option<String>| Step {
        title: "",
        agent: OPS_AGENT,
        tool: "delete-note",
        key: &keys.ops,
        on_behalf_of: None,
        input: json!({ "name": "draft.txt" }),
        untrusted_input: true,
        approval,
    };
    let held = Step {
        title: "An irreversible call on untrusted input: held for a person's approval",
        ..delete(None)
    }
    .run(done + 1, runtime)
    .await;
    let Some(id) = held.record.approval.clone() else {
        println!("    no approval was asked for");
        return Ok(false);
    };
    println!("    carol approves it on her own channel, with her key:");
    println!("    $ warden approve {id} --key keys/carol.key");
    let approved = crate::approvals::approve(
        &dir.join("warden.toml"),
        crate::approvals::ApproveArgs {
            id: id.clone(),
            key: dir.join("keys/carol.key"),
        },
    )?;
    println!();
    let ran = Step {
        title: "The same call with the approval: it runs, once",
        ..delete(Some(id.clone()))
    }
    .run(done + 2, runtime)
    .await;
    let deleted = !dir.join("notes/draft.txt").exists();
    std::fs::write(dir.join("notes/draft.txt"), "draft")?;
    let replayed = Step {
        title: "The approval replayed: refused",
        ..delete(Some(id))
    }
    .run(done + 3, runtime)
    .await;

    let store = runtime.state()?;
    let chain = warden::audit::verify(store.as_ref())?;
    match &chain {
        Ok(v) => println!(
            "The audit chain holds {} records of {} calls and verifies (`warden audit verify`); head {}",
            v.records, v.calls, v.head
        ),
        Err(broken) => println!("The audit chain is BROKEN at {broken}"),
    }
    println!("`warden audit show {}`:", ran.record.call_id);
    print!(
        "{}",
        warden::audit::explain(&store.audit_of_call(&ran.record.call_id)?)?
    );
    println!();

    println!("    $ warden revoke agent {AGENT} --reason \"demo\"");
    runtime.revoke(warden::state::RevocationKind::Agent, AGENT, "demo")?;
    let refused = Step::new(
        "A call by the revoked agent: refused at once, in every process",
        "read-file",
        &keys.agent,
        None,
        json!({ "path": "welcome.txt" }),
    )
    .run(done + 4, runtime)
    .await;
    Ok(approved == 0
        && held.exit_code() == 4
        && ran.record.error.is_none()
        && deleted
        && replayed.exit_code() == 3
        && refused.exit_code() == 3
        && chain.is_ok())
}

/// Verifies a bearer token against a JWKS the way an upstream would, and shows its claims.
fn describe_token(header: &str, jwks: &KeySet) -> String {
    let token = header.trim_start_matches("Bearer ");
    let Ok(kid) = jwt::peek_header(token).map(|h| h.kid) else {
        return "not a JWT".into();
    };
    let key = jwks.key(kid.as_deref());
    match key.map(|k| jwt::verify::<serde_json::Value>(token, &k)) {
        Some(Ok(c)) => format!(
            "valid, sub={} act.sub={} aud={} lifetime={}s",
            c["sub"],
            c["act"]["sub"],
            c["aud"],
            c["exp"].as_i64().unwrap_or(0) - c["iat"].as_i64().unwrap_or(0)
        ),
        Some(Err(e)) => format!("INVALID: {e}"),
        None => "signed by a key not in the JWKS".into(),
    }
}

fn print_report(report: &CallReport) {
    println!(
        "    decision  {:?}: {}",
        report.record.decision.outcome,
        report.record.decision.reasons.join("; ")
    );
    for e in &report.egress {
        let why = e.reason.as_deref().or(e.rule.as_deref()).unwrap_or("");
        println!(
            "    egress    {} {} {} ({why})",
            e.decision.as_str(),
            e.method,
            e.url()
        );
        if let Some(c) = &e.credential {
            println!(
                "    credential {} ({:?}, jti {}, audience {}) added by the host; {} echo(es) scrubbed from the response",
                c.name,
                c.kind,
                c.jti.as_deref().unwrap_or("-"),
                c.audience,
                e.scrubbed
            );
        }
    }
    match (&report.output, &report.record.error) {
        (Some(output), _) => println!("    result    ok: {output}"),
        (_, Some(error)) => println!("    result    {:?}: {}", error.kind, error.message),
        _ => {}
    }
    println!(
        "    call id   {} · {:.1} ms\n",
        report.record.call_id, report.record.duration_ms
    );
}

/// The demo's agent, and the trusted agent that deletes a note.
const AGENT: &str = "demo-agent";
const OPS_AGENT: &str = "ops-agent";

/// One call of the demo: `key` signs as `agent` (one step uses a wrong key).
struct Step<'a> {
    title: &'a str,
    agent: &'a str,
    tool: &'a str,
    key: &'a SigningKey,
    on_behalf_of: Option<&'a Secret>,
    input: serde_json::Value,
    untrusted_input: bool,
    approval: Option<String>,
}

impl<'a> Step<'a> {
    /// A call by the demo agent.
    fn new(
        title: &'a str,
        tool: &'a str,
        key: &'a SigningKey,
        on_behalf_of: Option<&'a Secret>,
        input: serde_json::Value,
    ) -> Self {
        Step {
            title,
            agent: AGENT,
            tool,
            key,
            on_behalf_of,
            input,
            untrusted_input: false,
            approval: None,
        }
    }

    /// Prints the step, makes the call, prints its report.
    async fn run(self, number: usize, runtime: &Runtime) -> CallReport {
        println!("[{number}] {}", self.title);
        let who = self
            .on_behalf_of
            .map_or(String::new(), |_| " on behalf of alice".into());
        let mut how = String::new();
        if self.untrusted_input {
            how.push_str(", input marked untrusted");
        }
        if let Some(id) = &self.approval {
            how.push_str(&format!(", approval {id}"));
        }
        println!(
            "    call      {} as {}{who} with {}{how}",
            self.tool, self.agent, self.input
        );
        let assertion = assertion::sign(self.key, self.agent, self.tool, &self.input);
        let report = runtime
            .call(
                CallRequest::new(
                    self.tool,
                    self.input,
                    Caller::Assertion(Secret::new(assertion)),
                )
                .on_behalf_of(self.on_behalf_of.cloned())
                .untrusted_input(self.untrusted_input)
                .approval(self.approval)
                .origin(Origin {
                    kind: OriginKind::Cli,
                    label: "demo".into(),
                }),
            )
            .await;
        print_report(&report);
        report
    }
}

struct DemoKeys {
    agent: SigningKey,
    ops: SigningKey,
    alice: SigningKey,
    carol: SigningKey,
}

/// Writes the example deployment with fresh keys for the agent and the user alice, and the
/// upstream's origin as the audience of the minted credential.
fn write_deployment(dir: &Path, upstream: &str) -> Result<DemoKeys> {
    for sub in ["data", "notes", "scratch", "tools", "keys", "policies"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let keys = DemoKeys {
        agent: identity::keys::generate(),
        ops: identity::keys::generate(),
        alice: identity::keys::generate(),
        carol: identity::keys::generate(),
    };
    let mut deployment = DEPLOYMENT.to_string();
    for (name, key) in [(AGENT, &keys.agent), (OPS_AGENT, &keys.ops)] {
        identity::keys::write_private(&dir.join(format!("keys/{name}.key")), key)?;
        deployment = deployment.replace(
            &format!("[agents.{name}]\n"),
            &format!(
                "[agents.{name}]\npublic_key = \"{}\"\n",
                identity::keys::format_public(&key.verifying_key())
            ),
        );
    }
    identity::keys::write_private(&dir.join("keys/alice.key"), &keys.alice)?;
    identity::keys::write_private(&dir.join("keys/carol.key"), &keys.carol)?;
    let deployment = format!(
        "{deployment}\n[users.alice]\npublic_key = \"{}\"\n\n[approvers.carol]\npublic_key = \"{}\"\n\n[credentials.upstream]\nkind = \"minted\"\naudience = \"{upstream}\"\ntools = [\"http-get\"]\n",
        identity::keys::format_public(&keys.alice.verifying_key()),
        identity::keys::format_public(&keys.carol.verifying_key())
    );
    std::fs::write(dir.join("warden.toml"), deployment)?;
    std::fs::write(dir.join("data/welcome.txt"), WELCOME)?;
    std::fs::write(dir.join("notes/draft.txt"), "draft")?;
    for (name, text) in POLICIES {
        std::fs::write(dir.join("policies").join(name), text)?;
    }
    for BuiltTool {
        name,
        file,
        manifest,
        component,
        tests,
    } in DEMO_TOOLS
    {
        let tool_dir = dir.join("tools").join(name);
        std::fs::create_dir_all(&tool_dir)?;
        std::fs::write(tool_dir.join(file), component)?;
        let manifest = if name == "http-get" {
            // The demo's upstream listens on a port chosen at start.
            format!(
                "{manifest}\n[[egress]]\nurl = \"{upstream}/*\"\nmethods = [\"GET\"]\nallow_private = true\ncredential = \"upstream\"\n"
            )
        } else {
            manifest.to_string()
        };
        std::fs::write(tool_dir.join("tool.toml"), manifest)?;
        if !tests.is_empty() {
            std::fs::write(tool_dir.join("tests.toml"), tests)?;
        }
    }
    Ok(keys)
}
