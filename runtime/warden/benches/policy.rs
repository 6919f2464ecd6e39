//! One `invoke` decision (request built, policies chosen, Cedar evaluated, reasons
//! collected) with the example policies and with 100 generated policies spread over many
//! agents and tools. The target is a median of at most 20 µs.
//!
//! Run: `cargo bench -p warden --bench policy`. The README records the medians.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use std::path::Path;
use std::time::Instant;
use warden::manifest::Impact;
use warden::policy::{CallFacts, Outcome, Policies, SessionFacts};
use warden_test_support::synthetic;

/// A deployment with the example agents and agent-0 … agent-9, and `files` as policies.
fn load(dir: &Path, files: &[(String, String)]) -> Policies {
    let mut toml = String::from(
        "[agents.demo-agent]\ntrust = \"low\"\n[agents.ops-agent]\ntrust = \"high\"\n",
    );
    for i in 0..synthetic::AGENTS {
        toml.push_str(&format!("[agents.agent-{i}]\ntrust = \"high\"\n"));
    }
    std::fs::write(dir.join("warden.toml"), toml).unwrap();
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join("policies").join(name), text).unwrap();
    }
    let deployment = warden::Deployment::load(&dir.join("warden.toml")).unwrap();
    Policies::load(&deployment).unwrap()
}

/// A call in the middle of a session: a few calls made, maybe tainted.
fn facts(agent: &str, tool: &str, impact: Impact, tainted: bool) -> CallFacts {
    let mut call = synthetic::call(agent, tool, impact);
    call.session = SessionFacts {
        id: "s".into(),
        tainted,
        calls: 3,
    };
    call.calls_last_minute = 2;
    call
}

/// Median of `n` timed runs, in µs.
fn median_us(n: usize, mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..n)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[n / 2]
}

fn decisions(c: &mut Criterion) {
    let examples_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies");
    let examples: Vec<(String, String)> = std::fs::read_dir(&examples_dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let example = load(a.path(), &examples);
    let generated = load(
        b.path(),
        &[("generated.cedar".into(), synthetic::policies(100))],
    );

    let read = facts("demo-agent", "read-file", Impact::Read, false);
    let read_input = json!({ "path": "reports/2026/summary.txt" });
    let delete = facts("ops-agent", "delete-note", Impact::Irreversible, true);
    let delete_input = json!({ "name": "old.txt" });
    let many = facts("agent-3", "tool-11", Impact::Write, false);
    let many_input = json!({});
    let cases = [
        (
            "examples: allow",
            &example,
            &read,
            &read_input,
            Outcome::Allow,
        ),
        (
            "examples: approval required (decided twice)",
            &example,
            &delete,
            &delete_input,
            Outcome::ApprovalRequired,
        ),
        (
            "100 generated: allow",
            &generated,
            &many,
            &many_input,
            Outcome::Allow,
        ),
    ];
    let mut group = c.benchmark_group("invoke decision");
    for (name, policies, call, input, expected) in cases {
        assert_eq!(
            policies.decide_invoke(call, input, false, false).outcome,
            expected,
            "{name}"
        );
        group.bench_function(name, |bench| {
            bench.iter(|| policies.decide_invoke(call, input, false, false))
        });
    }
    group.finish();
    for (name, policies, call, input, _) in cases {
        let median = median_us(20_000, || {
            std::hint::black_box(policies.decide_invoke(call, input, false, false));
        });
        println!("median of 20000 decisions, {name}: {median:.1} µs");
    }
}

criterion_group!(benches, decisions);
criterion_main!(benches);
