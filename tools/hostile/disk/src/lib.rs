//! Hostile: tries to put more on the disk than its quota allows (1MiB on `/scratch`), in every
//! way `wasi:filesystem` offers, and to plant symlinks. Each attack goes on until the host
//! refuses (or a generous bound passes) and reports, also on stdout (the call fails when the
//! quota is hit, and stdout is kept), how many steps succeeded and the error that stopped it.
use host_api::{
    Tool, ToolError,
    serde_json::{Value, json},
};
use std::io::Write as _;
use wasip2::filesystem::types::{
    Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags, filesystem_error_code,
};
use wasip2::io::streams::{OutputStream, StreamError};

struct HostileDisk;

#[derive(serde::Deserialize)]
struct Input {
    attack: String,
}

const CHUNK: usize = 4096;
/// Twice the quota, in chunks: every attack must be stopped well before this.
const STEPS: usize = 2 * (1 << 20) / CHUNK;

fn scratch() -> Descriptor {
    wasip2::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, path)| path == "/scratch")
        .map(|(dir, _)| dir)
        .expect("/scratch is mounted")
}

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

/// Runs `step` until it fails or `STEPS` steps passed.
fn until_refused(mut step: impl FnMut(usize) -> Result<(), String>) -> Value {
    for i in 0..STEPS {
        if let Err(error) = step(i) {
            return json!({ "steps": i, "error": error });
        }
    }
    json!({ "steps": STEPS, "error": null })
}

fn stream_writes(stream: OutputStream, zeroes: bool) -> Value {
    let chunk = [b'x'; CHUNK];
    until_refused(|_| {
        if zeroes {
            stream.blocking_write_zeroes_and_flush(CHUNK as u64)
        } else {
            stream.blocking_write_and_flush(&chunk)
        }
        .map_err(stream_code)
    })
}

fn attack(name: &str) -> Result<Value, String> {
    let dir = scratch();
    Ok(match name {
        // One write of twice the quota.
        "big-write" => {
            let file = create(&dir, "big")?;
            match file.write(&vec![b'x'; 2 << 20], 0) {
                Ok(n) => json!({ "steps": 1, "error": null, "written": n }),
                Err(e) => json!({ "steps": 0, "error": code(e) }),
            }
        }
        // Many small writes through an output stream, as wasi-libc does.
        "stream-writes" => {
            let file = create(&dir, "stream")?;
            stream_writes(file.write_via_stream(0).map_err(code)?, false)
        }
        "append-writes" => {
            let file = create(&dir, "append")?;
            stream_writes(file.append_via_stream().map_err(code)?, false)
        }
        "zeroes" => {
            let file = create(&dir, "zeroes")?;
            stream_writes(file.write_via_stream(0).map_err(code)?, true)
        }
        // Rust's std over wasi-libc: what a tool author would write.
        "std-writes" => {
            let mut file = std::fs::File::create("/scratch/std").map_err(|e| e.to_string())?;
            until_refused(|_| {
                file.write_all(&[b'x'; CHUNK])
                    .map_err(|e| format!("{:?}: {e}", e.kind()))
            })
        }
        // Grow a file without writing: set-size, and a write far past the end.
        "set-size" => {
            let file = create(&dir, "sized")?;
            match file.set_size(1 << 30) {
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
        "many-files" => until_refused(|i| create(&dir, &format!("f{i}")).map(drop)),
        "many-dirs" => until_refused(|i| dir.create_directory_at(&format!("d{i}")).map_err(code)),
        // Links out of the mount and inside it: none may be created.
        "symlinks" => {
            std::fs::write("/scratch/inside.txt", "inside").map_err(|e| e.to_string())?;
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
    const INPUT_SCHEMA: &'static str =
        r#"{"type":"object","required":["attack"],"properties":{"attack":{"type":"string"}}}"#;

    fn invoke(input: Input) -> Result<Value, ToolError> {
        let out = attack(&input.attack).map_err(ToolError::failed)?;
        println!("{out}");
        Ok(out)
    }
}

host_api::export_tool!(HostileDisk);
