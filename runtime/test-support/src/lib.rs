//! What the demo, the revocation drill, the benchmarks and the tests run against: the tools
//! built from this repository's `tools/` (examples and hostile ones), a loopback HTTP server
//! that records what reaches it, and generated policies at a deployment's scale.
//!
//! Its build script compiles `tools/` for wasm32-wasip2; nothing here is part of the library
//! an orchestrator embeds.

use std::path::{Path, PathBuf};

pub mod loopback;
pub mod postgres;
pub mod synthetic;

/// The tools built from this repository's `tools/`, one directory each with a digest-pinned
/// `tool.toml`.
pub const BUILT_TOOLS_DIR: &str = env!("WARDEN_BUILT_TOOLS");

/// Where the guests of `tools/` are compiled: a Rust tool built with it as its target
/// directory reuses their compiled dependencies.
pub const GUEST_TARGET_DIR: &str = env!("WARDEN_GUEST_TARGET_DIR");

/// A tool built from `tools/`, embedded in the binary that uses it.
#[derive(Debug, Clone, Copy)]
pub struct BuiltTool {
    pub name: &'static str,
    /// The component's file name.
    pub file: &'static str,
    /// Its `tool.toml`, with the component's digest pinned.
    pub manifest: &'static str,
    pub component: &'static [u8],
    /// Its `tests.toml` (`warden test`), "" when it has none.
    pub tests: &'static str,
}

macro_rules! built_tool {
    ($name:literal, $file:literal) => {
        BuiltTool {
            name: $name,
            file: $file,
            manifest: include_str!(concat!(
                env!("WARDEN_BUILT_TOOLS"),
                "/",
                $name,
                "/tool.toml"
            )),
            component: include_bytes!(concat!(env!("WARDEN_BUILT_TOOLS"), "/", $name, "/", $file)),
            tests: include_str!(concat!(
                env!("WARDEN_BUILT_TOOLS"),
                "/",
                $name,
                "/tests.toml"
            )),
        }
    };
}

/// The tools the demo registers.
pub const DEMO_TOOLS: [BuiltTool; 6] = [
    built_tool!("hello", "hello.wasm"),
    built_tool!("read-file", "read_file.wasm"),
    built_tool!("write-note", "write_note.wasm"),
    built_tool!("delete-note", "delete_note.wasm"),
    built_tool!("http-get", "http_get.wasm"),
    built_tool!("hostile-fs", "hostile_fs.wasm"),
];

/// The tool the revocation drill runs: it sends the requests its input lists, one after
/// another.
pub const HOSTILE_HTTP: BuiltTool = built_tool!("hostile-http", "hostile_http.wasm");

/// The hostile tools the isolation drill runs under each tool's grants.
pub const DRILL_TOOLS: [BuiltTool; 10] = [
    built_tool!("hostile-mount", "hostile_mount.wasm"),
    built_tool!("hostile-disk", "hostile_disk.wasm"),
    built_tool!("hostile-egress", "hostile_egress.wasm"),
    built_tool!("hostile-exfil", "hostile_exfil.wasm"),
    built_tool!("hostile-spy", "hostile_spy.wasm"),
    built_tool!("hostile-net", "hostile_net.wasm"),
    built_tool!("hostile-env", "hostile_env.wasm"),
    built_tool!("hostile-memory", "hostile_memory.wasm"),
    built_tool!("hostile-cpu", "hostile_cpu.wasm"),
    built_tool!("hostile-flood", "hostile_flood.wasm"),
];

/// Copies the built tool `name` into `tools_dir/name/` (a deployment's tool directory) and
/// returns that directory.
pub fn copy_built_tool(name: &str, tools_dir: &Path) -> std::io::Result<PathBuf> {
    let to = tools_dir.join(name);
    std::fs::create_dir_all(&to)?;
    for entry in std::fs::read_dir(Path::new(BUILT_TOOLS_DIR).join(name))? {
        let entry = entry?;
        // An empty tests.toml stands for none.
        if entry.metadata()?.len() == 0 {
            continue;
        }
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(to)
}
