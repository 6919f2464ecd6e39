//! The isolation drill: Warden's own hostile components, run under each tool's grants (its
//! mounts in their modes, its egress rules, its credentials, its limits) in a stand-in
//! deployment (`crate::standin`): loopback servers in place of the real upstreams, fresh
//! directories in place of the real mounts, throwaway credentials and one throwaway agent. It
//! writes to the deployment's audit (marked `origin.kind = "drill"`) and nothing else of it.
//!
//! Each attack is judged from the host's side wherever it can be: what reached the loopback
//! servers, what changed on disk, whether the text of a file outside a mount or a credential
//! the upstream saw (in any encoding) turns up in what the tool returned, and how the call
//! ended; a hostile component's report of itself is evidence, never the verdict.

use crate::standin::{Added, Grants, Rule, Running, StandIn, StandInCredential};
use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use warden::call::CallRequest;
use warden::deployment::{CredentialKind, Deployment};
use warden::manifest::{Manifest, MountMode, MountRequest, ToolKind};
use warden::policy::{Origin, OriginKind};
use warden::registry;
use warden::report::{CallReport, ErrorKind};
use warden_test_support::DRILL_TOOLS;
use warden_test_support::loopback::{LoopbackServer, Received};

/// How much longer than its timeout a call may take before the wall-time row says escaped:
/// the host's own scheduling, not the tool's.
const GRACE: Duration = Duration::from_secs(5);

/// What became of one attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Held,
    Escaped,
    NotApplicable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Held => "held",
            Verdict::Escaped => "ESCAPED",
            Verdict::NotApplicable => "n/a",
        }
    }
}

/// One (tool, attack) of the drill.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub tool: String,
    pub attack: String,
    /// The grant attacked: a mount, an egress rule, or `-` for the whole sandbox.
    pub grant: String,
    pub verdict: Verdict,
    pub evidence: String,
    pub seconds: f64,
}

/// Runs the drill for the deployment's tools (or those named).
pub async fn run(deployment: &Deployment, only: &[String]) -> Result<Vec<Row>> {
    let manifests = tools(deployment, only)?;
    // A stand-in deployment per tool: the hostile components keep their own names in each.
    let mut tasks = Vec::new();
    for manifest in &manifests {
        let mut standin = StandIn::new(Some(&deployment.state_dir))?;
        let grants = standin
            .grants(manifest, &deployment.credentials)
            .await
            .with_context(|| format!("{}: tool `{}`", deployment.file.display(), manifest.name))?;
        let mut added = BTreeMap::new();
        for tool in DRILL_TOOLS {
            added.insert(
                tool.name,
                standin.add(tool.name, tool.component, ToolKind::Tool, &grants)?,
            );
        }
        let target = Target {
            running: standin.start()?,
            marker: format!("warden-drill-outside-{}", standin.tag),
            grants,
            added,
            decoy: LoopbackServer::start().await?,
            _standin: standin,
        };
        tasks.push(tokio::spawn(async move { target.drill().await }));
    }
    let mut rows = Vec::new();
    for task in tasks {
        rows.extend(task.await.context("a drill task")??);
    }
    Ok(rows)
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
            row.verdict.as_str(),
            clip(&row.evidence, 100)
        ));
    }
    let count = |v: Verdict| rows.iter().filter(|r| r.verdict == v).count();
    out.push_str(&format!(
        "\n{} held, {} escaped, {} not applicable\n",
        count(Verdict::Held),
        count(Verdict::Escaped),
        count(Verdict::NotApplicable)
    ));
    out
}

fn clip(text: &str, width: usize) -> String {
    let text = text.replace('\n', " ");
    if text.chars().count() <= width {
        text
    } else {
        format!("{}…", text.chars().take(width - 1).collect::<String>())
    }
}

/// One tool's grants, with the hostile components added under them.
struct Target {
    running: Running,
    grants: Grants,
    added: BTreeMap<&'static str, Added>,
    /// The text of every file placed outside a mount.
    marker: String,
    /// A server on another port: anything reaching it escaped.
    decoy: LoopbackServer,
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
            Some(e) => format!("{}: {}", kind_name(e.kind), clip(&e.message, 160)),
            None => "returned".into(),
        }
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
}

impl Target {
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
        for mount in &self.added["hostile-mount"].mounts {
            rows.extend(self.leave_mount(mount).await?);
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
            rows.push(self.not_applicable("leave a mount", "the tool has no mounts"));
        }
        if self.grants.rules.is_empty() {
            rows.push(self.not_applicable("egress", "the tool has no egress rules"));
        }
        Ok(rows)
    }

    async fn slow(&self) -> Result<Vec<Row>> {
        let (memory, cpu, wall, output) =
            tokio::join!(self.memory(), self.cpu(), self.wall_time(), self.output());
        Ok(vec![memory?, cpu?, wall?, output?])
    }

    async fn call(&self, hostile: &str, input: Value) -> Result<Called> {
        let name = &self.added[hostile].name;
        let request =
            CallRequest::new(name.as_str(), input, self.running.caller.clone()).origin(Origin {
                kind: OriginKind::Drill,
                label: format!("isolation drill of {}", self.grants.tool),
            });
        let started = Instant::now();
        let report = self.running.runtime.call(request).await;
        if report.record.error.as_ref().is_some_and(|e| {
            matches!(
                e.kind,
                ErrorKind::Internal
                    | ErrorKind::InvalidTool
                    | ErrorKind::Denied
                    | ErrorKind::InvalidInput
            )
        }) {
            let e = report
                .record
                .error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default();
            bail!(
                "the drill could not run {hostile} under {}'s grants: {e}",
                self.grants.tool
            );
        }
        Ok(Called {
            report,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    fn row(
        &self,
        attack: &str,
        grant: &str,
        escaped: Option<String>,
        held: String,
        seconds: f64,
    ) -> Row {
        Row {
            tool: self.grants.tool.clone(),
            attack: attack.into(),
            grant: grant.into(),
            verdict: if escaped.is_some() {
                Verdict::Escaped
            } else {
                Verdict::Held
            },
            evidence: escaped.unwrap_or(held),
            seconds,
        }
    }

    fn not_applicable(&self, attack: &str, why: &str) -> Row {
        Row {
            tool: self.grants.tool.clone(),
            attack: attack.into(),
            grant: "-".into(),
            verdict: Verdict::NotApplicable,
            evidence: why.into(),
            seconds: 0.0,
        }
    }

    // ---- mounts ---------------------------------------------------------------------------

    /// Out of one mount (`..`, absolute paths, symlinks placed and made, hard links), and
    /// changing it when it is read-only.
    async fn leave_mount(&self, (request, host): &(MountRequest, PathBuf)) -> Result<Vec<Row>> {
        let grant = format!("{} ({})", request.guest, mode(request.mode));
        let outside = host
            .parent()
            .context("a mount's parent")?
            .join("outside.txt");
        std::fs::write(&outside, &self.marker)?;
        std::fs::write(host.join("hello.txt"), "inside")?;
        let _ = std::os::unix::fs::symlink("../outside.txt", host.join("link-rel"));
        let _ = std::os::unix::fs::symlink(&outside, host.join("link-abs"));
        let before = snapshot(host);
        let called = self
            .call(
                "hostile-mount",
                json!({ "mount": request.guest, "outside": outside.display().to_string() }),
            )
            .await?;
        let after = snapshot(host);
        let output = called.report.output.clone().unwrap_or(Value::Null);
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
                .filter(|n| host.join(n).symlink_metadata().is_ok())
                .map(|n| format!("{n} was created in the mount"))
                .next()
        };
        let mut rows = vec![
            self.row(
                "leave mount: ..",
                &grant,
                read_outside("dotdot"),
                held(&tries("dotdot")),
                called.seconds,
            ),
            self.row(
                "leave mount: absolute",
                &grant,
                read_outside("absolute"),
                held(&tries("absolute")),
                called.seconds,
            ),
            self.row(
                "symlink placed",
                &grant,
                read_outside("placed-symlink"),
                held(&tries("placed-symlink")),
                called.seconds,
            ),
            self.row(
                "symlink made",
                &grant,
                read_outside("made-symlink").or_else(|| made(&["made-rel", "made-abs"])),
                held(&tries("made-symlink")),
                called.seconds,
            ),
            self.row(
                "hard link",
                &grant,
                read_outside("hard-link")
                    .or_else(|| made(&["made-hard"]))
                    .or(outside_changed),
                held(&tries("hard-link")),
                called.seconds,
            ),
        ];
        if request.mode == MountMode::Ro {
            let changed = (before != after).then(|| {
                format!(
                    "the read-only mount changed: {}",
                    clip(&tries("write"), 200)
                )
            });
            rows.push(self.row(
                "write read-only",
                &grant,
                changed,
                held(&tries("write")),
                called.seconds,
            ));
        }
        Ok(rows)
    }

    /// More on a read-write mount than the disk quota, in one write, many writes and by
    /// growing a file without writing; measured on the host after each call.
    async fn disk_quota(&self, request: &MountRequest) -> Result<Row> {
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
        for attack in ["big-write", "stream-writes", "set-size"] {
            empty(host)?;
            let called = self
                .call(
                    "hostile-disk",
                    json!({
                        "attack": attack,
                        "mount": request.guest,
                        "bytes": 2 * quota,
                        "start": quota.saturating_sub(256 << 10),
                    }),
                )
                .await?;
            seconds += called.seconds;
            let used = usage(host);
            if used > quota {
                return Ok(self.row(
                    "disk quota",
                    &grant,
                    Some(format!(
                        "{attack}: the mount holds {used} bytes, over the quota of {quota}"
                    )),
                    String::new(),
                    seconds,
                ));
            }
            evidence.push(format!("{attack}: {used} bytes, {}", called.ended()));
        }
        empty(host)?;
        Ok(self.row("disk quota", &grant, None, evidence.join("; "), seconds))
    }

    // ---- egress ---------------------------------------------------------------------------

    /// Requests outside one rule: another host, port, path or method, URL-form tricks, and
    /// more requests than the call's budget.
    async fn egress(&self, rule: &Rule) -> Result<Vec<Row>> {
        let upstream = &rule.upstream;
        let port = upstream.addr.port();
        let decoy = self.decoy.addr;
        let inside = inside_path(&rule.path);
        let method = rule
            .methods
            .first()
            .cloned()
            .unwrap_or_else(|| "GET".into());
        let request = |authority: String, path: &str, method: &str| json!({ "method": method, "scheme": "http", "authority": authority, "path": path });
        let mut rows = Vec::new();

        let (called, got) = self
            .egress_call(
                rule,
                vec![request(format!("localhost:{port}"), &inside, &method)],
            )
            .await?;
        let escaped = got
            .iter()
            .find(|r| header(r, "host") != Some(format!("127.0.0.1:{port}")))
            .map(|r| {
                format!(
                    "the upstream received a request for host {:?}",
                    header(r, "host")
                )
            });
        rows.push(self.row(
            "egress: other host",
            &rule.real,
            escaped,
            called.summary(),
            called.seconds,
        ));

        let (called, _) = self
            .egress_call(rule, vec![request(decoy.to_string(), &inside, &method)])
            .await?;
        rows.push(self.row(
            "egress: other port",
            &rule.real,
            self.decoy_reached(),
            called.summary(),
            called.seconds,
        ));

        if rule.path == "/*" {
            rows.push(self.na_for(rule, "egress: other path", "the rule allows every path"));
        } else {
            let outside = outside_path(&rule.path);
            let (called, got) = self
                .egress_call(
                    rule,
                    vec![request(format!("127.0.0.1:{port}"), &outside, &method)],
                )
                .await?;
            rows.push(self.row(
                "egress: other path",
                &rule.real,
                outside_rule(rule, &got),
                called.summary(),
                called.seconds,
            ));
        }

        match ["DELETE", "POST", "PUT", "PATCH", "GET", "HEAD", "OPTIONS"]
            .into_iter()
            .find(|m| !rule.methods.iter().any(|allowed| allowed == m))
        {
            None => {
                rows.push(self.na_for(rule, "egress: other method", "the rule allows every method"))
            }
            Some(other) => {
                let (called, got) = self
                    .egress_call(
                        rule,
                        vec![request(format!("127.0.0.1:{port}"), &inside, other)],
                    )
                    .await?;
                let escaped = got
                    .iter()
                    .find(|r| r.method == other)
                    .map(|r| format!("the upstream received {} {}", r.method, r.path));
                rows.push(self.row(
                    "egress: other method",
                    &rule.real,
                    escaped,
                    called.summary(),
                    called.seconds,
                ));
            }
        }

        // The same rule, written so that a parser that reads it differently from the one that
        // decided would reach somewhere else.
        let prefix = inside.trim_end_matches("drill");
        let here = format!("127.0.0.1:{port}");
        let tricks = vec![
            request(here.clone(), &format!("{prefix}../drill-outside"), &method),
            request(
                here.clone(),
                &format!("{prefix}%2e%2e/drill-outside"),
                &method,
            ),
            request(
                here.clone(),
                &format!("{prefix}%2E%2E%2Fdrill-outside"),
                &method,
            ),
            request(
                here.clone(),
                &format!("{prefix}..%2fdrill-outside"),
                &method,
            ),
            request(
                here.clone(),
                &format!("{prefix}..%5cdrill-outside"),
                &method,
            ),
            request(
                here.clone(),
                &format!("{prefix}%252e%252e/drill-outside"),
                &method,
            ),
            request(format!("{here}@{decoy}"), &inside, &method),
            request(format!("{decoy}#@{here}"), &inside, &method),
            request(format!("127.0.0.1.:{}", decoy.port()), &inside, &method),
            request(format!("0x7f.1:{}", decoy.port()), &inside, &method),
            request(
                format!("[::ffff:127.0.0.1]:{}", decoy.port()),
                &inside,
                &method,
            ),
        ];
        let (called, got) = self.egress_call(rule, tricks).await?;
        let escaped = self.decoy_reached().or_else(|| outside_rule(rule, &got));
        rows.push(self.row(
            "egress: url tricks",
            &rule.real,
            escaped,
            called.summary(),
            called.seconds,
        ));

        let budget = self.grants.limits.egress_requests;
        let mut flood = request(here.clone(), &inside, &method);
        flood["repeat"] = json!(budget + 3);
        let (called, got) = self.egress_call(rule, vec![flood]).await?;
        let escaped = (got.len() > budget as usize).then(|| {
            format!(
                "{} requests reached the upstream; the budget is {budget}",
                got.len()
            )
        });
        rows.push(self.row(
            "request budget",
            &rule.real,
            escaped,
            format!(
                "{} of {} requests reached the upstream",
                got.len(),
                budget + 3
            ),
            called.seconds,
        ));
        Ok(rows)
    }

    /// Calls `hostile-egress` with `requests`; returns what reached the rule's upstream.
    async fn egress_call(
        &self,
        rule: &Rule,
        requests: Vec<Value>,
    ) -> Result<(Called, Vec<Received>)> {
        let before = rule.upstream.received().len();
        let called = self
            .call("hostile-egress", json!({ "requests": requests }))
            .await?;
        let got = rule.upstream.received().split_off(before);
        Ok((called, got))
    }

    fn decoy_reached(&self) -> Option<String> {
        self.decoy
            .received()
            .first()
            .map(|r| format!("a server on another port received {} {}", r.method, r.path))
    }

    fn na_for(&self, rule: &Rule, attack: &str, why: &str) -> Row {
        Row {
            grant: rule.real.clone(),
            ..self.not_applicable(attack, why)
        }
    }

    // ---- credentials ----------------------------------------------------------------------

    /// The credential the host adds to one rule's requests, read back from echoes of it (in
    /// headers, bodies, compressed, split, cut off, encoded) and from everywhere a spy looks.
    async fn read_back(&self, rule: &Rule, credential: &StandInCredential) -> Result<Vec<Row>> {
        let grant = format!("{} ({})", rule.real, credential_kind(credential));
        if !rule.path.ends_with('*') {
            return Ok(vec![Row {
                grant,
                ..self.not_applicable(
                    "credential read-back",
                    "an exact-path rule leaves no path for an echo",
                )
            }]);
        }
        let base = rule
            .upstream
            .url(inside_path(&rule.path).trim_end_matches("drill"));
        let header = &credential.header;
        let echo = |suffix: &str| json!({ "url": format!("{base}{suffix}") });
        let mut gzip = echo("echo-headers-gzip");
        gzip["headers"] = json!([["accept-encoding", "gzip"]]);
        let requests = json!([
            echo("echo-headers"),
            gzip,
            echo("echo-headers-gzip-always"),
            echo("echo-headers-split"),
            echo("echo-headers-truncated"),
            echo(&format!("echo-key-forms?header={header}")),
        ]);
        let before = rule.upstream.received().len();
        let exfil = self
            .call("hostile-exfil", json!({ "requests": requests }))
            .await?;
        let spy = self
            .call(
                "hostile-spy",
                json!({ "urls": [format!("{base}echo-headers")] }),
            )
            .await?;
        let sent = rule.upstream.received().split_off(before);
        let mut secrets: Vec<String> = sent
            .iter()
            .filter_map(|r| header_value(r, header))
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(&v).to_string())
            .filter(|v| !v.is_empty())
            .collect();
        secrets.extend(credential.value.clone());
        secrets.sort();
        secrets.dedup();
        let carried = format!(
            "{} of {} requests carried it",
            sent.iter()
                .filter(|r| header_value(r, header).is_some())
                .count(),
            sent.len()
        );
        if secrets.is_empty() {
            return Ok(vec![Row {
                grant,
                ..self.not_applicable(
                    "credential read-back",
                    "the upstream received no credential to read back",
                )
            }]);
        }
        Ok(vec![
            self.row(
                "credential read-back",
                &grant,
                leaked(&exfil.seen(), &secrets, true),
                format!("no echo reached the tool; {carried}"),
                exfil.seconds,
            ),
            self.row(
                "credential in sandbox",
                &grant,
                leaked(&spy.seen(), &secrets, false),
                "not in the environment, mounts, call context or responses".into(),
                spy.seconds,
            ),
        ])
    }

    // ---- the whole sandbox ----------------------------------------------------------------

    /// Raw sockets and name lookups, aimed at a loopback server that records any arrival.
    async fn network(&self) -> Result<Vec<Row>> {
        let decoy = self.decoy.addr.to_string();
        let mut rows = Vec::new();
        for (attack, name, target) in [
            ("dns", "name lookup", "localhost:80".to_string()),
            ("tcp", "raw tcp", decoy.clone()),
            ("udp", "raw udp", decoy.clone()),
            ("tcp-listen", "listen", String::new()),
        ] {
            let called = self
                .call("hostile-net", json!({ "attack": attack, "target": target }))
                .await?;
            let output = called.report.output.clone().unwrap_or(Value::Null);
            let escaped = (output["escaped"] == json!(true))
                .then(|| output["detail"].to_string())
                .or_else(|| self.decoy_reached());
            rows.push(self.row(
                name,
                "-",
                escaped,
                held(&output["detail"].to_string()),
                called.seconds,
            ));
        }
        Ok(rows)
    }

    async fn environment(&self) -> Result<Row> {
        let called = self.call("hostile-env", json!({})).await?;
        let output = called.report.output.clone().unwrap_or(Value::Null);
        let name = &self.added["hostile-env"].name;
        let escaped = match (&output["env"], &output["args"]) {
            (env, _) if env != &json!([]) => Some(format!(
                "the tool sees variables: {}",
                clip(&env.to_string(), 200)
            )),
            (_, args) if args != &json!([name]) => Some(format!("the tool sees arguments: {args}")),
            _ => None,
        };
        Ok(self.row(
            "environment",
            "-",
            escaped,
            "no variables; its name as the only argument".into(),
            called.seconds,
        ))
    }

    async fn memory(&self) -> Result<Row> {
        let limit = self.grants.limits.memory;
        let megabytes = limit.0 / (1 << 20) + 16;
        let called = self
            .call("hostile-memory", json!({ "megabytes": megabytes }))
            .await?;
        let escaped = called
            .report
            .output
            .as_ref()
            .map(|_| format!("allocated {megabytes} MiB under a limit of {limit}"));
        Ok(self.row(
            "memory",
            &format!("limits.memory {limit}"),
            escaped,
            called.ended(),
            called.seconds,
        ))
    }

    async fn cpu(&self) -> Result<Row> {
        let timeout = self.grants.limits.timeout;
        let called = self
            .call("hostile-cpu", json!({ "attack": "loop" }))
            .await?;
        let stopped = matches!(
            called.kind(),
            Some(ErrorKind::CpuLimit | ErrorKind::Timeout)
        );
        let escaped = if !stopped {
            Some(format!("the spinning call ended with {}", called.ended()))
        } else {
            late(&called, timeout)
        };
        let grant = format!(
            "limits.cpu {}",
            warden::units::format_duration(self.grants.limits.cpu_budget())
        );
        Ok(self.row(
            "cpu",
            &grant,
            escaped,
            format!("{} after {:.1}s", called.ended(), called.seconds),
            called.seconds,
        ))
    }

    async fn wall_time(&self) -> Result<Row> {
        let timeout = self.grants.limits.timeout;
        let called = self
            .call("hostile-cpu", json!({ "attack": "sleep" }))
            .await?;
        let escaped = if called.kind() != Some(ErrorKind::Timeout) {
            Some(format!("the sleeping call ended with {}", called.ended()))
        } else {
            late(&called, timeout)
        };
        let grant = format!("limits.timeout {}", warden::units::format_duration(timeout));
        Ok(self.row(
            "wall time",
            &grant,
            escaped,
            format!("timeout after {:.1}s", called.seconds),
            called.seconds,
        ))
    }

    async fn output(&self) -> Result<Row> {
        let limit = self.grants.limits.output;
        let megabytes = limit.0 / (1 << 20) + 1;
        let called = self
            .call(
                "hostile-flood",
                json!({ "attack": "output", "megabytes": megabytes }),
            )
            .await?;
        let escaped = called.report.output.as_ref().map(|o| {
            format!(
                "returned {} bytes under a limit of {limit}",
                o.to_string().len()
            )
        });
        Ok(self.row(
            "output",
            &format!("limits.output {limit}"),
            escaped,
            called.ended(),
            called.seconds,
        ))
    }

    async fn stdio(&self) -> Result<Row> {
        let limit = self.grants.limits.stdio;
        let megabytes = limit.0 / (1 << 20) + 1;
        let called = self
            .call(
                "hostile-flood",
                json!({ "attack": "stdout", "megabytes": megabytes }),
            )
            .await?;
        let kept = called.report.stdout.len().max(called.report.stderr.len()) as u64;
        let escaped = (kept > limit.0).then(|| format!("kept {kept} bytes of output stream"));
        Ok(self.row(
            "stdout flood",
            &format!("limits.stdio {limit}"),
            escaped,
            format!("{megabytes} MiB written, {kept} bytes kept"),
            called.seconds,
        ))
    }
}

impl Called {
    /// What each request of a `hostile-egress` call got, in short.
    fn summary(&self) -> String {
        match &self.report.output {
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

fn kind_name(kind: ErrorKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The verdict "held", with what the tool got instead.
fn held(tries: &str) -> String {
    clip(tries, 300)
}

fn late(called: &Called, timeout: Duration) -> Option<String> {
    (called.seconds > (timeout + GRACE).as_secs_f64()).then(|| {
        format!(
            "stopped after {:.1}s, past its timeout of {}s",
            called.seconds,
            timeout.as_secs_f64()
        )
    })
}

fn mode(mode: MountMode) -> &'static str {
    match mode {
        MountMode::Ro => "ro",
        MountMode::Rw => "rw",
    }
}

fn credential_kind(c: &StandInCredential) -> &'static str {
    match c.kind {
        CredentialKind::Minted => "minted",
        CredentialKind::Static => "static",
    }
}

/// A path the rule allows: below its prefix, or the exact path.
fn inside_path(pattern: &str) -> String {
    match pattern.strip_suffix('*') {
        Some(prefix) => format!("{prefix}drill"),
        None => pattern.to_string(),
    }
}

/// A path the rule does not allow, beside it.
fn outside_path(pattern: &str) -> String {
    match pattern.strip_suffix('*') {
        Some(prefix) => format!("{}-drill-outside/x", prefix.trim_end_matches('/')),
        None => format!("{pattern}-drill-outside"),
    }
}

/// A request that reached the upstream although the rule does not allow its path, read as
/// a server would: percent-decoded (twice), backslashes as slashes, dot segments resolved.
/// Written apart from Warden's own normalisation, so as not to share its mistakes.
fn outside_rule(rule: &Rule, got: &[Received]) -> Option<String> {
    got.iter()
        .find(|r| !allowed_path(&rule.path, &r.path))
        .map(|r| format!("the upstream received {} {}", r.method, r.path))
}

fn allowed_path(pattern: &str, raw: &str) -> bool {
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
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix) || format!("{path}/") == prefix,
        None => path == pattern,
    }
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header(r: &Received, name: &str) -> Option<String> {
    header_value(r, name)
}

fn header_value(r: &Received, name: &str) -> Option<String> {
    r.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// Where one of `secrets` shows in `seen`: as it is, in the encodings a tool could undo, and
/// (with `bodies`) inside the raw response bodies `hostile-exfil` returns as hex, inflated.
fn leaked(seen: &str, secrets: &[String], bodies: bool) -> Option<String> {
    let mut texts = vec![("the output".to_string(), seen.to_string())];
    if bodies {
        for (i, hex) in hex_fields(seen).into_iter().enumerate() {
            let Ok(bytes) = hex::decode(&hex) else {
                continue;
            };
            texts.push((
                format!("response {i}'s body"),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
            let mut inflated = Vec::new();
            if std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(&bytes[..]),
                &mut inflated,
            )
            .is_ok()
            {
                texts.push((
                    format!("response {i}'s body, inflated"),
                    String::from_utf8_lossy(&inflated).into_owned(),
                ));
            }
        }
    }
    for secret in secrets {
        for (form, encoded) in forms(secret) {
            if let Some((place, _)) = texts.iter().find(|(_, text)| text.contains(&encoded)) {
                return Some(format!(
                    "the credential ({form}) reached the tool in {place}"
                ));
            }
        }
    }
    None
}

/// A secret in the forms a tool could undo; for a JWT also its signature alone.
fn forms(secret: &str) -> Vec<(&'static str, String)> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let mut forms = vec![
        ("as it is", secret.to_string()),
        ("base64", STANDARD.encode(secret)),
        ("base64url", URL_SAFE_NO_PAD.encode(secret)),
        ("hex", hex::encode(secret)),
    ];
    if let Some(signature) = secret
        .rsplit('.')
        .next()
        .filter(|s| s.len() >= 16 && *s != secret)
    {
        forms.push(("its signature", signature.to_string()));
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

/// The names and contents of the files below `dir`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let meta = entry.path().symlink_metadata();
            match meta {
                Ok(m) if m.is_dir() => {
                    found.insert(path.clone(), Vec::new());
                    stack.push(path);
                }
                Ok(m) if m.is_file() => {
                    found.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
                }
                _ => {
                    found.insert(path, b"(link)".to_vec());
                }
            }
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
    fn a_server_reads_every_spelling_of_a_way_out() {
        assert!(allowed_path("/v1/*", "/v1/drill"));
        assert!(!allowed_path("/v1/*", "/v1/../admin"));
        assert!(!allowed_path("/v1/*", "/v1/%2e%2e/admin"));
        assert!(!allowed_path("/v1/*", "/v1/%252e%252e/admin"));
        assert!(!allowed_path("/v1/*", "/v1/..%5cadmin"));
        assert!(allowed_path("/status", "/status"));
        assert!(!allowed_path("/status", "/status-x"));
    }

    #[test]
    fn a_credential_is_found_in_any_form() {
        let secret = "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        assert!(leaked("nothing here", &[secret.into()], false).is_none());
        assert!(leaked(&format!("x{secret}x"), &[secret.into()], false).is_some());
        assert!(leaked("c2lnbmF0dXJlLXNpZ25hdHVyZQ", &[secret.into()], false).is_some());
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, secret);
        assert!(leaked(&b64, &[secret.into()], false).is_some());
    }
}
