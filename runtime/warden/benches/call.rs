//! A warm mediated call of `hello` (fresh Store, instantiate, invoke, with the decision,
//! schema check, egress hook, limits and stdio capture installed) against a bare wasmtime
//! instantiate + invoke of the same component, in the same run.
//!
//! Also: calls per second with the audit chain written and not, and an HTTP call with and
//! without a minted credential.
//!
//! Run: `cargo bench -p warden --bench call`. The README records the medians and the ratio.

use bare::ToolPre;
use bare::warden::tool::context::{self, CallContext};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use serde_json::json;
use std::path::Path;
use warden::call::Caller;
use warden::credentials::Secret;
use warden::identity::{assertion, delegation, keys};
use warden_test_support::loopback::LoopbackServer;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The tool world's host side for the bare baseline, generated here: the baseline owes
/// nothing to Warden's host.
mod bare {
    wasmtime::component::bindgen!({
        world: "tool",
        path: "../../host-api/wit",
        exports: { default: async },
    });
}

struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl context::Host for Bare {
    fn current(&mut self) -> CallContext {
        CallContext {
            call_id: "bench".into(),
            tool: "hello".into(),
            agent: "bench".into(),
            user: None,
        }
    }
}

/// Instantiate and invoke with nothing but WASI: the baseline.
async fn bare_call(engine: &Engine, pre: &ToolPre<Bare>, input: &str) -> String {
    let mut store = Store::new(
        engine,
        Bare {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        },
    );
    let tool = pre.instantiate_async(&mut store).await.unwrap();
    tool.call_invoke(&mut store, input).await.unwrap().unwrap()
}

/// A deployment with `hello` and `http-get`; http-get may reach `credentialed` with a minted
/// credential and `plain` without one.
fn deployment(
    agent: &SigningKey,
    user: &SigningKey,
    credentialed: &str,
    plain: &str,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["hello", "http-get"] {
        warden_test_support::copy_built_tool(name, &dir.path().join("tools")).unwrap();
    }
    let manifest = dir.path().join("tools/http-get/tool.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let kept = text.split("[[egress]]").next().unwrap();
    std::fs::write(
        &manifest,
        format!(
            "{kept}[[egress]]\nurl = \"{credentialed}/*\"\nallow_private = true\ncredential = \"upstream\"\n\n\
             [[egress]]\nurl = \"{plain}/*\"\nallow_private = true\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("warden.toml"),
        format!(
            "tool_dirs = [\"tools\"]\n[agents.bench]\npublic_key = \"{}\"\n\
             [users.ada]\npublic_key = \"{}\"\n\
             [credentials.upstream]\naudience = \"{credentialed}\"\ntools = [\"http-get\"]\n",
            keys::format_public(&agent.verifying_key()),
            keys::format_public(&user.verifying_key()),
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/bench.cedar"),
        "permit(principal == Agent::\"bench\", action, resource);\n",
    )
    .unwrap();
    dir
}

fn calls(c: &mut Criterion) {
    let agent = keys::generate();
    let user = keys::generate();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (credentialed, plain) = rt.block_on(async {
        (
            LoopbackServer::start().await.unwrap(),
            LoopbackServer::start().await.unwrap(),
        )
    });
    let dir = deployment(&agent, &user, &credentialed.url(""), &plain.url(""));
    let runtime =
        warden::Runtime::new(warden::Deployment::load(&dir.path().join("warden.toml")).unwrap())
            .unwrap();
    // The agent proves its key once, as a long-lived caller (an MCP server) would.
    let session = runtime
        .authenticate(&Secret::new(assertion::sign_session(&agent, "bench")))
        .unwrap();
    let request = warden::CallRequest::new(
        "hello",
        json!({ "name": "bench" }),
        Caller::Authenticated(session.clone()),
    );
    let first = rt.block_on(runtime.call(request.clone()));
    assert!(first.record.error.is_none(), "{:?}", first.record.error);

    let engine = Engine::default();
    let mut linker = Linker::<Bare>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    context::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).unwrap();
    let component = Component::from_file(
        &engine,
        Path::new(warden_test_support::BUILT_TOOLS_DIR).join("hello/hello.wasm"),
    )
    .unwrap();
    let pre = ToolPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    let input = json!({ "name": "bench" }).to_string();

    let mut group = c.benchmark_group("call hello");
    group.bench_function("bare wasmtime", |b| {
        b.to_async(&rt).iter(|| bare_call(&engine, &pre, &input))
    });
    group.bench_function("warden mediated", |b| {
        b.to_async(&rt).iter(|| async {
            let report = runtime.call(request.clone()).await;
            debug_assert!(report.record.error.is_none());
            report
        })
    });
    group.finish();

    // The figure the README states: medians of interleaved runs, and their ratio.
    let (bare, mediated) = interleaved_medians(
        || {
            rt.block_on(bare_call(&engine, &pre, &input));
        },
        || {
            rt.block_on(runtime.call(request.clone()));
        },
    );
    println!(
        "median bare {bare:.1} µs, mediated {mediated:.1} µs, ratio {:.2}",
        mediated / bare
    );

    // The same calls against the same state store, with the audit chain written and not.
    let text = std::fs::read_to_string(dir.path().join("warden.toml")).unwrap();
    let no_audit = dir.path().join("warden-no-audit.toml");
    std::fs::write(&no_audit, format!("{text}\n[audit]\nenabled = false\n")).unwrap();
    let unaudited = warden::Runtime::new(warden::Deployment::load(&no_audit).unwrap()).unwrap();
    let unaudited_request = warden::CallRequest::new(
        "hello",
        json!({ "name": "bench" }),
        Caller::Authenticated(
            unaudited
                .authenticate(&Secret::new(assertion::sign_session(&agent, "bench")))
                .unwrap(),
        ),
    );
    assert!(
        rt.block_on(unaudited.call(unaudited_request.clone()))
            .record
            .error
            .is_none()
    );
    let mut group = c.benchmark_group("calls per second");
    group.throughput(Throughput::Elements(1));
    group.bench_function("audit on", |b| {
        b.to_async(&rt).iter(|| runtime.call(request.clone()))
    });
    group.bench_function("audit off", |b| {
        b.to_async(&rt)
            .iter(|| unaudited.call(unaudited_request.clone()))
    });
    group.finish();
    let (on, off) = interleaved_medians(
        || {
            rt.block_on(runtime.call(request.clone()));
        },
        || {
            rt.block_on(unaudited.call(unaudited_request.clone()));
        },
    );
    println!(
        "median audit on {on:.1} µs ({:.0} calls/s), off {off:.1} µs ({:.0} calls/s)",
        1e6 / on,
        1e6 / off
    );

    // On behalf of a user, one loopback request: with a minted credential, and without.
    let delegation = Secret::new(delegation::issue(
        &user,
        "ada",
        "bench",
        &["http-get".into()],
        std::time::Duration::from_secs(3600),
    ));
    let fetch = |url: String| {
        warden::CallRequest::new(
            "http-get",
            json!({ "url": url }),
            Caller::Authenticated(session.clone()),
        )
        .on_behalf_of(delegation.clone())
    };
    let with_credential = fetch(credentialed.url("/data"));
    let without_credential = fetch(plain.url("/data"));
    for request in [&with_credential, &without_credential] {
        let report = rt.block_on(runtime.call(request.clone()));
        assert!(report.record.error.is_none(), "{:?}", report.record.error);
    }
    assert!(
        credentialed.received()[0]
            .headers
            .iter()
            .any(|(k, _)| k == "authorization")
    );
    assert!(
        !plain.received()[0]
            .headers
            .iter()
            .any(|(k, _)| k == "authorization")
    );
    let mut group = c.benchmark_group("call http-get on behalf of a user");
    group.bench_function("minted credential", |b| {
        b.to_async(&rt)
            .iter(|| runtime.call(with_credential.clone()))
    });
    group.bench_function("no credential", |b| {
        b.to_async(&rt)
            .iter(|| runtime.call(without_credential.clone()))
    });
    group.finish();
}

/// Medians (µs) of 3000 runs of `a` and `b`, interleaved so that both see the same machine.
fn interleaved_medians(mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for _ in 0..3000 {
        let started = std::time::Instant::now();
        a();
        first.push(started.elapsed());
        let started = std::time::Instant::now();
        b();
        second.push(started.elapsed());
    }
    let median = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e6
    };
    (median(&mut first), median(&mut second))
}

criterion_group!(benches, calls);
criterion_main!(benches);
