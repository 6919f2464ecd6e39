//! A throwaway deployment for one test: a temporary directory with `warden.toml`, host
//! directories for every mount, a secret file outside all mounts, and copies of the tools
//! built from `tools/` (whose egress rules a test may replace with loopback ones).
#![allow(dead_code)] // each test file uses a different part of this

use ed25519_dalek::SigningKey;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use warden::call::Caller;
use warden::credentials::Secret;
use warden::identity::{assertion, keys};
use warden::{CallReport, CallRequest, Deployment, Runtime};

pub const AGENT: &str = "tester";

/// Fixed keys, so that every fixture's deployment registers the same principals.
pub fn agent_key(name: &str) -> SigningKey {
    let seed = match name {
        "tester" => 1,
        "limited" => 2,
        "alice" => 3,
        "bob" => 4,
        "carol" => 5,
        _ => 99,
    };
    SigningKey::from_bytes(&[seed; 32])
}
/// Stands for any secret the host holds; no tool may ever see it.
pub const SECRET: &str = "s3cr3t-value-that-must-never-leak";

pub struct Fixture {
    pub dir: tempfile::TempDir,
}

const DEPLOYMENT: &str = r#"
state_dir = "state"
tool_dirs = ["tools"]

[agents.tester]
public_key = "TESTER_KEY"
owner = "alice"
trust = "high"

[agents.limited]
public_key = "LIMITED_KEY"

[users.alice]
public_key = "ALICE_KEY"

[[mounts]]
tool = "read-file"
guest = "/data"
host = "data"

[[mounts]]
tool = "write-note"
guest = "/notes"
host = "notes"

[[mounts]]
tool = "delete-note"
guest = "/notes"
host = "notes"

[[mounts]]
tool = "hostile-fs"
guest = "/data"
host = "data"

[[mounts]]
tool = "hostile-spy"
guest = "/data"
host = "data"

[[mounts]]
tool = "hostile-fs"
guest = "/scratch"
host = "scratch"
"#;

/// The fixture's policies: `tester` may invoke any tool, `limited` only `hello`, and every
/// request a manifest asks for may be sent.
pub const POLICIES: &str = r#"
@id("tester-invokes-anything")
permit(principal == Agent::"tester", action == Action::"invoke", resource);

@id("limited-says-hello")
permit(principal == Agent::"limited", action == Action::"invoke", resource == Tool::"hello");

@id("egress-as-manifests-ask")
permit(principal, action == Action::"egress", resource);
"#;

impl Fixture {
    /// A deployment with every built tool registered as shipped.
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in [
            "data", "notes", "scratch", "outside", "tools", "keys", "policies",
        ] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let mut deployment = DEPLOYMENT.to_string();
        for (placeholder, name) in [
            ("TESTER_KEY", "tester"),
            ("LIMITED_KEY", "limited"),
            ("ALICE_KEY", "alice"),
        ] {
            let key = agent_key(name);
            deployment =
                deployment.replace(placeholder, &keys::format_public(&key.verifying_key()));
            keys::write_private(&root.join(format!("keys/{name}.key")), &key).unwrap();
        }
        std::fs::write(root.join("warden.toml"), deployment).unwrap();
        std::fs::write(root.join("policies/base.cedar"), POLICIES).unwrap();
        std::fs::write(root.join("data/hello.txt"), "hello from the data mount\n").unwrap();
        std::fs::write(root.join("outside/secret.txt"), SECRET).unwrap();
        std::fs::write(root.join("secret.txt"), SECRET).unwrap();
        let fixture = Fixture { dir };
        for entry in std::fs::read_dir(warden_test_support::BUILT_TOOLS_DIR).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            fixture.install_tool(&name, None);
        }
        fixture
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("warden.toml")
    }

    pub fn key_file(&self, name: &str) -> PathBuf {
        self.path().join(format!("keys/{name}.key"))
    }

    /// Appends TOML to the deployment (credentials, secrets, users…).
    pub fn extend_deployment(&self, toml: &str) {
        edit(&self.config(), |text| format!("{text}\n{toml}\n"));
    }

    /// Copies a built tool into the deployment. With `egress`, the manifest's `[[egress]]`
    /// tables are replaced by the given TOML.
    pub fn install_tool(&self, name: &str, egress: Option<&str>) {
        let to = copy_built_tool(name, &self.path().join("tools"));
        if let Some(egress) = egress {
            let manifest = std::fs::read_to_string(to.join("tool.toml")).unwrap();
            let kept = manifest.split("[[egress]]").next().unwrap();
            std::fs::write(to.join("tool.toml"), format!("{kept}\n{egress}\n")).unwrap();
        }
    }

    /// Replaces the policy directory's contents with `files` (name, text).
    pub fn set_policies(&self, files: &[(&str, &str)]) {
        let dir = self.path().join("policies");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    /// The example policy directory as shipped, with `extra` files beside it.
    pub fn set_example_policies(&self, extra: &[(&str, &str)]) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies");
        let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&path).unwrap())
            })
            .collect();
        files.extend(extra.iter().map(|(n, t)| (n.to_string(), t.to_string())));
        let borrowed: Vec<(&str, &str)> = files
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        self.set_policies(&borrowed);
    }

    pub fn runtime(&self) -> Runtime {
        Runtime::new(Deployment::load(&self.config()).unwrap()).unwrap()
    }

    /// `warden call TOOL --agent tester --input INPUT`, to which a test may add arguments.
    pub fn call_cmd(&self, tool: &str, input: &str) -> Command {
        let mut cmd = self.cli();
        cmd.args(["call", tool, "--agent", AGENT, "--input", input]);
        cmd
    }

    /// Runs `warden call TOOL --agent tester --input INPUT EXTRA...`.
    pub fn call_cli(&self, tool: &str, input: &str, extra: &[&str]) -> Output {
        self.call_cmd(tool, input).args(extra).output().unwrap()
    }

    /// Runs `warden ARGS` against this deployment.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cli().args(args).output().unwrap()
    }

    /// The `warden` binary, pointed at this deployment, signing as `tester` by default.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
        cmd.arg("--config")
            .arg(self.config())
            .env_remove("WARDEN_LOG")
            .env("WARDEN_AGENT_KEY", self.key_file(AGENT));
        cmd
    }
}

/// A signed request from `agent` (optionally on behalf of a delegation).
pub fn request(
    agent: &str,
    tool: &str,
    input: serde_json::Value,
    on_behalf_of: Option<&str>,
) -> CallRequest {
    let token = assertion::sign(&agent_key(agent), agent, tool, &input);
    CallRequest::new(tool, input, Caller::Assertion(Secret::new(token)))
        .on_behalf_of(on_behalf_of.map(Secret::new))
}

/// An `[[egress]]` rule for everything under `origin` (a loopback server, so private
/// addresses are allowed), with `methods` (empty: the default, GET) and a credential.
pub fn loopback_rule(origin: &str, methods: &[&str], credential: Option<&str>) -> String {
    let mut rule = format!("[[egress]]\nurl = \"{origin}/*\"\nallow_private = true\n");
    if !methods.is_empty() {
        rule.push_str(&format!("methods = {methods:?}\n"));
    }
    if let Some(name) = credential {
        rule.push_str(&format!("credential = \"{name}\"\n"));
    }
    rule
}

/// `http-get`, allowed to reach `origin` (a loopback server) with the minted credential
/// `upstream` (audience `origin`, 5 minutes).
pub fn install_minted_http_get(f: &Fixture, origin: &str) {
    f.extend_deployment(&format!(
        "[credentials.upstream]\naudience = \"{origin}\"\ntools = [\"http-get\"]\nlifetime = \"5m\"\n"
    ));
    f.install_tool(
        "http-get",
        Some(&loopback_rule(origin, &[], Some("upstream"))),
    );
}

/// The bearer tokens a server received.
pub fn tokens(server: &warden_test_support::loopback::LoopbackServer) -> Vec<String> {
    server
        .received()
        .iter()
        .filter_map(|r| r.headers.iter().find(|(k, _)| k == "authorization"))
        .map(|(_, v)| v.trim_start_matches("Bearer ").to_string())
        .collect()
}

/// Copies a tool built from `tools/` into `<into>/<name>` and returns that directory.
pub fn copy_built_tool(name: &str, into: &Path) -> PathBuf {
    warden_test_support::copy_built_tool(name, into).unwrap()
}

pub async fn call(runtime: &Runtime, tool: &str, input: serde_json::Value) -> CallReport {
    runtime.call(request(AGENT, tool, input, None)).await
}

/// The output of a call that must have succeeded.
pub fn ok(report: &CallReport) -> &serde_json::Value {
    assert!(
        report.record.error.is_none(),
        "call failed: {:?}",
        report.record.error
    );
    report.output.as_ref().unwrap()
}

/// The error kind of a call that must have failed.
pub fn failed(report: &CallReport) -> warden::ErrorKind {
    report
        .record
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("call succeeded: {:?}", report.output))
        .kind
}

/// Rewrites a file in place (a manifest a test spoils or narrows).
pub fn edit(path: &Path, change: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, change(text)).unwrap();
}

/// The process exited with `code`; otherwise fail showing what it printed.
pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{}{}",
        stdout(output),
        stderr(output)
    );
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every file under `dir`, recursively (symlinks listed, not followed).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// A JUnit file read with Python's standard XML parser, checked against what the JUnit
/// schema requires and what CI readers use: the counts, and each case's names and time.
pub fn parse_junit(file: &Path) -> serde_json::Value {
    let script = r#"
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "testsuites", root.tag
suites = []
for suite in root.findall("testsuite"):
    cases = suite.findall("testcase")
    for attr in ("name", "tests", "failures", "errors", "skipped", "time"):
        assert attr in suite.attrib, attr
    assert int(suite.get("tests")) == len(cases)
    assert int(suite.get("failures")) == sum(1 for c in cases if c.find("failure") is not None)
    assert int(suite.get("skipped")) == sum(1 for c in cases if c.find("skipped") is not None)
    for case in cases:
        assert case.get("name") and case.get("classname"), case.attrib
        float(case.get("time"))
    suites.append({"name": suite.get("name"), "tests": len(cases),
                   "failures": int(suite.get("failures")), "skipped": int(suite.get("skipped")),
                   "cases": [c.get("name") for c in cases]})
print(json.dumps({"tests": int(root.get("tests")), "failures": int(root.get("failures")), "suites": suites}))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(file)
        .output()
        .expect("python3 runs");
    assert_exit(&out, 0);
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// A `warden serve` (or `warden mcp --http`) process, killed when dropped.
pub struct Node {
    pub child: std::process::Child,
    /// Its MCP endpoint (`http://ADDR/mcp`).
    pub url: String,
    /// Its approval inbox's origin, if it serves one.
    pub inbox: Option<String>,
    /// What it writes to stderr after the line that announces its address.
    said: Option<std::thread::JoinHandle<String>>,
}

impl Node {
    /// Starts `cli` (a `warden serve` or `warden mcp --http` command) and waits for its address.
    pub fn start(mut cli: Command) -> Node {
        use std::io::BufRead as _;
        let mut child = cli.stderr(std::process::Stdio::piped()).spawn().unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let line = lines.next().unwrap().unwrap();
        let after = |said: &str| {
            line.split(said).nth(1).map(|rest| {
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches([';', '/'])
                    .to_string()
            })
        };
        let url = after(" at ").unwrap_or_else(|| panic!("no address in: {line}"));
        let inbox = after("approval inbox at ");
        let said =
            std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
        Node {
            child,
            url,
            inbox,
            said: Some(said),
        }
    }

    /// `http://ADDR`.
    pub fn base(&self) -> &str {
        self.url.trim_end_matches("/mcp")
    }

    /// The status code of `GET path`.
    pub fn status(&self, path: &str) -> u16 {
        self.get(path).0
    }

    /// The status code and body of `GET path` (status 0: no connection).
    pub fn get(&self, path: &str) -> (u16, String) {
        use std::io::{Read as _, Write as _};
        let address = self.base().trim_start_matches("http://");
        let Ok(mut stream) = std::net::TcpStream::connect(address) else {
            return (0, String::new());
        };
        let _ = write!(
            stream,
            "GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n"
        );
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, body.to_string())
    }

    /// Everything it said on stderr, once it has exited.
    pub fn said(&mut self) -> String {
        self.said
            .take()
            .map(|said| said.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw HTTP/1.1 request to `origin` (`http://host:port`) with a JSON body: (status,
/// lowercased head, body).
pub fn http_request(
    origin: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> (u16, String, String) {
    let body = body.map(serde_json::Value::to_string).unwrap_or_default();
    http_raw(origin, method, path, headers, &body)
}

/// The same with any body.
pub fn http_raw(
    origin: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use std::io::{Read as _, Write as _};
    let address = origin.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(name, _)| *name == "host") {
        head.push_str(&format!("host: {address}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    write!(stream, "{head}\r\n{body}").unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_lowercase(), body.to_string())
}

/// Whether `programs` are all on PATH. Without them the test `what` is skipped loudly, or
/// fails when `CI=true` (`.ci/run` installs them).
pub fn installed(programs: &[&str], what: &str) -> bool {
    let found = programs.iter().all(|program| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
    });
    if !found {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "CI=true and {programs:?} are not installed for {what}"
        );
        eprintln!("\n*** SKIPPED: {what}, for want of {programs:?} (see .ci/run) ***\n");
    }
    found
}
