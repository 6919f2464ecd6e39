//! The revocation drill: proves on a deployment's own state store (and its signing key and
//! compile cache) that revoking each kind of thing stops a call that is already running at
//! its next request, refuses the next call, and evicts a revoked tool from every cache.
//!
//! A last row proves that downstream systems hear of revocations: a loopback receiver gets
//! the drill's revocation events, signed, and verifies them with the deployment's key set
//! (what `warden jwks` prints).
//!
//! It uses throwaway principals only (agents, a user, a credential, a copy of the
//! `hostile-http` tool with a digest of its own and an event receiver), and a loopback
//! upstream it starts, so it never revokes anything real, and tells no real receiver. Its
//! calls, revocations and events are recorded like any other.

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use warden::call::{CallRequest, Caller};
use warden::credentials::Secret;
use warden::deployment::{Deployment, SecretSource};
use warden::identity::{assertion, delegation, jwt, keys};
use warden::manifest::Digest;
use warden::policy::{Origin, OriginKind};
use warden::report::CallReport;
use warden::runtime::{Found, Runtime};
use warden::sandbox::http::EgressDecision;
use warden::security_events as events;
use warden::state::RevocationKind;
use warden_test_support::loopback::{Hold, LoopbackServer, Received};

/// The component the drill runs: it sends the requests its input lists, one after another.
const HOSTILE_HTTP: &[u8] = warden_test_support::HOSTILE_HTTP.component;
const TOOL: &str = "hostile-http";
/// How long the drill waits for a call to reach the upstream or to end.
const WAIT: Duration = Duration::from_secs(60);

/// Who revokes during the drill.
pub enum Revoker {
    /// Another `warden` process (this binary), as an operator would: with the drill's own
    /// configuration, or with another node's (`config`: a deployment on the same state store,
    /// with its own state directory), so that calls run on this node and revocations are made
    /// on that one.
    Process {
        warden: PathBuf,
        config: Option<PathBuf>,
    },
    /// Another runtime in this process (its own caches, the same store).
    Runtime,
}

/// One revocable kind, drilled (or, `kind` "event", the receiver's row).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub kind: String,
    pub id: String,
    /// What became of the running call's next request.
    pub next_request: String,
    /// What became of the next call (for a credential: what introspection says).
    pub next_call: String,
    pub passed: bool,
}

/// Runs the drill for every kind against `deployment`'s state store.
pub async fn run(deployment: &Deployment, revoker: Revoker) -> Result<Vec<Row>> {
    let (arrived, mut arrivals) = mpsc::channel::<(Received, oneshot::Sender<()>)>(1);
    let hold: Hold = Arc::new(move |received| {
        let arrived = arrived.clone();
        Box::pin(async move {
            let (release, released) = oneshot::channel();
            if arrived.send((received, release)).await.is_ok() {
                let _ = released.await;
            }
        })
    });
    let upstream = LoopbackServer::start_with(Some(hold)).await?;
    let scratch = tempfile::tempdir().context("making the drill's directory")?;
    let mut drill = Drill::write(scratch.path(), deployment, &upstream.url(""))?;
    let runtime = Arc::new(Runtime::new(Deployment::load(&drill.config)?)?);

    let mut rows = Vec::new();
    // The tool and its publisher last: revoking either stops every row after it (the
    // publisher's row runs a rebuild of the tool, with a digest of its own).
    for kind in [
        RevocationKind::Agent,
        RevocationKind::Delegation,
        RevocationKind::Session,
        RevocationKind::Credential,
        RevocationKind::Tool,
        RevocationKind::Publisher,
    ] {
        if kind == RevocationKind::Publisher {
            drill.digest = drill.install_tool(scratch.path(), "rebuilt")?;
        }
        let row = drill
            .row(&runtime, kind, &upstream, &mut arrivals, &revoker)
            .await
            .with_context(|| format!("drilling {} revocation", kind.as_str()))?;
        rows.push(row);
    }
    rows.push(drill.event_row(&runtime, &upstream).await?);
    Ok(rows)
}

/// The rows as a table.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<11} {:<38} {:<14} {:<18} {}\n",
        "kind", "revoked", "next request", "next call", "result"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<11} {:<38} {:<14} {:<18} {}",
            row.kind.as_str(),
            crate::clip(&row.id, 38),
            row.next_request,
            row.next_call,
            if row.passed { "pass" } else { "FAIL" }
        );
    }
    out
}

/// The throwaway deployment: its file, principals and tool.
struct Drill {
    config: PathBuf,
    tag: String,
    user_key: ed25519_dalek::SigningKey,
    /// The throwaway publisher that signs the drill's tool.
    publisher_key: ed25519_dalek::SigningKey,
    agent_keys: Vec<(RevocationKind, ed25519_dalek::SigningKey)>,
    digest: Digest,
    origin: String,
}

impl Drill {
    fn write(dir: &Path, deployment: &Deployment, origin: &str) -> Result<Drill> {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let agent_keys: Vec<_> = RevocationKind::ALL
            .into_iter()
            .map(|kind| (kind, keys::generate()))
            .collect();
        let mut drill = Drill {
            config: dir.join("warden.toml"),
            tag: tag.clone(),
            user_key: keys::generate(),
            publisher_key: keys::generate(),
            agent_keys,
            digest: Digest::of(b""),
            origin: origin.to_string(),
        };
        drill.digest = drill.install_tool(dir, "")?;
        std::fs::create_dir_all(dir.join("policies"))?;
        std::fs::write(
            dir.join("policies/drill.cedar"),
            "@id(\"drill\")\npermit(principal, action, resource);\n",
        )?;
        let state_dir = std::path::absolute(&deployment.state_dir)?;
        let mut toml = format!(
            "state_dir = {:?}\ntool_dirs = [\"tools\"]\npolicy_dir = \"policies\"\n\n\
             [users.drill-{tag}]\npublic_key = \"{}\"\n\n\
             [credentials.drill-{tag}]\naudience = \"{origin}\"\ntools = [\"{TOOL}\"]\n",
            state_dir.display().to_string(),
            keys::format_public(&drill.user_key.verifying_key()),
        );
        // The deployment's state store, wherever it is.
        if let Some(url) = &deployment.state.url {
            let _ = write!(
                toml,
                "\n[state]\nurl = {url:?}\nconnections = {}\n",
                deployment.state.connections
            );
            if let Some(name) = &deployment.state.password {
                let _ = write!(toml, "password = {name:?}\n\n[secrets.{name:?}]\n");
                let _ = match &deployment.secrets[name] {
                    SecretSource::File(path) => {
                        writeln!(toml, "file = {:?}", path.display().to_string())
                    }
                    SecretSource::Env(var) => writeln!(toml, "env = {var:?}"),
                };
            }
        }
        for (kind, key) in &drill.agent_keys {
            let _ = write!(
                toml,
                "\n[agents.drill-{tag}-{}]\npublic_key = \"{}\"\n",
                kind.as_str(),
                keys::format_public(&key.verifying_key())
            );
        }
        let _ = write!(
            toml,
            "\n[event_receivers.drill-{tag}]\nurl = \"{}\"\n\n\
             [publishers.drill-{tag}]\npublic_key = \"{}\"\n",
            events_url(origin),
            keys::format_public(&drill.publisher_key.verifying_key())
        );
        std::fs::write(&drill.config, toml)?;
        Ok(drill)
    }

    /// Writes the drill's tool into `dir/tools`, signed by the drill's publisher, with a
    /// digest of its own (so that revoking it touches no other tool): the component with a
    /// custom section holding the tag and `build` appended (wasm ignores custom sections).
    fn install_tool(&self, dir: &Path, build: &str) -> Result<Digest> {
        let mut component = HOSTILE_HTTP.to_vec();
        let name = b"warden-drill";
        let tag = format!("{}{build}", self.tag);
        component.extend([0, (1 + name.len() + tag.len()) as u8, name.len() as u8]);
        component.extend(name);
        component.extend(tag.as_bytes());
        let digest = Digest::of(&component);
        let tool_dir = dir.join("tools").join(TOOL);
        std::fs::create_dir_all(&tool_dir)?;
        std::fs::write(tool_dir.join("drill.wasm"), &component)?;
        let manifest = format!(
            "name = \"{TOOL}\"\ncomponent = \"drill.wasm\"\ndigest = \"{digest}\"\n\
             impact = \"read\"\nsensitivity = \"public\"\n[limits]\ntimeout = \"{}s\"\n\
             [[egress]]\nurl = \"{}/*\"\nallow_private = true\n\
             credential = \"drill-{}\"\n",
            WAIT.as_secs(),
            self.origin,
            self.tag
        );
        std::fs::write(tool_dir.join("tool.toml"), &manifest)?;
        let signature = warden::signing::sign(&self.publisher_key, &digest, manifest.as_bytes());
        std::fs::write(
            tool_dir.join(warden::signing::SIGNATURE_FILE),
            serde_json::to_string(&signature)?,
        )?;
        Ok(digest)
    }

    /// Starts a call of the row's agent, revokes `kind` while its first request is held,
    /// and checks what happens next.
    async fn row(
        &self,
        runtime: &Arc<Runtime>,
        kind: RevocationKind,
        upstream: &LoopbackServer,
        arrivals: &mut mpsc::Receiver<(Received, oneshot::Sender<()>)>,
        revoker: &Revoker,
    ) -> Result<Row> {
        let agent = format!("drill-{}-{}", self.tag, kind.as_str());
        let key = &self
            .agent_keys
            .iter()
            .find(|(k, _)| *k == kind)
            .expect("a key per kind")
            .1;
        let authenticated = runtime
            .authenticate(&Secret::new(assertion::sign_session(key, &agent)))
            .map_err(|e| anyhow!("authenticating {agent}: {e}"))?;
        let token = Secret::new(delegation::issue(
            &self.user_key,
            &format!("drill-{}", self.tag),
            &agent,
            &[TOOL.to_string()],
            Duration::from_secs(600),
        ));
        let delegation_id = runtime
            .verify_delegation(&token, &agent)
            .map_err(|e| anyhow!("the drill's delegation: {e}"))?
            .id;
        let session = runtime
            .start_session(&agent, Some(&token))
            .map_err(|e| anyhow!("starting a session: {e}"))?;
        let base = format!("{}/drill/{}", self.origin, kind.as_str());
        let request = CallRequest::new(
            TOOL,
            serde_json::json!({
                "url": format!("{base}/hold"),
                "then": [{ "url": format!("{base}/after") }],
            }),
            Caller::Authenticated(authenticated),
        )
        .on_behalf_of(token)
        .session(session.id.clone())
        .origin(Origin {
            kind: OriginKind::Drill,
            label: "revocation drill".into(),
        });

        let running = tokio::spawn({
            let runtime = runtime.clone();
            let request = request.clone();
            async move { runtime.call(request).await }
        });
        let (held, release) = tokio::time::timeout(WAIT, arrivals.recv())
            .await
            .map_err(|_| anyhow!("the call's first request did not reach the upstream"))?
            .ok_or_else(|| anyhow!("the upstream stopped"))?;
        let minted = bearer(&held).ok_or_else(|| anyhow!("the request carried no credential"))?;
        let id = match kind {
            RevocationKind::Agent => agent.clone(),
            RevocationKind::Delegation => delegation_id,
            RevocationKind::Session => session.id.clone(),
            RevocationKind::Credential => {
                if !runtime.introspect(&minted)?.active {
                    bail!("the credential was inactive before it was revoked");
                }
                jwt::peek_claims::<warden::revocation::MintedClaims>(&minted)
                    .map_err(|e| anyhow!("the minted token: {e}"))?
                    .jti
            }
            RevocationKind::Tool => self.digest.to_string(),
            RevocationKind::Publisher => keys::format_public(&self.publisher_key.verifying_key()),
        };
        self.revoke(revoker, kind, &id).await?;
        let _ = release.send(());
        let report = tokio::time::timeout(WAIT, running)
            .await
            .map_err(|_| anyhow!("the call did not end"))??;

        let stopped =
            report.egress.get(1).is_some_and(|r| {
                r.decision == EgressDecision::Deny && revoked(r.reason.as_deref())
            }) && !upstream
                .received()
                .iter()
                .any(|r| r.path == format!("/drill/{}/after", kind.as_str()));
        let (next_call, next_ok) = match kind {
            RevocationKind::Credential => {
                let active = runtime.introspect(&minted)?.active;
                (if active { "active!" } else { "inactive" }, !active)
            }
            _ => {
                let next = runtime.call(request).await;
                let refused = refused(&next);
                let evicted = match kind {
                    RevocationKind::Tool => self.evicted(runtime),
                    // Its tools leave the warm map; their compiled forms stay (refused anyway).
                    RevocationKind::Publisher => !matches!(runtime.find(TOOL), Ok(Found::Warm(_))),
                    _ => true,
                };
                match (refused, evicted) {
                    (true, true) if kind == RevocationKind::Tool => ("refused, evicted", true),
                    (true, true) if kind == RevocationKind::Publisher => ("refused, dropped", true),
                    (true, true) => ("refused", true),
                    (true, false) => ("refused, cached!", false),
                    (false, _) => ("ran!", false),
                }
            }
        };
        Ok(Row {
            kind: kind.as_str().into(),
            id,
            next_request: if stopped { "stopped" } else { "sent!" }.into(),
            next_call: next_call.into(),
            passed: stopped && next_ok,
        })
    }

    async fn revoke(&self, revoker: &Revoker, kind: RevocationKind, id: &str) -> Result<()> {
        match revoker {
            Revoker::Runtime => {
                Runtime::new(Deployment::load(&self.config)?)?.revoke(
                    kind,
                    id,
                    "revocation drill",
                )?;
            }
            Revoker::Process { warden, config } => {
                let out = tokio::process::Command::new(warden)
                    .arg("--config")
                    .arg(config.as_ref().unwrap_or(&self.config))
                    .args(["revoke", kind.as_str(), id, "--reason", "revocation drill"])
                    .output()
                    .await
                    .with_context(|| format!("running {}", warden.display()))?;
                if !out.status.success() {
                    bail!(
                        "`warden revoke` failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
            }
        }
        Ok(())
    }

    /// Revokes a throwaway session with the drill's configuration (which names the loopback
    /// receiver), has the drill's runtime deliver the events due, and checks what the
    /// receiver got: every event verifies with the deployment's key set, for the receiver's
    /// audience, and this revocation's event is among them.
    async fn event_row(&self, runtime: &Runtime, upstream: &LoopbackServer) -> Result<Row> {
        let session = format!("drill-{}-event", self.tag);
        Runtime::new(Deployment::load(&self.config)?)?.revoke(
            RevocationKind::Session,
            &session,
            "revocation drill",
        )?;
        let failed: Vec<String> = runtime
            .deliver_revocation_events()
            .await?
            .into_iter()
            .filter_map(|d| d.error)
            .collect();
        let keys =
            warden::credentials::mint::KeyStore::new(&runtime.deployment().state_dir).jwks()?;
        let url = events_url(&self.origin);
        let received: Vec<_> = upstream
            .received()
            .into_iter()
            .filter(|r| r.path == "/collect/drill-events")
            .collect();
        let checked: Vec<Result<events::EventClaims, String>> = received
            .iter()
            .map(|r| {
                let token = String::from_utf8_lossy(&r.body);
                events::verify(&token, &keys, &url)
            })
            .collect();
        let ours = checked.iter().flatten().find(|claims| {
            claims.sub_id.id == format!("session:{session}")
                && claims.events.contains_key(events::SESSION_REVOKED)
        });
        let verified = !checked.is_empty() && checked.iter().all(Result::is_ok);
        Ok(Row {
            kind: "event".into(),
            id: ours.map_or_else(|| session.clone(), |c| c.jti.clone()),
            next_request: match (ours, failed.first()) {
                (Some(_), _) => "acknowledged".into(),
                (None, Some(_)) => "refused!".into(),
                (None, None) => "not sent!".into(),
            },
            next_call: match verified {
                true => format!("{} verified", checked.len()),
                false => "not verified!".into(),
            },
            passed: ours.is_some() && verified,
        })
    }

    /// Neither warm in the runtime nor compiled in the cache.
    fn evicted(&self, runtime: &Runtime) -> bool {
        let warm = matches!(runtime.find(TOOL), Ok(Found::Warm(_)));
        let prefix = format!("{}-", self.digest.hex());
        let cached = std::fs::read_dir(runtime.deployment().cache_dir())
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            })
            .unwrap_or(false);
        !warm && !cached
    }
}

/// Where the drill's receiver listens: on the drill's upstream, which keeps what is posted
/// under `/collect`.
fn events_url(origin: &str) -> String {
    format!("{origin}/collect/drill-events")
}

fn bearer(received: &Received) -> Option<String> {
    received
        .headers
        .iter()
        .find(|(name, _)| name == "authorization")
        .and_then(|(_, value)| value.strip_prefix("Bearer "))
        .map(str::to_string)
}

fn revoked(reason: Option<&str>) -> bool {
    reason.is_some_and(|r| r.contains("was revoked"))
}

fn refused(report: &CallReport) -> bool {
    report
        .record
        .error
        .as_ref()
        .is_some_and(|e| e.kind == warden::ErrorKind::Denied && revoked(Some(e.message.as_str())))
}
