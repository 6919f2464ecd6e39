//! Hostile: tries to put more on the disk than its quota allows (1MiB on `/scratch`, or on
//! the mount it is told), in every way `wasi:filesystem` offers, and to plant symlinks. Each attack goes on until the host
//! refuses (or a generous bound passes) and reports, also on stdout (the call fails when the
//! quota is hit, and stdout is kept), how many steps succeeded and the error that stopped it.
use host_api::{
    Tool, ToolError,
    serde_json::{Value, json},
};
use std::io::Write as _;
use hostile_common::preopen;
use wasip2::filesystem::types::{
    Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags, filesystem_error_code,
};
use wasip2::io::streams::{OutputStream, StreamError};

struct HostileDisk;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Input {
    attack: String,
    /// The read-write mount to fill (the isolation drill names each tool's own).
    #[serde(default = "default_mount")]
    mount: String,
    /// Where the attacks end: past the quota (the default is twice `/scratch`'s 1MiB).
    #[serde(default = "default_bytes")]
    bytes: u64,
    /// Where the stream attacks start writing: just below a large quota, so that a few small
    /// writes cross it.
    #[serde(default)]
    start: u64,
}

fn default_bytes() -> u64 {
    2 << 20
}

fn default_mount() -> String {
    "/scratch".into()
}

const CHUNK: usize = 4096;
/// The largest single write: a guest's memory is smaller than a quota may be.
const BIG_WRITE: u64 = 2 << 20;

fn create(dir: &Descriptor, name: &str) -> Result<Descriptor, String> {
    dir.open_at(
        PathFlags::empty(),
        name,
        OpenFlags::CREATE,
        DescriptorFlags::READ | DescriptorFlags::WRITE,
    )
    .map_err(|e| e.name().to_string())
}

fn code(e: ErrorCode) -> String {
    e.name().to_string()
}

fn stream_code(e: StreamError) -> String {
    match e {
        StreamError::LastOperationFailed(e) => filesystem_error_code(&e)
            .map(code)
            .unwrap_or_else(|| format!("stream error: {}", e.to_debug_string())),
        StreamError::Closed => "closed".into(),
    }
}

/// Runs `step` until it fails or `steps` steps passed (every attack must be stopped before:
/// `steps` chunks end past the quota).
fn until_refused(steps: usize, mut step: impl FnMut(usize) -> Result<(), String>) -> Value {
    for i in 0..steps {
        if let Err(error) = step(i) {
            return json!({ "steps": i, "error": error });
        }
    }
    json!({ "steps": steps, "error": null })
}

fn stream_writes(stream: OutputStream, zeroes: bool, steps: usize) -> Value {
    let chunk = [b'x'; CHUNK];
    until_refused(steps, |_| {
        if zeroes {
            stream.blocking_write_zeroes_and_flush(CHUNK as u64)
        } else {
            stream.blocking_write_and_flush(&chunk)
        }
        .map_err(stream_code)
    })
}

fn attack(name: &str, mount: &str, bytes: u64, start: u64) -> Result<Value, String> {
    let dir = preopen(mount)?;
    // A stream from `start` stops at `bytes`, so that a quota that fails lets no more through.
    let steps = usize::try_from(bytes.saturating_sub(start) / CHUNK as u64).unwrap_or(usize::MAX);
    Ok(match name {
        // One write that ends past the quota.
        "big-write" => {
            let file = create(&dir, "big")?;
            let len = bytes.min(BIG_WRITE);
            match file.write(&vec![b'x'; len as usize], bytes - len) {
                Ok(n) => json!({ "steps": 1, "error": null, "written": n }),
                Err(e) => json!({ "steps": 0, "error": code(e) }),
            }
        }
        // Many small writes through an output stream, as wasi-libc does.
        "stream-writes" => {
            let file = create(&dir, "stream")?;
            stream_writes(file.write_via_stream(start).map_err(code)?, false, steps)
        }
        "append-writes" => {
            let file = create(&dir, "append")?;
            stream_writes(file.append_via_stream().map_err(code)?, false, steps)
        }
        "zeroes" => {
            let file = create(&dir, "zeroes")?;
            stream_writes(file.write_via_stream(0).map_err(code)?, true, steps)
        }
        // Rust's std over wasi-libc: what a tool author would write.
        "std-writes" => {
            let mut file = std::fs::File::create(format!("{mount}/std")).map_err(|e| e.to_string())?;
            until_refused(steps, |_| {
                file.write_all(&[b'x'; CHUNK])
                    .map_err(|e| format!("{:?}: {e}", e.kind()))
            })
        }
        // Grow a file without writing: set-size, and a write far past the end.
        "set-size" => {
            let file = create(&dir, "sized")?;
            match file.set_size(bytes.max(1 << 30)) {
                Ok(()) => json!({ "steps": 1, "error": null }),
                Err(e) => json!({ "steps": 0, "error": code(e) }),
            }
        }
        "seek-write" => {
            let file = create(&dir, "sparse")?;
            match file.write(b"x", 1 << 30) {
                Ok(_) => json!({ "steps": 1, "error": null }),
                Err(e) => json!({ "steps": 0, "error": code(e) }),
            }
        }
        // Many empty files, many directories.
        "many-files" => until_refused(steps, |i| create(&dir, &format!("f{i}")).map(drop)),
        "many-dirs" => until_refused(steps, |i| dir.create_directory_at(&format!("d{i}")).map_err(code)),
        // Links out of the mount and inside it: none may be created.
        "symlinks" => {
            std::fs::write(format!("{mount}/inside.txt"), "inside").map_err(|e| e.to_string())?;
            let result = |r: Result<(), ErrorCode>| match r {
                Ok(()) => Value::String("created".into()),
                Err(e) => Value::String(code(e)),
            };
            json!({
                "absolute": result(dir.symlink_at("/etc/passwd", "abs-link")),
                "relative": result(dir.symlink_at("../outside/secret.txt", "rel-link")),
                "inside": result(dir.symlink_at("inside.txt", "inside-link")),
            })
        }
        other => return Err(format!("unknown attack {other}")),
    })
}

impl Tool for HostileDisk {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "hostile-disk";
    const DESCRIPTION: &'static str = "Tries to fill the disk past its quota and to plant symlinks.";

    fn invoke(input: Input) -> Result<Value, ToolError> {
        let out = attack(&input.attack, &input.mount, input.bytes, input.start).map_err(ToolError::failed)?;
        println!("{out}");
        Ok(out)
    }
}

host_api::export_tool!(HostileDisk);
