//! `warden demo`: the example deployment, run end to end on the embedded defaults.
//!
//! It writes `examples/` and the example tools into a fresh directory, starts an HTTP server
//! on loopback, and makes calls that show an allowed file read, an allowed HTTP request,
//! and escapes that are denied, each with its decision and reasons.

use crate::call::{CallReport, CallRequest, Caller};
use crate::credentials::Secret;
use crate::credentials::mint::KeyStore;
use crate::deployment::Deployment;
use crate::identity::jwks::KeySet;
use crate::identity::{self, assertion, delegation, jwt};
use crate::loopback::LoopbackServer;
use crate::policy::{Origin, OriginKind};
use crate::runtime::Runtime;
use anyhow::{Context as _, Result};
use clap::Args;
use ed25519_dalek::SigningKey;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct DemoArgs {
    /// Where to write the demo deployment (default: a new temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the demo directory afterwards.
    #[arg(long)]
    keep: bool,
}

macro_rules! built_tool {
    ($name:literal, $component:literal) => {
        (
            $name,
            $component,
            include_str!(concat!(
                env!("WARDEN_BUILT_TOOLS"),
                "/",
                $name,
                "/tool.toml"
            )),
            include_bytes!(concat!(
                env!("WARDEN_BUILT_TOOLS"),
                "/",
                $name,
                "/",
                $component
            )),
        )
    };
}

/// (name, component file, manifest, component bytes) of the tools the demo registers.
const TOOLS: [(&str, &str, &str, &[u8]); 6] = [
    built_tool!("hello", "hello.wasm"),
    built_tool!("read-file", "read_file.wasm"),
    built_tool!("write-note", "write_note.wasm"),
    built_tool!("delete-note", "delete_note.wasm"),
    built_tool!("http-get", "http_get.wasm"),
    built_tool!("hostile-fs", "hostile_fs.wasm"),
];

const DEPLOYMENT: &str = include_str!("../../../examples/warden.toml");
const WELCOME: &str = include_str!("../../../examples/data/welcome.txt");
/// The example policy directory (file name, text).
const POLICIES: [(&str, &str); 4] = [
    (
        "input.cedarschema",
        include_str!("../../../examples/policies/input.cedarschema"),
    ),
    (
        "invoke.cedar",
        include_str!("../../../examples/policies/invoke.cedar"),
    ),
    (
        "guards.cedar",
        include_str!("../../../examples/policies/guards.cedar"),
    ),
    (
        "egress.cedar",
        include_str!("../../../examples/policies/egress.cedar"),
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
    for (i, step) in steps.into_iter().enumerate() {
        println!("[{}] {}", i + 1, step.title);
        let who = step
            .on_behalf_of
            .map_or(String::new(), |_| " on behalf of alice".into());
        println!(
            "    call      {} as {AGENT}{who} with {}",
            step.tool, step.input
        );
        let assertion = assertion::sign(step.key, AGENT, step.tool, &step.input);
        let report = runtime
            .call(CallRequest {
                on_behalf_of: step.on_behalf_of.cloned(),
                origin: Origin {
                    kind: OriginKind::Cli,
                    label: "demo".into(),
                },
                ..CallRequest::new(
                    step.tool,
                    step.input,
                    Caller::Assertion(Secret::new(assertion)),
                )
            })
            .await;
        print_report(&report);
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
        "Nothing was written into the read-only mount: {}",
        if leaked { "NO" } else { "yes" }
    );

    if !args.keep && args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(if leaked { 1 } else { 0 })
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
        report.decision.outcome,
        report.decision.reasons.join("; ")
    );
    for e in &report.egress {
        let why = e.reason.as_deref().or(e.rule.as_deref()).unwrap_or("");
        println!(
            "    egress    {} {} {} ({why})",
            e.decision, e.method, e.url
        );
        if let Some(c) = &e.credential {
            println!(
                "    credential {} ({:?}, jti {}, audience {}) added by the host; {} echo(es) scrubbed from the response",
                c.name,
                c.kind,
                c.jti.as_deref().unwrap_or("-"),
                c.audience,
                c.scrubbed
            );
        }
    }
    match (&report.output, &report.error) {
        (Some(output), _) => println!("    result    ok: {output}"),
        (_, Some(error)) => println!("    result    {:?}: {}", error.kind, error.message),
        _ => {}
    }
    println!(
        "    call id   {} · {:.1} ms\n",
        report.call_id, report.duration_ms
    );
}

/// The demo's one agent.
const AGENT: &str = "demo-agent";

/// One call of the demo: `key` signs as the demo's agent (the last step uses a wrong key).
struct Step<'a> {
    title: &'a str,
    tool: &'a str,
    key: &'a SigningKey,
    on_behalf_of: Option<&'a Secret>,
    input: serde_json::Value,
}

impl<'a> Step<'a> {
    fn new(
        title: &'a str,
        tool: &'a str,
        key: &'a SigningKey,
        on_behalf_of: Option<&'a Secret>,
        input: serde_json::Value,
    ) -> Self {
        Step {
            title,
            tool,
            key,
            on_behalf_of,
            input,
        }
    }
}

struct DemoKeys {
    agent: SigningKey,
    alice: SigningKey,
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
        alice: identity::keys::generate(),
    };
    identity::keys::write_private(&dir.join("keys/demo-agent.key"), &keys.agent)?;
    identity::keys::write_private(&dir.join("keys/alice.key"), &keys.alice)?;
    let deployment = DEPLOYMENT.replace(
        "[agents.demo-agent]\n",
        &format!(
            "[agents.demo-agent]\npublic_key = \"{}\"\n",
            identity::keys::format_public(&keys.agent.verifying_key())
        ),
    );
    let deployment = format!(
        "{deployment}\n[users.alice]\npublic_key = \"{}\"\n\n[credentials.upstream]\nkind = \"minted\"\naudience = \"{upstream}\"\ntools = [\"http-get\"]\n",
        identity::keys::format_public(&keys.alice.verifying_key())
    );
    std::fs::write(dir.join("warden.toml"), deployment)?;
    std::fs::write(dir.join("data/welcome.txt"), WELCOME)?;
    for (name, text) in POLICIES {
        std::fs::write(dir.join("policies").join(name), text)?;
    }
    for (name, component, manifest, bytes) in TOOLS {
        let tool_dir = dir.join("tools").join(name);
        std::fs::create_dir_all(&tool_dir)?;
        std::fs::write(tool_dir.join(component), bytes)?;
        let manifest = if name == "http-get" {
            // The demo's upstream listens on a port chosen at start.
            format!(
                "{manifest}\n[[egress]]\nurl = \"{upstream}/*\"\nmethods = [\"GET\"]\nallow_private = true\ncredential = \"upstream\"\n"
            )
        } else {
            manifest.to_string()
        };
        std::fs::write(tool_dir.join("tool.toml"), manifest)?;
    }
    Ok(keys)
}
