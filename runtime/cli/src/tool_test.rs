//! `warden test DIR`: a tool author's own cases (`tests.toml` beside `tool.toml`), each run
//! through the whole pipeline in a stand-in deployment made from the tool's manifest
//! (`crate::standin`): its limits, its mounts (empty directories the case fills), its egress
//! rules (loopback servers that answer as the case says), throwaway credentials.
//!
//! ```toml
//! [[case]]
//! name = "greets by name"
//! input = { name = "Ada" }
//! output = { greeting = "Hello, Ada!" }   # objects: at least these keys; else equal
//!
//! [[case]]
//! name = "reads a file"
//! input = { path = "welcome.txt" }
//! files = { "/data/welcome.txt" = "hi" }  # written into the tool's mounts first
//! output = { content = "hi" }
//!
//! [[case]]
//! name = "fetches"
//! input = { url = "{upstream}/v1/items" } # {upstream}: the stand-in of the first rule's origin
//! error = "tool_error"                     # the call must end with this error kind
//! [[case.upstream]]
//! rule = "https://api.example.com/v1/*"   # default: the first egress rule
//! status = 503
//! body = "down"
//! ```

use crate::standin::{Added, Backing, Grants, Rule, Running, StandIn};
use crate::{clip, name_of};
use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;
use warden::call::CallRequest;
use warden::deployment::{AuditSettings, CredentialDef, CredentialKind};
use warden::manifest::{MANIFEST_FILE, Manifest, ManifestError, toml_error};
use warden::policy::{Origin, OriginKind};
use warden::registry;
use warden::report::ErrorKind;
use warden_test_support::loopback::Reply;

pub const TESTS_FILE: &str = "tests.toml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestsFile {
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    input: Value,
    output: Option<Value>,
    error: Option<ErrorKind>,
    #[serde(default)]
    files: BTreeMap<String, String>,
    #[serde(default)]
    upstream: Vec<Upstream>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Upstream {
    rule: Option<String>,
    #[serde(default = "ok")]
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    json: Option<Value>,
}

fn ok() -> u16 {
    200
}

/// One case's result.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub tool: String,
    pub case: String,
    pub passed: bool,
    /// What was expected and what came, when it failed; how the call ended otherwise.
    pub detail: String,
    pub seconds: f64,
}

/// Runs the cases of the tool in `dir`.
pub async fn run(dir: &Path) -> Result<Vec<Outcome>> {
    if !dir.join(MANIFEST_FILE).is_file() {
        anyhow::bail!(crate::UsageError(format!(
            "{}: no {MANIFEST_FILE} in this directory",
            dir.display()
        )));
    }
    let files = registry::read_tool(dir, false)?;
    let cases = read_cases(&dir.join(TESTS_FILE))?;
    let state = tempfile::tempdir().context("making a state directory for the tests")?;
    let mut standin = StandIn::new(Backing {
        state_dir: state.path().to_path_buf(),
        store: None,
        audit: AuditSettings::default(),
    })?;
    let grants = standin
        .grants(&files.manifest, &minted(&files.manifest))
        .await?;
    let manifest = &files.manifest;
    let added = standin.add(
        &manifest.name,
        &files.bytes,
        manifest.kind,
        &grants,
        &manifest.limits,
    )?;
    for case in &cases {
        check(case, &grants, &added, &dir.join(TESTS_FILE))?;
    }
    let running = standin.start()?;
    let mut outcomes = Vec::new();
    for case in &cases {
        outcomes.push(run_case(case, &files.manifest.name, &grants, &added, &running).await?);
    }
    Ok(outcomes)
}

fn read_cases(file: &Path) -> Result<Vec<Case>> {
    let error = |message: String| ManifestError {
        file: file.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| error(format!("cannot read: {e}")))?;
    let parsed: TestsFile = toml::from_str(&text).map_err(|e| error(toml_error(&text, &e)))?;
    Ok(parsed.case)
}

/// What the manifest's credential names stand for is a deployment's business; a tool never
/// sees either kind, so its tests give each a minted one with the defaults.
fn minted(manifest: &Manifest) -> BTreeMap<String, CredentialDef> {
    manifest
        .egress
        .iter()
        .filter_map(|r| r.credential.clone())
        .map(|name| {
            let def = CredentialDef {
                kind: CredentialKind::Minted,
                audience: String::new(),
                tools: Vec::new(),
                lifetime: std::time::Duration::from_secs(60),
                scope: None,
                secret: None,
                header: "authorization".into(),
                prefix: "Bearer ".into(),
            };
            (name, def)
        })
        .collect()
}

/// What a case asks for is checked before anything runs: a file outside every mount, a rule
/// the manifest does not have, a reply that is not HTTP.
fn check(case: &Case, grants: &Grants, added: &Added, file: &Path) -> Result<()> {
    let field = |f: &str, m: String| ManifestError {
        file: file.display().to_string(),
        message: format!("case `{}`, field `{f}`: {m}", case.name),
    };
    if case.output.is_some() && case.error.is_some() {
        return Err(field(
            "error",
            "a case expects an output or an error, not both".into(),
        )
        .into());
    }
    for guest in case.files.keys() {
        mount_path(added, guest).map_err(|m| field("files", m))?;
    }
    let mut answered = Vec::new();
    for upstream in &case.upstream {
        let rule = answering(upstream, grants).map_err(|m| field("upstream.rule", m))?;
        if answered.contains(&rule.real) {
            let m = format!("two replies for the rule `{}`", rule.real);
            return Err(field("upstream.rule", m).into());
        }
        answered.push(rule.real.clone());
        reply(upstream).map_err(|m| field("upstream", m))?;
    }
    Ok(())
}

/// The host path a case's file goes to: below a mount, without `..`.
fn mount_path(added: &Added, guest: &str) -> Result<PathBuf, String> {
    for (request, host) in &added.mounts {
        let Ok(rest) = Path::new(guest).strip_prefix(&request.guest) else {
            continue;
        };
        if rest.as_os_str().is_empty()
            || !rest.components().all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(format!(
                "`{guest}` must name a file below the mount {}",
                request.guest
            ));
        }
        return Ok(host.join(rest));
    }
    Err(format!("`{guest}` is in none of the tool's mounts"))
}

/// The rule a reply answers for: the one it names, or the first.
fn answering<'a>(upstream: &Upstream, grants: &'a Grants) -> Result<&'a Rule, String> {
    match &upstream.rule {
        Some(real) => grants
            .rules
            .iter()
            .find(|r| &r.real == real)
            .ok_or_else(|| format!("the manifest has no egress rule `{real}`")),
        None => grants
            .rules
            .first()
            .ok_or_else(|| "the manifest has no egress rules".to_string()),
    }
}

fn reply(upstream: &Upstream) -> Result<Reply, String> {
    if !(200..=599).contains(&upstream.status) {
        return Err(format!(
            "status {} is not between 200 and 599",
            upstream.status
        ));
    }
    for (name, value) in &upstream.headers {
        http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a header name"))?;
        http::HeaderValue::from_str(value)
            .map_err(|_| format!("header `{name}`: not a header value"))?;
    }
    let body = match (&upstream.body, &upstream.json) {
        (Some(_), Some(_)) => return Err("a reply has a body or a json, not both".into()),
        (Some(text), None) => text.clone().into_bytes(),
        (None, Some(json)) => json.to_string().into_bytes(),
        (None, None) => Vec::new(),
    };
    Ok(Reply {
        status: upstream.status,
        headers: upstream.headers.clone().into_iter().collect(),
        body: body.into(),
    })
}

async fn run_case(
    case: &Case,
    tool: &str,
    grants: &Grants,
    added: &Added,
    running: &Running,
) -> Result<Outcome> {
    for (_, host) in &added.mounts {
        std::fs::remove_dir_all(host)?;
        std::fs::create_dir_all(host)?;
    }
    for (guest, content) in &case.files {
        let path = mount_path(added, guest).map_err(anyhow::Error::msg)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content).with_context(|| format!("writing {guest}"))?;
    }
    for rule in &grants.rules {
        rule.upstream.clear_replies();
    }
    for upstream in &case.upstream {
        let rule = answering(upstream, grants).map_err(anyhow::Error::msg)?;
        // Only the rule's own paths: another rule on the same origin answers as it says.
        let prefix = rule.path.split('*').next().unwrap_or("/");
        rule.upstream
            .reply(prefix, reply(upstream).map_err(anyhow::Error::msg)?);
    }
    let origin = grants
        .rules
        .first()
        .map(|r| r.upstream.url(""))
        .unwrap_or_default();
    let input = substitute(&case.input, &origin);
    let request =
        CallRequest::new(added.name.as_str(), input, running.caller.clone()).origin(Origin {
            kind: OriginKind::Api,
            label: "warden test".into(),
        });
    let started = Instant::now();
    let report = running.runtime.call(request).await;
    let seconds = started.elapsed().as_secs_f64();
    let got_error = report.record.error.as_ref().map(|e| e.kind);
    let ended = match &report.record.error {
        Some(e) => format!("{}: {}", name_of(&e.kind), clip(&e.message, 500)),
        None => {
            let output = report.output.as_ref().map(Value::to_string);
            format!("returned {}", clip(&output.unwrap_or_default(), 500))
        }
    };
    let (passed, detail) = match (&case.error, &case.output) {
        (Some(expected), _) => (
            got_error == Some(*expected),
            format!("expected error {}; {ended}", name_of(expected)),
        ),
        (None, Some(expected)) => {
            let matched = got_error.is_none()
                && report
                    .output
                    .as_ref()
                    .is_some_and(|o| contains(o, expected));
            (
                matched,
                format!(
                    "expected output containing {}; {ended}",
                    clip(&expected.to_string(), 500)
                ),
            )
        }
        (None, None) => (got_error.is_none(), format!("expected success; {ended}")),
    };
    Ok(Outcome {
        tool: tool.to_string(),
        case: case.name.clone(),
        passed,
        detail: if passed { ended } else { detail },
        seconds,
    })
}

/// `{upstream}` in every string of the input, replaced with the stand-in origin.
fn substitute(value: &Value, origin: &str) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace("{upstream}", origin)),
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute(v, origin)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute(v, origin)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Whether `got` has everything `expected` has: objects by their keys (recursively), any
/// other value by equality.
fn contains(got: &Value, expected: &Value) -> bool {
    match (got, expected) {
        (Value::Object(got), Value::Object(expected)) => expected
            .iter()
            .all(|(k, v)| got.get(k).is_some_and(|g| contains(g, v))),
        _ => got == expected,
    }
}

/// The outcomes as a table.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    for o in outcomes {
        out.push_str(&format!(
            "{:<6} {} / {}: {}\n",
            if o.passed { "pass" } else { "FAIL" },
            o.tool,
            o.case,
            clip(&o.detail, 300)
        ));
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    out.push_str(&format!(
        "\n{} passed, {failed} failed\n",
        outcomes.len() - failed
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_expected_output_is_matched_by_its_keys() {
        let got = json!({ "greeting": "Hello", "call_id": "x", "n": [1, 2] });
        assert!(contains(&got, &json!({ "greeting": "Hello" })));
        assert!(contains(&got, &json!({ "n": [1, 2] })));
        assert!(!contains(&got, &json!({ "greeting": "Bye" })));
        assert!(!contains(&got, &json!({ "missing": null })));
        assert!(!contains(&got, &json!({ "n": [1] })));
    }
}
