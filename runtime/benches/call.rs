//! A warm mediated call of `hello` (fresh Store, instantiate, invoke, with the decision,
//! schema check, egress hook, limits and stdio capture installed) against a bare wasmtime
//! instantiate + invoke of the same component, in the same run.
//!
//! Run: `cargo bench -p warden --bench call`. The README records the medians and the ratio.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use std::path::Path;
use warden::engine::{CallContext, ToolPre, warden::tool::context};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

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

fn deployment() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("tools/hello");
    std::fs::create_dir_all(&tool).unwrap();
    for entry in std::fs::read_dir(Path::new(warden::BUILT_TOOLS_DIR).join("hello")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tool.join(entry.file_name())).unwrap();
    }
    std::fs::write(
        dir.path().join("warden.toml"),
        "tool_dirs = [\"tools\"]\n[agents.bench]\ntools = [\"hello\"]\n",
    )
    .unwrap();
    dir
}

fn calls(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = deployment();
    let runtime =
        warden::Runtime::new(warden::Deployment::load(&dir.path().join("warden.toml")).unwrap())
            .unwrap();
    let request = warden::CallRequest {
        tool: "hello".into(),
        agent: "bench".into(),
        input: json!({ "name": "bench" }),
    };
    let first = rt.block_on(runtime.call(request.clone()));
    assert!(first.error.is_none(), "{:?}", first.error);

    let engine = Engine::default();
    let mut linker = Linker::<Bare>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    context::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).unwrap();
    let component = Component::from_file(
        &engine,
        Path::new(warden::BUILT_TOOLS_DIR).join("hello/hello.wasm"),
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
            debug_assert!(report.error.is_none());
            report
        })
    });
    group.finish();

    // The figure the README states: medians of interleaved runs, and their ratio.
    let (mut bare, mut mediated) = (Vec::new(), Vec::new());
    for _ in 0..3000 {
        let started = std::time::Instant::now();
        rt.block_on(bare_call(&engine, &pre, &input));
        bare.push(started.elapsed());
        let started = std::time::Instant::now();
        rt.block_on(runtime.call(request.clone()));
        mediated.push(started.elapsed());
    }
    let median = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e6
    };
    let (bare, mediated) = (median(&mut bare), median(&mut mediated));
    println!(
        "median bare {bare:.1} µs, mediated {mediated:.1} µs, ratio {:.2}",
        mediated / bare
    );
}

criterion_group!(benches, calls);
criterion_main!(benches);
