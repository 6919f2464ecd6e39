//! Hostile: every way out of one mount it is told about, and every way to change it when it
//! is read-only. The isolation drill runs it under each tool's grants, with a file placed just
//! outside the mount's host directory (`outside`, by its host path) and symlinks to that file
//! placed inside (`link-rel`, `link-abs`). Each attack reports what each attempt returned; the
//! drill decides what held from the host's side (was the outside file's text read, did the
//! directory change), not from this report.
use host_api::{
    Tool, ToolError,
    serde_json::{Map, Value, json},
};
use hostile_common::preopen;
use wasip2::filesystem::types::{Descriptor, DescriptorFlags, OpenFlags, PathFlags};

struct HostileMount;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Input {
    /// The mount's guest path.
    mount: String,
    /// The host path of the file just outside the mount.
    outside: String,
    /// Another of the tool's mounts, to link and move this mount's files into.
    other: Option<String>,
}

/// Reads `path` below `dir` (following symlinks, as a tool would).
fn read_at(dir: &Descriptor, path: &str) -> String {
    let file = match dir.open_at(
        PathFlags::SYMLINK_FOLLOW,
        path,
        OpenFlags::empty(),
        DescriptorFlags::READ,
    ) {
        Ok(file) => file,
        Err(e) => return format!("open-at {path}: {}", e.name()),
    };
    match file.read(4096, 0) {
        Ok((bytes, _)) => format!("read {path}: {}", String::from_utf8_lossy(&bytes)),
        Err(e) => format!("read {path}: {}", e.name()),
    }
}

/// Reads `path` through the guest's libc (which maps absolute paths onto preopens).
fn read_std(path: &str) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => format!("read {path}: {text}"),
        Err(e) => format!("read {path}: {e}"),
    }
}

fn tried<T, E: std::fmt::Debug>(what: &str, result: Result<T, E>) -> String {
    match result {
        Ok(_) => format!("{what}: succeeded"),
        Err(e) => format!("{what}: {e:?}"),
    }
}

fn attacks(input: &Input) -> Result<Map<String, Value>, String> {
    let dir = preopen(&input.mount)?;
    let mount = input.mount.trim_end_matches('/');
    let outside = &input.outside;
    let name = outside.rsplit('/').next().unwrap_or(outside);
    let mut out = Map::new();
    let mut put = |attack: &str, tries: Vec<String>| {
        out.insert(attack.into(), json!(tries));
    };
    put(
        "dotdot",
        vec![
            read_at(&dir, &format!("../{name}")),
            read_at(&dir, &format!("sub/../../{name}")),
            read_at(&dir, &format!("{}{outside}", "../".repeat(16))),
            read_std(&format!("{mount}/../{name}")),
        ],
    );
    put(
        "absolute",
        vec![read_at(&dir, outside), read_std(outside)],
    );
    put(
        "placed-symlink",
        vec![read_at(&dir, "link-rel"), read_at(&dir, "link-abs")],
    );
    put(
        "made-symlink",
        vec![
            tried("symlink-at made-rel", dir.symlink_at(&format!("../{name}"), "made-rel")),
            read_at(&dir, "made-rel"),
            tried("symlink-at made-abs", dir.symlink_at(outside, "made-abs")),
            read_at(&dir, "made-abs"),
        ],
    );
    put(
        "hard-link",
        vec![
            tried(
                "link-at ../outside",
                dir.link_at(PathFlags::empty(), &format!("../{name}"), &dir, "made-hard"),
            ),
            read_at(&dir, "made-hard"),
        ],
    );
    let writable = DescriptorFlags::READ | DescriptorFlags::WRITE;
    if let Some(other) = &input.other {
        // A hard link in a writable mount to a read-only mount's file would write through.
        let other = preopen(other)?;
        put(
            "cross-mount",
            vec![
                tried(
                    "link-at hello.txt into the other mount",
                    dir.link_at(PathFlags::empty(), "hello.txt", &other, "cross-link"),
                ),
                tried(
                    "write through the link",
                    other
                        .open_at(PathFlags::empty(), "cross-link", OpenFlags::empty(), writable)
                        .and_then(|f| f.write(b"drill", 0)),
                ),
                tried(
                    "rename hello.txt into the other mount",
                    dir.rename_at("hello.txt", &other, "cross-moved"),
                ),
            ],
        );
    }
    put(
        "write",
        vec![
            tried(
                "create drill-new.txt",
                dir.open_at(PathFlags::empty(), "drill-new.txt", OpenFlags::CREATE, writable)
                    .and_then(|f| f.write(b"drill", 0)),
            ),
            tried(
                "overwrite hello.txt",
                dir.open_at(PathFlags::empty(), "hello.txt", OpenFlags::empty(), writable)
                    .and_then(|f| f.write(b"drill", 0)),
            ),
            tried(
                "truncate hello.txt",
                dir.open_at(PathFlags::empty(), "hello.txt", OpenFlags::TRUNCATE, writable),
            ),
            tried("mkdir drill-dir", dir.create_directory_at("drill-dir")),
            tried(
                "rename hello.txt",
                dir.rename_at("hello.txt", &dir, "renamed.txt"),
            ),
            tried("unlink hello.txt", dir.unlink_file_at("hello.txt")),
        ],
    );
    Ok(out)
}

impl Tool for HostileMount {
    type Input = Input;
    type Output = Value;
    const NAME: &'static str = "hostile-mount";
    const DESCRIPTION: &'static str = "Tries every way out of one mount, and to change it.";

    fn invoke(input: Input) -> Result<Value, ToolError> {
        attacks(&input).map(Value::Object).map_err(ToolError::failed)
    }
}

host_api::export_tool!(HostileMount);
