//! The wasmtime side that lives as long as the process: one `Engine`, one `Linker`, an epoch
//! ticker, and a compile cache on disk keyed by component digest and engine configuration.
//! Per call, only a fresh `Store` is made (`sandbox::new_store`).

use crate::manifest::{Digest, MAX_MEMORY, ToolKind};
use crate::sandbox::{CallState, limits};
use anyhow::{Context as _, Result};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::ToolPre;

/// How often the epoch advances; CPU deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A component linked against everything Warden provides, ready to instantiate.
#[derive(Clone)]
pub enum Prepared {
    Tool(ToolPre<CallState>),
    Command(wasmtime_wasi::p2::bindings::CommandPre<CallState>),
}

impl Prepared {
    pub fn engine(&self) -> &wasmtime::Engine {
        match self {
            Prepared::Tool(pre) => pre.engine(),
            Prepared::Command(pre) => pre.engine(),
        }
    }
}

pub struct Engine {
    engine: wasmtime::Engine,
    linker: Linker<CallState>,
    cache_dir: Option<PathBuf>,
    /// Distinguishes compiled artifacts of different wasmtime builds or settings.
    config_hash: String,
}

impl Engine {
    /// `cache_dir`: where compiled components are kept between processes (None: in memory only).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Engine> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(64)
            .total_core_instances(640)
            .total_memories(64)
            .total_tables(640)
            .total_stacks(64)
            .max_memory_size(MAX_MEMORY.0 as usize)
            // One call never takes more than its share of the slots: a component with more
            // is refused when it is compiled.
            .max_core_instances_per_component(limits::MAX_INSTANCES)
            .max_memories_per_component(limits::MAX_MEMORIES)
            .max_tables_per_component(limits::MAX_TABLES);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = wasmtime::Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("creating the wasmtime engine")?;

        // The ticker holds only a weak reference, so it ends when the engine is dropped.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("warden-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .context("starting the epoch ticker")?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // The filesystem with the call's disk quota and no symlinks, in place of wasmtime-wasi's.
        crate::sandbox::filesystem::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        crate::bindings::warden::tool::context::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Engine {
            engine,
            linker,
            cache_dir,
            config_hash: format!("{:016x}", hasher.finish()),
        })
    }

    /// Compiles `bytes` (whose digest is `digest`), or loads the compiled form from the cache.
    /// `store`: write a freshly compiled component to the cache.
    pub fn compile(&self, bytes: &[u8], digest: &Digest, store: bool) -> Result<Component> {
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, bytes).map_err(anyhow::Error::from);
        };
        let cached = dir.join(format!("{}-{}.cwasm", digest.hex(), self.config_hash));
        if cached.exists() {
            // SAFETY: the file was written by `Component::serialize` of this same engine
            // configuration (the name carries its hash) into Warden's own state directory.
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(file = %cached.display(), "ignoring unusable compile cache entry: {e}")
                }
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(anyhow::Error::from)?;
        if store {
            self.cache(&component, digest);
        }
        Ok(component)
    }

    /// The directory compiled components are kept in, if any.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }

    /// Keeps a compiled component for later processes. Best effort: a failure costs a
    /// recompilation later, nothing else.
    pub fn cache(&self, component: &Component, digest: &Digest) {
        let Some(dir) = &self.cache_dir else { return };
        let cached = dir.join(format!("{}-{}.cwasm", digest.hex(), self.config_hash));
        let written = component
            .serialize()
            .map_err(anyhow::Error::from)
            .and_then(|bytes| crate::files::write_atomically(&cached, &bytes));
        if let Err(e) = written {
            tracing::warn!(file = %cached.display(), "cannot write compile cache: {e:#}");
        }
    }

    /// Links `component` against Warden's host interfaces. Fails, naming the import, if the
    /// component imports anything Warden does not provide or lacks the world's exports.
    pub fn prepare(&self, component: &Component, kind: ToolKind) -> Result<Prepared> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)?;
        Ok(match kind {
            ToolKind::Tool => {
                Prepared::Tool(ToolPre::new(pre).map_err(anyhow::Error::from).context(
                    "the component does not export the warden:tool/tool world (describe, invoke)",
                )?)
            }
            ToolKind::Command => Prepared::Command(
                wasmtime_wasi::p2::bindings::CommandPre::new(pre)
                    .map_err(anyhow::Error::from)
                    .context("the component is not a wasi:cli/command")?,
            ),
        })
    }
}

/// Removes the compiled forms of `digest` from the cache in `dir` (of every engine
/// configuration).
pub fn evict_compiled(dir: &Path, digest: &Digest) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{}-", digest.hex());
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix)
            && let Err(e) = std::fs::remove_file(entry.path())
        {
            tracing::warn!(file = %entry.path().display(), "cannot evict a revoked component: {e}");
        }
    }
}
