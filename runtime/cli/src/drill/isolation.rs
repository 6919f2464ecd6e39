//! The isolation drill: Warden's own hostile components, run under each tool's grants (its
//! mounts in their modes, its egress rules, its credentials, its limits) in a stand-in
//! deployment (`crate::standin`): loopback servers in place of the real upstreams, fresh
//! directories in place of the real mounts, throwaway credentials, keys and agent. The calls
//! go through the deployment's state store (nonces, call counts, the audit chain, where they
//! are marked `origin.kind = "drill"`); its tools, policies, keys and files are not touched.
//!
//! The probes of mounts, rules and credentials run with generous limits of their own, so that
//! a limit can never end one early and pass for a control; the probes of limits run with the
//! tool's. A probe that does not run to its end is *inconclusive*, which fails the drill like
//! an escape. Each attack is judged from the host's side wherever it can be: what reached a
//! loopback server or a port nothing should reach, what changed on disk, whether the text of
//! a file outside a mount or a credential the upstream saw (in any form the scrubber removes)
//! turns up in what the tool got, and how the call ended.

use crate::standin::{Added, Backing, Grants, Rule, Running, StandIn, StandInCredential};
use crate::{clip, name_of};
use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use warden::call::CallRequest;
use warden::deployment::Deployment;
use warden::manifest::{Limits, MAX_MEMORY, Manifest, MountMode, MountRequest, ToolKind};
use warden::policy::{Origin, OriginKind};
use warden::registry;
use warden::report::{CallReport, ErrorKind};
use warden::sandbox::egress::{EgressRule, Target, glob_match, match_rule};
use warden::units::ByteSize;
use warden_test_support::loopback::Received;
use warden_test_support::{DRILL_TOOLS, HOSTILE_HTTP};

/// How much longer than its timeout a call may take before it counts as not stopped: the
/// host's own scheduling and its audit write on a loaded machine, not the tool's.
const GRACE: Duration = Duration::from_secs(30);
/// Tools drilled at once: each runs a spinning and a memory-hungry probe.
const TOOLS_AT_ONCE: usize = 2;
/// Paths each credential probe asks the upstream to echo the request's headers on.
const ECHOES: [&str; 5] = [
    "echo-headers",
    "echo-headers-gzip",
    "echo-headers-gzip-always",
    "echo-headers-split",
    "echo-headers-truncated",
];

/// What became of one attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Held,
    Escaped,
    /// The probe did not run to its end: nothing is proven either way.
    Inconclusive,
    NotApplicable,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Held => "held",
            Verdict::Escaped => "ESCAPED",
            Verdict::Inconclusive => "UNKNOWN",
            Verdict::NotApplicable => "n/a",
        }
    }

    /// Whether the row fails the drill.
    pub fn fails(self) -> bool {
        matches!(self, Verdict::Escaped | Verdict::Inconclusive)
    }
}

/// One (tool, attack) of the drill.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub tool: String,
    pub attack: String,
    /// The grant attacked as the tool's manifest has it: a mount, an egress rule (its
    /// stand-in is a loopback server), a limit, or `-` for the whole sandbox.
    pub grant: String,
    pub verdict: Verdict,
    pub evidence: String,
    pub seconds: f64,
}

/// Runs the drill for the deployment's tools (or those named).
pub async fn run(deployment: &Deployment, only: &[String]) -> Result<Vec<Row>> {
    let manifests = tools(deployment, only)?;
    // Keys and compiled components of its own; the deployment's store for the audit.
    let state = tempfile::tempdir().context("making the drill's state directory")?;
    let backing = Backing {
        state_dir: state.path().to_path_buf(),
        store: Some(warden::state::open(deployment)?),
        audit: deployment.audit.clone(),
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(TOOLS_AT_ONCE));
    let mut tasks = tokio::task::JoinSet::new();
    for (order, manifest) in manifests.into_iter().enumerate() {
        let target = Drilled::new(&manifest, deployment, backing.clone()).await?;
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            target.drill().await.map(|rows| (order, rows))
        });
    }
    let mut drilled = Vec::new();
    while let Some(done) = tasks.join_next().await {
        drilled.push(done.context("a drill task")??);
    }
    drilled.sort_by_key(|(order, _)| *order);
    Ok(drilled.into_iter().flat_map(|(_, rows)| rows).collect())
}

/// The manifests of the tools to drill, in the deployment's order.
fn tools(deployment: &Deployment, only: &[String]) -> Result<Vec<Manifest>> {
    let mut manifests = Vec::new();
    for dir in registry::tool_dirs(deployment) {
        let files = registry::read_tool(&dir, false)?;
        if only.is_empty() || only.contains(&files.manifest.name) {
            manifests.push(files.manifest);
        }
    }
    for name in only {
        if !manifests.iter().any(|m| &m.name == name) {
            bail!(crate::UsageError(format!(
                "--tool {name}: {} has no such tool",
                deployment.file.display()
            )));
        }
    }
    Ok(manifests)
}

/// The rows as a table.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<14} {:<22} {:<34} {:<8} {}\n",
        "tool", "attack", "grant", "result", "evidence"
    );
    for row in rows {
        out.push_str(&format!(
            "{:<14} {:<22} {:<34} {:<8} {}\n",
            clip(&row.tool, 14),
            row.attack,
            clip(&row.grant, 34),
            row.verdict.label(),
            clip(&row.evidence, 100)
        ));
    }
    let count = |v: Verdict| rows.iter().filter(|r| r.verdict == v).count();
    out.push_str(&format!(
        "\n{} held, {} escaped, {} inconclusive, {} not applicable\n",
        count(Verdict::Held),
        count(Verdict::Escaped),
        count(Verdict::Inconclusive),
        count(Verdict::NotApplicable)
    ));
    out
}

/// The limits of the probes of mounts, rules and credentials: room for every probe to run to
/// its end, whatever the tool's own limits are.
fn probe_limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(30),
        egress_requests: 64,
        ..Limits::default()
    }
}

/// The limits `hostile` runs with: the probes' own, except the limits it attacks, which are
/// the tool's (a limit it does not attack could only end it early).
fn limits_for(hostile: &str, tool: &Limits) -> Limits {
    let mut limits = probe_limits();
    match hostile {
        "hostile-memory" => limits.memory = tool.memory,
        "hostile-cpu" => {
            limits.timeout = tool.timeout;
            limits.cpu = Some(tool.cpu_budget());
        }
        "hostile-flood" => {
            limits.output = tool.output;
            limits.stdio = tool.stdio;
            // Room to build an output past the limit (the guest holds a few copies of it).
            limits.memory = limits.memory.max(flood_memory(tool.output)).min(MAX_MEMORY);
        }
        "hostile-disk" => limits.disk = tool.disk,
        "hostile-http" => limits.egress_requests = tool.egress_requests,
        _ => {}
    }
    limits
}

/// The memory `hostile-flood` needs to return an output just past `output`.
fn flood_memory(output: ByteSize) -> ByteSize {
    ByteSize(5 * (output.0 + (2 << 20)))
}

/// One tool's grants, with the hostile components added under them.
struct Drilled {
    running: Running,
    grants: Grants,
    added: BTreeMap<&'static str, Added>,
    /// The text of every file placed outside a mount.
    marker: String,
    /// A port nothing may reach.
    tripwire: Tripwire,
    /// Its files, kept until the drill of this tool ends.
    _standin: StandIn,
}

/// A call's report and how long it took.
struct Called {
    report: CallReport,
    seconds: f64,
}

impl Called {
    fn kind(&self) -> Option<ErrorKind> {
        self.report.record.error.as_ref().map(|e| e.kind)
    }

    /// How the call ended, in a few words.
    fn ended(&self) -> String {
        match &self.report.record.error {
            Some(e) => format!("{}: {}", name_of(&e.kind), clip(&e.message, 160)),
            None => "returned".into(),
        }
    }

    /// The output, when the call returned one.
    fn output(&self) -> Option<&Value> {
        self.report.output.as_ref()
    }

    /// Everything the tool handed back.
    fn seen(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.report
                .output
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default(),
            self.report.stdout,
            self.report.stderr
        )
    }

    /// What each request of a `hostile-egress` call got, in short.
    fn summary(&self) -> String {
        match self.output() {
            Some(Value::Array(results)) => results
                .iter()
                .map(|r| match r["sent"] {
                    Value::Bool(true) => format!("sent ({})", r["status"]),
                    _ => format!("refused: {}", r["error"].as_str().unwrap_or("")),
                })
                .collect::<Vec<_>>()
                .join("; "),
            _ => self.ended(),
        }
    }
}

impl Drilled {
    async fn new(
        manifest: &Manifest,
        deployment: &Deployment,
        backing: Backing,
    ) -> Result<Drilled> {
        let mut standin = StandIn::new(backing)?;
        let grants = standin
            .grants(manifest, &deployment.credentials)
            .await
            .with_context(|| format!("{}: tool `{}`", deployment.file.display(), manifest.name))?;
        let mut added = BTreeMap::new();
        for tool in DRILL_TOOLS.iter().chain([&HOSTILE_HTTP]) {
            let limits = limits_for(tool.name, &grants.limits);
            let component =
                standin.add(tool.name, tool.component, ToolKind::Tool, &grants, &limits)?;
            added.insert(tool.name, component);
        }
        let running = standin.start()?;
        // Compiled before any probe is timed (the first tool's compile, the rest from the
        // cache). One that cannot load under the tool's limits says so when it is called.
        for component in added.values() {
            let _ = running.runtime.tool(&component.name).await;
        }
        Ok(Drilled {
            running,
            marker: format!("warden-drill-outside-{}", standin.tag),
            grants,
            added,
            tripwire: Tripwire::start().await?,
            _standin: standin,
        })
    }

    async fn drill(self) -> Result<Vec<Row>> {
        // The long waits (CPU, wall time, memory) run beside the rest, which runs in order so
        // that what reaches a loopback server is known to be the call's own.
        let (quick, slow) = tokio::join!(self.quick(), self.slow());
        let mut rows = quick?;
        rows.extend(slow?);
        Ok(rows)
    }

    async fn quick(&self) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        let mounts = &self.added["hostile-mount"].mounts;
        for mount in mounts {
            // Links and moves out of it go to another mount, a writable one if there is one.
            let other = mounts
                .iter()
                .filter(|(m, _)| m.guest != mount.0.guest)
                .max_by_key(|(m, _)| m.mode == MountMode::Rw);
            rows.extend(self.leave_mount(mount, other).await?);
        }
        for (request, _) in &self.added["hostile-disk"].mounts {
            if request.mode == MountMode::Rw {
                rows.push(self.disk_quota(request).await?);
            }
        }
        for rule in &self.grants.rules {
            rows.extend(self.egress(rule).await?);
            if let Some(credential) = &rule.credential {
                rows.extend(self.read_back(rule, credential).await?);
            }
        }
        rows.extend(self.network().await?);
        rows.push(self.environment().await?);
        rows.push(self.stdio().await?);
        if self.grants.fs.is_empty() {
            rows.push(self.not_applicable("leave a mount", "-", "the tool has no mounts"));
        } else if !self.grants.fs.iter().any(|m| m.mode == MountMode::Rw) {
            rows.push(self.not_applicable("disk quota", "-", "the tool has no read-write mount"));
        }
        if self.grants.rules.is_empty() {
            rows.push(self.not_applicable("egress", "-", "the tool has no egress rules"));
        }
        Ok(rows)
    }

    async fn slow(&self) -> Result<Vec<Row>> {
        let (memory, cpu, wall, output) =
            tokio::join!(self.memory(), self.cpu(), self.wall_time(), self.output());
        Ok(vec![memory?, cpu?, wall?, output?])
    }

    /// Calls `hostile` as the stand-in agent. `Err(seconds)` when the call was still running
    /// `GRACE` after its timeout: the timeout did not stop it.
    async fn call(&self, hostile: &str, input: Value) -> Result<Result<Called, f64>> {
        let name = &self.added[hostile].name;
        let timeout = self.added[hostile].limits.timeout;
        let request =
            CallRequest::new(name.as_str(), input, self.running.caller.clone()).origin(Origin {
                kind: OriginKind::Drill,
                label: format!("isolation drill of {}", self.grants.tool),
            });
        let started = Instant::now();
        let Ok(report) =
            tokio::time::timeout(timeout + GRACE, self.running.runtime.call(request)).await
        else {
            return Ok(Err(started.elapsed().as_secs_f64()));
        };
        if let Some(e) = report.record.error.as_ref().filter(|e| {
            matches!(
                e.kind,
                ErrorKind::Internal | ErrorKind::Denied | ErrorKind::InvalidInput
            )
        }) {
            bail!(
                "the drill could not run {hostile} under {}'s grants: {}",
                self.grants.tool,
                e.message
            );
        }
        Ok(Ok(Called {
            report,
            seconds: started.elapsed().as_secs_f64(),
        }))
    }

    /// Calls a probe of mounts, rules or credentials: it must run to its end, or every row it
    /// would judge is inconclusive (`Err(rows)`).
    async fn probe(
        &self,
        hostile: &str,
        input: Value,
        rows: &[(&str, &str)],
    ) -> Result<Result<Called, Vec<Row>>> {
        let (why, seconds) = match self.call(hostile, input).await? {
            Ok(called) if called.output().is_some() => return Ok(Ok(called)),
            Ok(called) => (
                format!("the probe did not finish: {}", called.ended()),
                called.seconds,
            ),
            Err(seconds) => (
                format!("the probe ran {seconds:.1}s, past its timeout"),
                seconds,
            ),
        };
        Ok(Err(rows
            .iter()
            .map(|(attack, grant)| {
                self.verdict(attack, grant, Verdict::Inconclusive, why.clone(), seconds)
            })
            .collect()))
    }

    fn verdict(
        &self,
        attack: &str,
        grant: &str,
        verdict: Verdict,
        evidence: String,
        seconds: f64,
    ) -> Row {
        Row {
            tool: self.grants.tool.clone(),
            attack: attack.into(),
            grant: grant.into(),
            verdict,
            evidence: clip(&evidence, 2000),
            seconds,
        }
    }

    /// Escaped with the reason, or held with what the tool got instead.
    fn row(
        &self,
        attack: &str,
        grant: &str,
        escaped: Option<String>,
        instead: String,
        seconds: f64,
    ) -> Row {
        match escaped {
            Some(why) => self.verdict(attack, grant, Verdict::Escaped, why, seconds),
            None => self.verdict(attack, grant, Verdict::Held, instead, seconds),
        }
    }

    fn not_applicable(&self, attack: &str, grant: &str, why: &str) -> Row {
        self.verdict(attack, grant, Verdict::NotApplicable, why.into(), 0.0)
    }

    // ---- mounts ---------------------------------------------------------------------------

    /// Out of one mount (`..`, absolute paths, symlinks placed and made, hard links, also into
    /// the tool's `other` mount), and changing it when it is read-only.
    async fn leave_mount(
        &self,
        (request, host): &(MountRequest, PathBuf),
        other: Option<&(MountRequest, PathBuf)>,
    ) -> Result<Vec<Row>> {
        let grant = format!("{} ({})", request.guest, name_of(&request.mode));
        let outside = host
            .parent()
            .context("a mount's parent")?
            .join("outside.txt");
        std::fs::write(&outside, &self.marker)?;
        std::fs::write(host.join("hello.txt"), "inside")?;
        let _ = std::os::unix::fs::symlink("../outside.txt", host.join("link-rel"));
        let _ = std::os::unix::fs::symlink(&outside, host.join("link-abs"));
        // What an earlier probe (of a writable mount) may have linked or moved there.
        if let Some((_, other_host)) = other {
            for name in ["cross-link", "cross-moved"] {
                let _ = std::fs::remove_file(other_host.join(name));
            }
        }
        let before = snapshot(host);
        let mut attacks = vec![
            "leave mount: ..",
            "leave mount: absolute",
            "symlink placed",
            "symlink made",
            "hard link",
        ];
        if request.mode == MountMode::Ro {
            attacks.push("write read-only");
        }
        let input = json!({
            "mount": request.guest,
            "outside": outside.display().to_string(),
            "other": other.map(|(m, _)| m.guest.clone()),
        });
        let named: Vec<(&str, &str)> = attacks.iter().map(|a| (*a, grant.as_str())).collect();
        let called = match self.probe("hostile-mount", input, &named).await? {
            Ok(called) => called,
            Err(rows) => return Ok(rows),
        };
        let after = snapshot(host);
        let output = called.output().cloned().unwrap_or(Value::Null);
        let tries = |attack: &str| output.get(attack).map(Value::to_string).unwrap_or_default();
        let read_outside = |attack: &str| {
            let tried = tries(attack);
            tried
                .contains(&self.marker)
                .then(|| format!("read the file outside: {}", clip(&tried, 200)))
        };
        let outside_changed = (std::fs::read_to_string(&outside).ok().as_deref()
            != Some(self.marker.as_str()))
        .then(|| "the file outside the mount was changed".to_string());
        let made = |names: &[&str]| {
            names
                .iter()
                .find(|n| host.join(n).symlink_metadata().is_ok())
                .map(|n| format!("{n} was created in the mount"))
        };
        // A read-only mount's file, linked or moved into the other mount.
        let crossed =
            other
                .filter(|_| request.mode == MountMode::Ro)
                .and_then(|(m, other_host)| {
                    ["cross-link", "cross-moved"]
                        .iter()
                        .find(|n| other_host.join(n).symlink_metadata().is_ok())
                        .map(|n| format!("{n} was made in {} from this mount's file", m.guest))
                });
        let s = called.seconds;
        let mut rows = vec![
            self.row(
                attacks[0],
                &grant,
                read_outside("dotdot"),
                tries("dotdot"),
                s,
            ),
            self.row(
                attacks[1],
                &grant,
                read_outside("absolute"),
                tries("absolute"),
                s,
            ),
            self.row(
                attacks[2],
                &grant,
                read_outside("placed-symlink"),
                tries("placed-symlink"),
                s,
            ),
            self.row(
                attacks[3],
                &grant,
                read_outside("made-symlink").or_else(|| made(&["made-rel", "made-abs"])),
                tries("made-symlink"),
                s,
            ),
            self.row(
                attacks[4],
                &grant,
                read_outside("hard-link")
                    .or_else(|| made(&["made-hard"]))
                    .or(outside_changed)
                    .or(crossed),
                format!("{} {}", tries("hard-link"), tries("cross-mount")),
                s,
            ),
        ];
        if request.mode == MountMode::Ro {
            let changed = (before != after).then(|| {
                format!(
                    "the read-only mount changed: {}",
                    clip(&tries("write"), 200)
                )
            });
            rows.push(self.row(attacks[5], &grant, changed, tries("write"), s));
        }
        Ok(rows)
    }

    /// More on a read-write mount than the disk quota, in one write, many small writes and by
    /// growing a file without writing; measured on the host after each call.
    async fn disk_quota(&self, request: &MountRequest) -> Result<Row> {
        let attack = "disk quota";
        let grant = format!("{} (rw, disk {})", request.guest, self.grants.limits.disk);
        let host = &self.added["hostile-disk"]
            .mounts
            .iter()
            .find(|(m, _)| m.guest == request.guest)
            .context("the disk attack's mount")?
            .1;
        let quota = self.grants.limits.disk.0;
        let mut seconds = 0.0;
        let mut evidence = Vec::new();
        for probe in ["big-write", "stream-writes", "set-size"] {
            empty(host)?;
            // Past the quota by 1 MiB at most (a failed quota writes no more than that), the
            // stream starting just below it (sparse before).
            let input = json!({
                "attack": probe,
                "mount": request.guest,
                "bytes": quota + (1 << 20),
                "start": quota.saturating_sub(256 << 10),
            });
            let called = match self.call("hostile-disk", input).await? {
                Ok(called) => called,
                Err(s) => {
                    let why = format!("{probe}: still running {s:.1}s after it started");
                    return Ok(self.verdict(attack, &grant, Verdict::Escaped, why, seconds + s));
                }
            };
            seconds += called.seconds;
            let used = usage(host);
            if used > quota {
                let why =
                    format!("{probe}: the mount holds {used} bytes, over the quota of {quota}");
                return Ok(self.verdict(attack, &grant, Verdict::Escaped, why, seconds));
            }
            if called.kind() != Some(ErrorKind::DiskLimit) {
                let why = format!("{probe}: the quota was never reached ({})", called.ended());
                return Ok(self.verdict(attack, &grant, Verdict::Inconclusive, why, seconds));
            }
            evidence.push(format!("{probe}: {used} bytes, disk_limit"));
        }
        empty(host)?;
        Ok(self.verdict(attack, &grant, Verdict::Held, evidence.join("; "), seconds))
    }

    // ---- egress ---------------------------------------------------------------------------

    /// Requests outside one rule: another host, port, path or method, URL-form tricks, and
    /// more requests than the call's budget. Judged against every rule of the tool on the
    /// same upstream (another may allow what this one does not).
    async fn egress(&self, rule: &Rule) -> Result<Vec<Row>> {
        let grant = rule.real.as_str();
        let siblings: Vec<&Rule> = self
            .grants
            .rules
            .iter()
            .filter(|r| Arc::ptr_eq(&r.upstream, &rule.upstream))
            .collect();
        let stand_ins: Vec<EgressRule> = siblings.iter().map(|r| r.stand_in.clone()).collect();
        let here = rule.upstream.addr.to_string();
        let warden_allows = |method: &str, path: &str| {
            format!("http://{here}{path}")
                .parse::<http::Uri>()
                .ok()
                .and_then(|uri| Target::from_uri(method, &uri).ok())
                .is_some_and(|t| match_rule(&stand_ins, &t).is_ok())
        };
        let Some((method, inside)) = rule
            .methods
            .iter()
            .map(|m| (m.clone(), rule.path.replace('*', "drill")))
            .find(|(m, p)| warden_allows(m, p))
        else {
            return Ok(vec![self.not_applicable(
                "egress",
                grant,
                "no request the rule allows could be made",
            )]);
        };
        let request = |authority: &str, path: &str, method: &str| json!({ "method": method, "scheme": "http", "authority": authority, "path": path });
        let outside_rules = |got: &[Received]| {
            got.iter()
                .find(|r| !siblings.iter().any(|s| allows(s, &r.method, &r.path)))
                .map(|r| format!("the upstream received {} {}", r.method, r.path))
        };
        let port = rule.upstream.addr.port();
        let trip = self.tripwire.addr;
        let mut rows = Vec::new();

        let probe = vec![request(&format!("localhost:{port}"), &inside, &method)];
        rows.push(
            self.egress_row(rule, "egress: other host", grant, probe, |got| {
                got.iter()
                    .find(|r| header(r, "host").as_deref() != Some(here.as_str()))
                    .map(|r| {
                        format!(
                            "the upstream received a request for {:?}",
                            header(r, "host")
                        )
                    })
            })
            .await?,
        );

        let probe = vec![request(&trip.to_string(), &inside, &method)];
        rows.push(
            self.egress_row(rule, "egress: other port", grant, probe, |_| None)
                .await?,
        );

        let attack = "egress: other path";
        let prefix = rule
            .path
            .split('*')
            .next()
            .unwrap_or("/")
            .trim_end_matches('/');
        let outside = [
            format!("{prefix}-drill-outside/x"),
            format!("{}-drill-outside", rule.path.replace('*', "drill")),
            "/warden-drill-outside".to_string(),
        ]
        .into_iter()
        .find(|p| p.starts_with('/') && !warden_allows(&method, p));
        rows.push(match outside {
            None => self.not_applicable(attack, grant, "the tool's rules allow every path"),
            Some(outside) => {
                let probe = vec![request(&here, &outside, &method)];
                self.egress_row(rule, attack, grant, probe, outside_rules)
                    .await?
            }
        });

        let attack = "egress: other method";
        let other = ["DELETE", "POST", "PUT", "PATCH", "GET", "HEAD", "OPTIONS"]
            .into_iter()
            .find(|m| !warden_allows(m, &inside));
        rows.push(match other {
            None => self.not_applicable(attack, grant, "the tool's rules allow every method here"),
            Some(other) => {
                let probe = vec![request(&here, &inside, other)];
                self.egress_row(rule, attack, grant, probe, outside_rules)
                    .await?
            }
        });

        // The rule's paths, written so that a parser that reads them differently from the one
        // that decided would reach somewhere else.
        let base = &inside[..inside.rfind('/').map_or(1, |i| i + 1)];
        let mut tricks: Vec<Value> = [
            "../drill-outside",
            "%2e%2e/drill-outside",
            "%2E%2E%2Fdrill-outside",
            "..%2fdrill-outside",
            "..%5cdrill-outside",
            "%252e%252e/drill-outside",
            "./../drill-outside",
        ]
        .iter()
        .map(|t| request(&here, &format!("{base}{t}"), &method))
        .collect();
        tricks.extend(
            [
                format!("{here}@{trip}"),
                format!("{trip}#@{here}"),
                format!("127.0.0.1.:{}", trip.port()),
                format!("0x7f.1:{}", trip.port()),
                format!("[::ffff:127.0.0.1]:{}", trip.port()),
            ]
            .iter()
            .map(|authority| request(authority, &inside, &method)),
        );
        rows.push(
            self.egress_row(rule, "egress: url tricks", grant, tricks, outside_rules)
                .await?,
        );

        rows.push(self.request_budget(rule, &method, &inside).await?);
        Ok(rows)
    }

    /// Calls `hostile-egress` with `requests`: escaped if anything reached the tripwire, or if
    /// `judge` finds a way out in what reached the rule's upstream.
    async fn egress_row(
        &self,
        rule: &Rule,
        attack: &str,
        grant: &str,
        requests: Vec<Value>,
        judge: impl FnOnce(&[Received]) -> Option<String>,
    ) -> Result<Row> {
        let before = rule.upstream.received().len();
        let tripped = self.tripwire.count();
        let input = json!({ "requests": requests });
        let called = match self
            .probe("hostile-egress", input, &[(attack, grant)])
            .await?
        {
            Ok(called) => called,
            Err(mut rows) => return Ok(rows.remove(0)),
        };
        let got = rule.upstream.received().split_off(before);
        let escaped = self.tripwire.reached_since(tripped).or_else(|| judge(&got));
        Ok(self.row(attack, grant, escaped, called.summary(), called.seconds))
    }

    /// `limits.egress_requests` + 3 requests the rule allows, with the tool's budget: exactly
    /// the budget must arrive (fewer proves nothing).
    async fn request_budget(&self, rule: &Rule, method: &str, inside: &str) -> Result<Row> {
        let attack = "request budget";
        let budget = self.grants.limits.egress_requests;
        let url = rule.upstream.url(inside);
        let then: Vec<Value> = (0..budget + 2)
            .map(|_| json!({ "url": url, "method": method }))
            .collect();
        let before = rule.upstream.received().len();
        let called = self
            .call(
                "hostile-http",
                json!({ "url": url, "method": method, "then": then }),
            )
            .await?;
        let arrived = rule.upstream.received().len() - before;
        let seconds = called.as_ref().map_or_else(|s| *s, |c| c.seconds);
        let evidence = format!(
            "{arrived} of {} requests reached the upstream; the budget is {budget}",
            budget + 3
        );
        let verdict = match arrived.cmp(&(budget as usize)) {
            std::cmp::Ordering::Greater => Verdict::Escaped,
            std::cmp::Ordering::Equal => Verdict::Held,
            std::cmp::Ordering::Less => Verdict::Inconclusive,
        };
        Ok(self.verdict(attack, &rule.real, verdict, evidence, seconds))
    }

    // ---- credentials ----------------------------------------------------------------------

    /// The credential the host adds to one rule's requests, read back from echoes of it (in
    /// headers, bodies, compressed, split, cut off, encoded) and from everywhere a spy looks.
    async fn read_back(&self, rule: &Rule, credential: &StandInCredential) -> Result<Vec<Row>> {
        let grant = format!("{} ({})", rule.real, name_of(&credential.kind));
        let read_back = "credential read-back";
        let in_sandbox = "credential in sandbox";
        let base = rule.path.replace('*', "drill");
        let base = &base[..base.rfind('/').map_or(1, |i| i + 1)];
        let stand_ins: Vec<EgressRule> = self
            .grants
            .rules
            .iter()
            .map(|r| r.stand_in.clone())
            .collect();
        let allowed = |suffix: &str| {
            rule.upstream
                .url(&format!("{base}{suffix}"))
                .parse::<http::Uri>()
                .ok()
                .and_then(|uri| Target::from_uri("GET", &uri).ok())
                // Warden sends a request by the first rule that matches it.
                .is_some_and(|t| {
                    match_rule(&stand_ins, &t).is_ok_and(|r| r.url == rule.stand_in.url)
                })
        };
        let key_forms = format!("echo-key-forms?header={}", credential.header);
        if !ECHOES
            .iter()
            .chain([&key_forms.as_str()])
            .all(|e| allowed(e))
        {
            let why = "the rule takes no GET of an echo path beside its own";
            return Ok(vec![
                self.not_applicable(read_back, &grant, why),
                self.not_applicable(in_sandbox, &grant, why),
            ]);
        }
        let echo = |suffix: &str| json!({ "url": rule.upstream.url(&format!("{base}{suffix}")) });
        let mut requests: Vec<Value> = ECHOES.iter().map(|e| echo(e)).collect();
        requests[1]["headers"] = json!([["accept-encoding", "gzip"]]);
        requests.push(echo(&key_forms));
        let before = rule.upstream.received().len();
        let exfil = self
            .probe(
                "hostile-exfil",
                json!({ "requests": requests }),
                &[(read_back, &grant)],
            )
            .await?;
        let by_exfil = rule.upstream.received().len() - before;
        let spy = self
            .probe(
                "hostile-spy",
                json!({
                    "urls": [rule.upstream.url(&format!("{base}echo-headers"))],
                    "dirs": self.grants.fs.iter().map(|m| m.guest.clone()).collect::<Vec<_>>(),
                }),
                &[(in_sandbox, &grant)],
            )
            .await?;
        let sent = rule.upstream.received().split_off(before);
        let carried: Vec<String> = sent
            .iter()
            .filter_map(|r| header(r, &credential.header))
            .map(|v| {
                v.strip_prefix(credential.prefix.as_str())
                    .unwrap_or(&v)
                    .to_string()
            })
            .filter(|v| !v.is_empty())
            .collect();
        let mut secrets = carried.clone();
        secrets.extend(credential.value.clone());
        secrets.sort();
        secrets.dedup();
        let reached = ECHOES.iter().chain(&["echo-key-forms"]).all(|e| {
            sent[..by_exfil.min(sent.len())]
                .iter()
                .any(|r| r.path.ends_with(e))
        });
        let mut rows = Vec::new();
        match exfil {
            Err(failed) => rows.extend(failed),
            Ok(_) if !reached || carried.len() < sent.len() => rows.push(self.verdict(
                read_back,
                &grant,
                Verdict::Inconclusive,
                format!(
                    "{} of the echo requests reached the upstream, {} carried the credential",
                    sent.len(),
                    carried.len()
                ),
                0.0,
            )),
            Ok(called) => rows.push(self.row(
                read_back,
                &grant,
                leaked(&called.seen(), &secrets, true),
                format!(
                    "no form of it reached the tool; {} requests carried it",
                    carried.len()
                ),
                called.seconds,
            )),
        }
        match spy {
            Err(failed) => rows.extend(failed),
            Ok(called) => rows.push(self.row(
                in_sandbox,
                &grant,
                leaked(&called.seen(), &secrets, false),
                "not in the environment, arguments, call context, mounts or responses".into(),
                called.seconds,
            )),
        }
        Ok(rows)
    }

    // ---- the whole sandbox ----------------------------------------------------------------

    /// Raw sockets and name lookups, aimed at a port that counts every connection and
    /// datagram. A lookup and a bound port cannot be seen from outside: those rows take the
    /// tool's word, and say so.
    async fn network(&self) -> Result<Vec<Row>> {
        let trip = self.tripwire.addr.to_string();
        let mut rows = Vec::new();
        for (attack, name, target) in [
            ("dns", "name lookup", "localhost:80".to_string()),
            ("tcp", "raw tcp", trip.clone()),
            ("udp", "raw udp", trip.clone()),
            ("tcp-listen", "listen", String::new()),
        ] {
            let before = self.tripwire.count();
            let input = json!({ "attack": attack, "target": target });
            let called = match self.probe("hostile-net", input, &[(name, "-")]).await? {
                Ok(called) => called,
                Err(failed) => {
                    rows.extend(failed);
                    continue;
                }
            };
            let output = called.output().cloned().unwrap_or(Value::Null);
            let seen = match attack {
                "dns" | "tcp-listen" => " (as the tool reports)",
                _ => "",
            };
            let escaped = self.tripwire.reached_since(before).or_else(|| {
                (output["escaped"] != json!(false)).then(|| format!("{}{seen}", output["detail"]))
            });
            rows.push(self.row(
                name,
                "-",
                escaped,
                format!("{}{seen}", output["detail"]),
                called.seconds,
            ));
        }
        Ok(rows)
    }

    async fn environment(&self) -> Result<Row> {
        let attack = "environment";
        let called = match self
            .probe("hostile-env", json!({}), &[(attack, "-")])
            .await?
        {
            Ok(called) => called,
            Err(mut rows) => return Ok(rows.remove(0)),
        };
        let output = called.output().cloned().unwrap_or(Value::Null);
        let name = &self.added["hostile-env"].name;
        let escaped = if output["env"] != json!([]) {
            Some(format!(
                "the tool sees variables: {}",
                clip(&output["env"].to_string(), 200)
            ))
        } else if output["args"] != json!([name]) {
            Some(format!("the tool sees arguments: {}", output["args"]))
        } else {
            None
        };
        let instead = "no variables; its name as the only argument".into();
        Ok(self.row(attack, "-", escaped, instead, called.seconds))
    }

    /// A limit probe's end: held when the call ended with `expected` within its timeout,
    /// escaped when it returned or outlived its timeout, inconclusive otherwise.
    fn limit_row(
        &self,
        attack: &str,
        grant: &str,
        called: Result<Called, f64>,
        expected: &[ErrorKind],
        returned: impl FnOnce(&Called) -> String,
    ) -> Row {
        match called {
            Err(s) => {
                let why = format!("still running {s:.1}s after it started, past its timeout");
                self.verdict(attack, grant, Verdict::Escaped, why, s)
            }
            Ok(c) if c.output().is_some() => {
                let why = returned(&c);
                self.verdict(attack, grant, Verdict::Escaped, why, c.seconds)
            }
            Ok(c) => match c.kind() {
                Some(kind) if expected.contains(&kind) => {
                    let evidence = format!("{} after {:.1}s", c.ended(), c.seconds);
                    self.verdict(attack, grant, Verdict::Held, evidence, c.seconds)
                }
                _ => {
                    let why = format!("ended otherwise: {}", c.ended());
                    self.verdict(attack, grant, Verdict::Inconclusive, why, c.seconds)
                }
            },
        }
    }

    async fn memory(&self) -> Result<Row> {
        let limit = self.grants.limits.memory;
        let megabytes = limit.0 / (1 << 20) + 16;
        let called = self
            .call("hostile-memory", json!({ "megabytes": megabytes }))
            .await?;
        let grant = format!("limits.memory {limit}");
        Ok(
            self.limit_row("memory", &grant, called, &[ErrorKind::MemoryLimit], |_| {
                format!("allocated {megabytes} MiB under a limit of {limit}")
            }),
        )
    }

    /// A busy loop: stopped by its CPU budget, or by the timeout when that comes first (a
    /// loaded machine gives the loop less than the wall clock).
    async fn cpu(&self) -> Result<Row> {
        let limits = &self.grants.limits;
        let called = self
            .call("hostile-cpu", json!({ "attack": "loop" }))
            .await?;
        let grant = format!(
            "limits.cpu {}",
            warden::units::format_duration(limits.cpu_budget())
        );
        let stops = [ErrorKind::CpuLimit, ErrorKind::Timeout];
        Ok(self.limit_row("cpu", &grant, called, &stops, |c| c.ended()))
    }

    async fn wall_time(&self) -> Result<Row> {
        let timeout = self.grants.limits.timeout;
        let called = self
            .call("hostile-cpu", json!({ "attack": "sleep" }))
            .await?;
        let grant = format!("limits.timeout {}", warden::units::format_duration(timeout));
        Ok(
            self.limit_row("wall time", &grant, called, &[ErrorKind::Timeout], |c| {
                c.ended()
            }),
        )
    }

    async fn output(&self) -> Result<Row> {
        let limits = &self.grants.limits;
        let grant = format!("limits.output {}", limits.output);
        if flood_memory(limits.output) > MAX_MEMORY {
            let why = "no tool has the memory to build an output past limits.output";
            return Ok(self.not_applicable("output", &grant, why));
        }
        let megabytes = limits.output.0.div_ceil(1 << 20) + 1;
        let input = json!({ "attack": "output", "megabytes": megabytes });
        let called = self.call("hostile-flood", input).await?;
        Ok(
            self.limit_row("output", &grant, called, &[ErrorKind::OutputLimit], |c| {
                let size = c.output().map_or(0, |o| o.to_string().len());
                format!("returned {size} bytes under a limit of {}", limits.output)
            }),
        )
    }

    async fn stdio(&self) -> Result<Row> {
        let attack = "stdout flood";
        let limit = self.grants.limits.stdio;
        let grant = format!("limits.stdio {limit}");
        let megabytes = limit.0.div_ceil(1 << 20) + 1;
        let input = json!({ "attack": "stdout", "megabytes": megabytes });
        let called = match self.call("hostile-flood", input).await? {
            Ok(called) => called,
            Err(s) => {
                let why = format!("still running {s:.1}s after it started, past its timeout");
                return Ok(self.verdict(attack, &grant, Verdict::Escaped, why, s));
            }
        };
        let kept = called.report.stdout.len().max(called.report.stderr.len()) as u64;
        let evidence = format!("{megabytes} MiB written to each, {kept} bytes kept");
        let verdict = if kept > limit.0 {
            Verdict::Escaped
        } else if !called.report.stdio_truncated {
            Verdict::Inconclusive
        } else {
            Verdict::Held
        };
        Ok(self.verdict(attack, &grant, verdict, evidence, called.seconds))
    }
}

/// A port on loopback that counts every TCP connection and UDP datagram it gets, and answers
/// none: nothing a tool does may reach it.
struct Tripwire {
    addr: std::net::SocketAddr,
    hits: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Tripwire {
    async fn start() -> Result<Tripwire> {
        // A port free for TCP may be taken for UDP: a few tries.
        let mut tries = 0;
        let (tcp, udp, addr) = loop {
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = tcp.local_addr()?;
            match tokio::net::UdpSocket::bind(addr).await {
                Ok(udp) => break (tcp, udp, addr),
                Err(e) if tries == 8 => return Err(e.into()),
                Err(_) => tries += 1,
            }
        };
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let on_tcp = tokio::spawn(async move {
            while let Ok((stream, _)) = tcp.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        let counted = hits.clone();
        let on_udp = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while udp.recv_from(&mut buf).await.is_ok() {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        Ok(Tripwire {
            addr,
            hits,
            tasks: vec![on_tcp, on_udp],
        })
    }

    fn count(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn reached_since(&self, before: usize) -> Option<String> {
        let now = self.count();
        (now > before).then(|| {
            format!(
                "{} connections or datagrams reached a port nothing may reach",
                now - before
            )
        })
    }
}

impl Drop for Tripwire {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Whether `rule` allows a request that reached its upstream, read as a server reads it:
/// percent-decoded twice, backslashes as slashes, dot segments resolved, empty segments
/// dropped. Written apart from Warden's own normalisation, so as not to share its mistakes.
fn allows(rule: &Rule, method: &str, raw: &str) -> bool {
    let decoded = decode(&decode(raw)).replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let path = format!("/{}", segments.join("/"));
    rule.methods.iter().any(|m| m == method)
        && (glob_match(&rule.path, &path) || glob_match(&rule.path, &format!("{path}/")))
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header(r: &Received, name: &str) -> Option<String> {
    r.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// The scrubber's shortest run of a secret that counts.
const FRAGMENT: usize = warden::credentials::scrub::FRAGMENT;

/// Where one of `secrets` shows in `seen`: in any form the scrubber removes (`forms`), also
/// (with `bodies`) inside the raw response bodies `hostile-exfil` returns as hex, inflated.
fn leaked(seen: &str, secrets: &[String], bodies: bool) -> Option<String> {
    let mut texts = vec![("the output".to_string(), seen.as_bytes().to_vec())];
    if bodies {
        for (i, hex) in hex_fields(seen).into_iter().enumerate() {
            let Ok(bytes) = hex::decode(&hex) else {
                continue;
            };
            let mut inflated = Vec::new();
            let gzip = std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(&bytes[..]),
                &mut inflated,
            );
            texts.push((format!("response {i}'s body"), bytes));
            if gzip.is_ok() {
                texts.push((format!("response {i}'s body, inflated"), inflated));
            }
        }
    }
    // Every FRAGMENT-byte piece of every form, lowercased, and one pass over each text: the
    // cost is the texts' length, however long the secrets and their forms.
    let mut pieces: std::collections::HashMap<Vec<u8>, &'static str> = Default::default();
    for secret in secrets {
        for (form, encoded) in forms(secret) {
            for piece in encoded.as_bytes().windows(FRAGMENT.min(encoded.len())) {
                pieces.entry(piece.to_ascii_lowercase()).or_insert(form);
            }
        }
    }
    let sizes: std::collections::BTreeSet<usize> = pieces.keys().map(Vec::len).collect();
    for (place, text) in &texts {
        let lower = text.to_ascii_lowercase();
        for size in &sizes {
            if let Some(form) = lower.windows(*size).find_map(|w| pieces.get(w)) {
                return Some(format!(
                    "the credential ({form}) reached the tool in {place}"
                ));
            }
        }
    }
    None
}

/// The forms of a secret a tool could undo (any `FRAGMENT`-byte piece of one counts, as the
/// scrubber counts it): as it is, hex, and base64 (both alphabets) at every alignment, as an
/// upstream encoding it beside other bytes would.
fn forms(secret: &str) -> Vec<(&'static str, String)> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let bytes = secret.as_bytes();
    let mut forms = vec![
        ("a piece of it", secret.to_string()),
        ("a piece of it, hex", hex::encode(bytes)),
    ];
    for shift in 0..3 {
        let mut shifted = vec![b'x'; shift];
        shifted.extend(bytes);
        for engine in [&STANDARD, &URL_SAFE] {
            let encoded = engine.encode(&shifted);
            // The characters that also encode the bytes before and after it are left out.
            let inner = encoded
                .get(shift.div_ceil(3) * 4..encoded.len().saturating_sub(4))
                .unwrap_or_default();
            if inner.len() >= FRAGMENT {
                forms.push(("base64", inner.to_string()));
            }
        }
    }
    forms
}

/// The `body_hex` values in a `hostile-exfil` output.
fn hex_fields(seen: &str) -> Vec<String> {
    let Some(first) = seen.lines().next() else {
        return Vec::new();
    };
    let Ok(output) = serde_json::from_str::<Value>(first) else {
        return Vec::new();
    };
    output["responses"]
        .as_array()
        .map(|responses| {
            responses
                .iter()
                .filter_map(|r| r["body_hex"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The names and contents of the files below `dir` (links by their target).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let content = match path.symlink_metadata() {
                Ok(m) if m.is_dir() => {
                    stack.push(path.clone());
                    Vec::new()
                }
                Ok(m) if m.is_file() => std::fs::read(&path).unwrap_or_default(),
                _ => std::fs::read_link(&path)
                    .map(|t| t.display().to_string().into_bytes())
                    .unwrap_or_default(),
            };
            found.insert(path, content);
        }
    }
    found
}

/// The bytes the files below `dir` take, as their sizes say (a sparse file counts whole).
fn usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.path().symlink_metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Removes everything below `dir`, keeping `dir`.
fn empty(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        if path.symlink_metadata()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_read_as_a_server_reads_it() {
        assert!(glob_match("/v1/*", "/v1/drill"));
        assert!(glob_match("/v1/*/items", "/v1/a/b/items"));
        assert!(!glob_match("/v1/*/items", "/v1/a/other"));
        assert!(glob_match("/status", "/status"));
        assert!(!glob_match("/status", "/status-x"));
        let decoded = |raw: &str| decode(&decode(raw)).replace('\\', "/");
        assert_eq!(decoded("/v1/%252e%252e/x"), "/v1/../x");
        assert_eq!(decoded("/v1/..%5cx"), "/v1/../x");
        assert_eq!(decoded("/%"), "/%");
        assert_eq!(decoded("/%e"), "/%e");
    }

    #[test]
    fn a_credential_is_found_in_any_form_the_scrubber_removes() {
        use base64::Engine as _;
        let secret = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        let found = |text: &str| leaked(text, &[secret.into()], false).is_some();
        assert!(!found("nothing here [REDACTED]"));
        assert!(found(&format!("x{secret}x")));
        assert!(found(&secret[..secret.len() / 2]));
        assert!(found(&hex::encode(&secret[20..40])));
        for prefix in ["", "u", "us", "user:"] {
            let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{prefix}{secret}"));
            assert!(found(&b64), "{prefix}");
        }
    }
}
