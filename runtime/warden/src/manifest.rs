//! Tool manifests (`tool.toml` beside the component): what a tool asks for.
//!
//! Parsing and validation only; no wasmtime here. Policy and the deployment decide what of
//! this is granted; the sandbox gets the intersection.

use crate::sandbox::egress::EgressRule;
use crate::units::{ByteSize, serde_text};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::time::Duration;

pub const MANIFEST_FILE: &str = "tool.toml";

/// The largest memory any tool may ask for; the pooling allocator reserves this per slot.
pub const MAX_MEMORY: ByteSize = ByteSize(1 << 30);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest disk quota any tool may ask for, per call.
pub const MAX_DISK: ByteSize = ByteSize(16 << 30);

#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub name: String,
    /// File name of the component, beside the manifest.
    pub component: String,
    /// Pinned digest of the component; a different file is refused.
    pub digest: Option<Digest>,
    pub kind: ToolKind,
    pub impact: Impact,
    pub sensitivity: Sensitivity,
    /// The tool brings content nobody vetted into the session (web pages, mail…): every
    /// later decision of the session sees it as tainted.
    pub ingests_untrusted: bool,
    pub limits: Limits,
    pub fs: Vec<MountRequest>,
    pub egress: Vec<EgressRule>,
}

/// Which world the component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ToolKind {
    /// `warden:tool/tool`: `describe` and `invoke` exports.
    #[default]
    Tool,
    /// `wasi:cli/command`: JSON on stdin, JSON on stdout, exit status as the outcome.
    Command,
}

impl ToolKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolKind::Tool => "tool",
            ToolKind::Command => "command",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Impact {
    Read,
    Write,
    Irreversible,
}

impl Impact {
    /// As written in manifests and seen by policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Impact::Read => "read",
            Impact::Write => "write",
            Impact::Irreversible => "irreversible",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sensitivity {
    Public,
    Internal,
    Confidential,
    Restricted,
}

impl Sensitivity {
    /// As written in manifests and seen by policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Public => "public",
            Sensitivity::Internal => "internal",
            Sensitivity::Confidential => "confidential",
            Sensitivity::Restricted => "restricted",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory the tool may grow to.
    #[serde(
        deserialize_with = "serde_text::de_size",
        serialize_with = "serde_text::ser_size"
    )]
    pub memory: ByteSize,
    /// Wall time of the whole call, counted from when it is accepted.
    #[serde(
        deserialize_with = "serde_text::de_duration",
        serialize_with = "serde_text::ser_duration"
    )]
    pub timeout: Duration,
    /// CPU time the tool's wasm may run for (`Limits::cpu_budget`).
    #[serde(
        deserialize_with = "serde_text::de_opt_duration",
        serialize_with = "serde_text::ser_opt_duration"
    )]
    pub cpu: Option<Duration>,
    /// Size of the tool's output (JSON text).
    #[serde(
        deserialize_with = "serde_text::de_size",
        serialize_with = "serde_text::ser_size"
    )]
    pub output: ByteSize,
    /// Bytes of stdout and of stderr kept; the rest is counted and dropped.
    #[serde(
        deserialize_with = "serde_text::de_size",
        serialize_with = "serde_text::ser_size"
    )]
    pub stdio: ByteSize,
    /// Outgoing HTTP requests per call.
    pub egress_requests: u32,
    /// Response body bytes per call, over all requests.
    #[serde(
        deserialize_with = "serde_text::de_size",
        serialize_with = "serde_text::ser_size"
    )]
    pub response_bytes: ByteSize,
    /// What one call may add to its read-write mounts: bytes written past a file's end and
    /// files or directories created (`sandbox::fs::DiskQuota`). Enforced while the tool writes.
    #[serde(
        deserialize_with = "serde_text::de_size",
        serialize_with = "serde_text::ser_size"
    )]
    pub disk: ByteSize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: ByteSize(64 << 20),
            timeout: Duration::from_secs(10),
            cpu: None,
            output: ByteSize(1 << 20),
            stdio: ByteSize(64 << 10),
            egress_requests: 16,
            response_bytes: ByteSize(8 << 20),
            disk: ByteSize(64 << 20),
        }
    }
}

impl Limits {
    /// The CPU budget: `cpu`, or else half the timeout, so that a tool that computes for its
    /// whole time is told apart (`cpu_limit`) from one that waits (`timeout`).
    pub fn cpu_budget(&self) -> Duration {
        self.cpu.unwrap_or(self.timeout / 2)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountMode {
    Ro,
    Rw,
}

/// A directory the tool wants to see at `guest`. The host directory is the deployment's choice.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountRequest {
    pub guest: String,
    pub mode: MountMode,
}

/// `sha256:<64 hex digits>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part, safe to use in file names.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl std::str::FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("sha256:") {
            Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(Digest(s.to_ascii_lowercase()))
            }
            _ => Err(format!("`{s}` is not a digest like sha256:<64 hex digits>")),
        }
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The manifest as written; `Manifest::parse` checks it and turns it into the typed form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    component: String,
    digest: Option<String>,
    #[serde(default)]
    kind: ToolKind,
    impact: Impact,
    sensitivity: Sensitivity,
    #[serde(default)]
    ingests_untrusted: bool,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    fs: Vec<MountRequest>,
    #[serde(default)]
    egress: Vec<RawEgress>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    url: String,
    #[serde(default = "default_methods")]
    methods: Vec<String>,
    #[serde(default)]
    allow_private: bool,
    credential: Option<String>,
}

fn default_methods() -> Vec<String> {
    vec!["GET".into()]
}

/// A manifest that could not be accepted. The message is one line and names the file and field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ManifestError {
    pub file: String,
    pub message: String,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
            file: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Manifest::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, file: &str) -> Result<Manifest, ManifestError> {
        let error = |message: String| ManifestError {
            file: file.to_string(),
            message,
        };
        let raw: RawManifest = toml::from_str(text).map_err(|e| error(toml_error(text, &e)))?;

        if !is_tool_name(&raw.name) {
            return Err(error(format!(
                "field `name`: `{}` must be 1-64 lowercase letters, digits or '-'",
                raw.name
            )));
        }
        if raw.component.is_empty()
            || raw.component.contains(['/', '\\'])
            || raw.component.starts_with('.')
            || !raw.component.ends_with(".wasm")
        {
            return Err(error(format!(
                "field `component`: `{}` must be a `.wasm` file name beside the manifest",
                raw.component
            )));
        }
        let digest = raw
            .digest
            .map(|d| d.parse::<Digest>())
            .transpose()
            .map_err(|e| error(format!("field `digest`: {e}")))?;
        validate_limits(&raw.limits).map_err(error)?;

        for (i, mount) in raw.fs.iter().enumerate() {
            validate_guest_path(&mount.guest)
                .map_err(|e| error(format!("field `fs[{i}].guest`: {e}")))?;
            if raw.fs[..i].iter().any(|m| m.guest == mount.guest) {
                return Err(error(format!(
                    "field `fs[{i}].guest`: `{}` is mounted twice",
                    mount.guest
                )));
            }
        }
        let egress = raw
            .egress
            .iter()
            .enumerate()
            .map(|(i, r)| {
                EgressRule::new(&r.url, &r.methods, r.allow_private, r.credential.clone())
                    .map_err(|e| error(format!("field `egress[{i}]`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Manifest {
            name: raw.name,
            component: raw.component,
            digest,
            kind: raw.kind,
            impact: raw.impact,
            sensitivity: raw.sensitivity,
            ingests_untrusted: raw.ingests_untrusted,
            limits: raw.limits,
            fs: raw.fs,
            egress,
        })
    }
}

pub fn is_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

fn validate_limits(l: &Limits) -> Result<(), String> {
    if l.memory < ByteSize(1 << 20) || l.memory > MAX_MEMORY {
        return Err(format!(
            "field `limits.memory`: {} must be between 1MiB and {MAX_MEMORY}",
            l.memory
        ));
    }
    if l.timeout < Duration::from_millis(10) || l.timeout > MAX_TIMEOUT {
        return Err("field `limits.timeout`: must be between 10ms and 5m".into());
    }
    if l.cpu
        .is_some_and(|cpu| cpu < Duration::from_millis(10) || cpu > MAX_TIMEOUT)
    {
        return Err("field `limits.cpu`: must be between 10ms and 5m".into());
    }
    if l.output.0 == 0 || l.output > ByteSize(64 << 20) {
        return Err(format!(
            "field `limits.output`: {} must be between 1B and 64MiB",
            l.output
        ));
    }
    if l.stdio > ByteSize(16 << 20) {
        return Err(format!(
            "field `limits.stdio`: {} must be at most 16MiB",
            l.stdio
        ));
    }
    if l.egress_requests > 1000 {
        return Err("field `limits.egress_requests`: must be at most 1000".into());
    }
    if l.response_bytes > ByteSize(1 << 30) {
        return Err("field `limits.response_bytes`: must be at most 1GiB".into());
    }
    if l.disk > MAX_DISK {
        return Err(format!(
            "field `limits.disk`: {} must be at most {MAX_DISK}",
            l.disk
        ));
    }
    Ok(())
}

fn validate_guest_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path == "/" {
        return Err(format!("`{path}` must be an absolute directory below /"));
    }
    if path
        .split('/')
        .any(|seg| seg == ".." || seg == "." || seg.contains('\\'))
    {
        return Err(format!("`{path}` must not contain `.` or `..` segments"));
    }
    Ok(())
}

/// The 1-based line of `text` that byte `offset` falls on (for error messages).
pub(crate) fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// One line: the message, the line number and the offending line's text (which names the field).
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line_no = line_at(text, span.start);
            let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
            format!("{} (at `{line}`)", toml_error_unquoted(text, e))
        }
        None => toml_error_unquoted(text, e),
    }
}

/// The same without the line's text: for a file whose lines may hold a token (a URL's
/// query in `warden.toml`), so that the error does not repeat it.
pub fn toml_error_unquoted(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => format!("line {}: {message}", line_at(text, span.start)),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_are_the_manifest_names() {
        for impact in [Impact::Read, Impact::Write, Impact::Irreversible] {
            assert_eq!(serde_json::to_value(impact).unwrap(), impact.as_str());
        }
        use Sensitivity::*;
        for sensitivity in [Public, Internal, Confidential, Restricted] {
            assert_eq!(
                serde_json::to_value(sensitivity).unwrap(),
                sensitivity.as_str()
            );
        }
    }

    const GOOD: &str = r#"
name = "issue-tracker"
component = "issue_tracker.wasm"
digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
impact = "write"
sensitivity = "internal"

[limits]
memory = "64MiB"
timeout = "5s"

[[fs]]
guest = "/data"
mode = "ro"

[[egress]]
url = "https://api.example.com/v1/issues/*"
methods = ["GET", "POST"]
"#;

    #[test]
    fn parses_a_full_manifest() {
        let m = Manifest::parse(GOOD, "tool.toml").unwrap();
        assert_eq!(m.name, "issue-tracker");
        assert_eq!(m.impact, Impact::Write);
        assert_eq!(m.limits.memory, ByteSize(64 << 20));
        assert_eq!(m.limits.output, Limits::default().output);
        assert_eq!(m.fs[0].mode, MountMode::Ro);
        assert_eq!(m.egress.len(), 1);
        assert_eq!(m.kind, ToolKind::Tool);
    }

    fn error_of(text: &str) -> String {
        Manifest::parse(text, "x/tool.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_are_one_line_and_name_file_and_field() {
        let cases = [
            (GOOD.replace("64MiB", "64 lots"), "memory"),
            (
                GOOD.replace("impact = \"write\"", "impact = \"destroy\""),
                "impact",
            ),
            (
                GOOD.replace("name = \"issue-tracker\"", "name = \"Bad Name\""),
                "name",
            ),
            (GOOD.replace("/data", "data"), "fs[0].guest"),
            (GOOD.replace("/data", "/data/../etc"), "fs[0].guest"),
            (GOOD.replace("sha256:0000", "md5:0000"), "digest"),
            (GOOD.replace("https://api", "ftp://api"), "egress[0]"),
            (GOOD.replace("\"POST\"", "\"BREW\""), "egress[0]"),
            (
                GOOD.replace("timeout = \"5s\"", "timeout = \"1h\""),
                "timeout",
            ),
            (
                GOOD.replace("[limits]", "[limits]\nmemroy = \"1MiB\""),
                "memroy",
            ),
            (
                GOOD.replace("[limits]", "[limits]\ncpu = \"10m\""),
                "limits.cpu",
            ),
            (
                GOOD.replace("memory = \"64MiB\"", "memory = \"8GiB\""),
                "limits.memory",
            ),
            ("name = ".to_string(), "x/tool.toml"),
        ];
        for (text, field) in cases {
            let message = error_of(&text);
            assert!(message.starts_with("x/tool.toml: "), "{message}");
            assert!(message.contains(field), "{field} not in: {message}");
            assert!(!message.contains('\n'), "multi-line: {message}");
        }
    }

    #[test]
    fn digest_round_trip() {
        let d = Digest::of(b"hello");
        assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
        assert_eq!(d.hex().len(), 64);
    }
}
