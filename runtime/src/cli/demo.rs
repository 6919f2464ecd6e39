//! `warden demo`: the example deployment, run end to end on the embedded defaults.
//!
//! It writes `examples/` and the example tools into a fresh directory, starts an HTTP server
//! on loopback, and makes calls that show an allowed file read, an allowed HTTP request,
//! and escapes that are denied, each with its decision and reasons.

use crate::call::{CallReport, CallRequest};
use crate::deployment::Deployment;
use crate::loopback::LoopbackServer;
use crate::runtime::Runtime;
use anyhow::{Context as _, Result};
use clap::Args;
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
const TOOLS: [(&str, &str, &str, &[u8]); 5] = [
    built_tool!("hello", "hello.wasm"),
    built_tool!("read-file", "read_file.wasm"),
    built_tool!("write-note", "write_note.wasm"),
    built_tool!("http-get", "http_get.wasm"),
    built_tool!("hostile-fs", "hostile_fs.wasm"),
];

const DEPLOYMENT: &str = include_str!("../../../examples/warden.toml");
const WELCOME: &str = include_str!("../../../examples/data/welcome.txt");

pub async fn run(args: DemoArgs) -> Result<i32> {
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("warden-demo-{}", uuid::Uuid::new_v4()))
    });
    let server = LoopbackServer::start()
        .await
        .context("starting the loopback server")?;
    write_deployment(&dir, server.addr.port())?;
    println!(
        "Warden demo: deployment in {}, upstream on http://{}\n",
        dir.display(),
        server.addr
    );

    let runtime = Runtime::new(Deployment::load(&dir.join("warden.toml"))?)?;
    let steps = [
        (
            "An allowed file read through a read-only mount",
            "read-file",
            "demo-agent",
            json!({ "path": "welcome.txt" }),
        ),
        (
            "An allowed HTTP request to the loopback upstream",
            "http-get",
            "demo-agent",
            json!({ "url": server.url("/status") }),
        ),
        (
            "A denied escape: HTTP to the cloud metadata address",
            "http-get",
            "demo-agent",
            json!({ "url": "http://169.254.169.254/latest/meta-data/" }),
        ),
        (
            "A denied escape: reading ../../etc/passwd from the mount",
            "hostile-fs",
            "demo-agent",
            json!({ "attack": "dotdot" }),
        ),
        (
            "A denied escape: writing into the read-only mount",
            "hostile-fs",
            "demo-agent",
            json!({ "attack": "write-ro" }),
        ),
        (
            "A denied call: the agent may not use write-note",
            "write-note",
            "demo-agent",
            json!({ "name": "x", "text": "y" }),
        ),
        (
            "A denied call: an agent nobody registered",
            "hello",
            "stranger",
            json!({ "name": "Mallory" }),
        ),
    ];
    for (i, (title, tool, agent, input)) in steps.into_iter().enumerate() {
        println!("[{}] {title}", i + 1);
        println!("    call      {tool} as {agent} with {input}");
        let report = runtime
            .call(CallRequest {
                tool: tool.into(),
                agent: agent.into(),
                input,
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

fn print_report(report: &CallReport) {
    println!(
        "    decision  {:?}: {}",
        report.decision.outcome,
        report.decision.reasons.join("; ")
    );
    for e in &report.egress {
        let why = e
            .reason
            .as_deref()
            .or(e.rule.as_deref().map(|r| r))
            .unwrap_or("");
        println!(
            "    egress    {} {} {} ({why})",
            e.decision, e.method, e.url
        );
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

fn write_deployment(dir: &Path, port: u16) -> Result<()> {
    for sub in ["data", "notes", "scratch", "tools"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    std::fs::write(dir.join("warden.toml"), DEPLOYMENT)?;
    std::fs::write(dir.join("data/welcome.txt"), WELCOME)?;
    for (name, component, manifest, bytes) in TOOLS {
        let tool_dir = dir.join("tools").join(name);
        std::fs::create_dir_all(&tool_dir)?;
        std::fs::write(tool_dir.join(component), bytes)?;
        let manifest = if name == "http-get" {
            // The demo's upstream listens on a port chosen at start.
            format!(
                "{manifest}\n[[egress]]\nurl = \"http://127.0.0.1:{port}/*\"\nmethods = [\"GET\"]\nallow_private = true\n"
            )
        } else {
            manifest.to_string()
        };
        std::fs::write(tool_dir.join("tool.toml"), manifest)?;
    }
    Ok(())
}
