//! A throwaway deployment that gives components a real tool's grants with nothing real behind
//! them: each egress rule's origin is a loopback server started for it (same path, methods and
//! credential name), each mount a fresh directory (same guest path and mode), each credential
//! a throwaway one of the same kind, header and lifetime; the limits are the tool's own. The
//! isolation drill runs Warden's hostile components in it; `warden test` runs a tool's own
//! cases in it. One agent may call everything (a permit-all policy): what is under test is the
//! sandbox, not the policies (`warden policy test` tests those).

use anyhow::{Context as _, Result};
use ed25519_dalek::SigningKey;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use warden::call::Caller;
use warden::credentials::Secret;
use warden::deployment::{CredentialDef, CredentialKind, Deployment};
use warden::identity::{assertion, keys};
use warden::manifest::{
    Digest, Impact, Limits, Manifest, MountMode, MountRequest, Sensitivity, ToolKind,
};
use warden::runtime::Runtime;
use warden_test_support::loopback::LoopbackServer;

/// The deployment being assembled, and then run.
pub struct StandIn {
    dir: tempfile::TempDir,
    /// Every name in it starts with this (`d<8 hex>`), so its records are told apart.
    pub tag: String,
    state_dir: PathBuf,
    agent_key: SigningKey,
    tools: Vec<ToolEntry>,
    credentials: Vec<CredentialEntry>,
}

/// A real tool's grants, standing in: the upstreams for its rules, started once and shared by
/// every component given these grants.
pub struct Grants {
    /// The real tool.
    pub tool: String,
    pub kind: ToolKind,
    pub impact: Impact,
    pub sensitivity: Sensitivity,
    pub limits: Limits,
    pub fs: Vec<MountRequest>,
    pub rules: Vec<Rule>,
}

/// One egress rule of the real tool and its stand-in.
pub struct Rule {
    /// The rule as the tool's manifest writes it.
    pub real: String,
    /// Its path pattern in normal form (`/v1/*`, `/status`).
    pub path: String,
    pub methods: Vec<String>,
    /// The credential the rule names, as the stand-in deployment calls it.
    pub credential: Option<StandInCredential>,
    /// The loopback server standing in for the rule's origin.
    pub upstream: std::sync::Arc<LoopbackServer>,
}

#[derive(Clone)]
pub struct StandInCredential {
    pub name: String,
    pub kind: CredentialKind,
    pub header: String,
    /// A static credential's throwaway value (a minted one is read from the upstream's log).
    pub value: Option<String>,
}

/// A component added with some grants, as the stand-in deployment names it.
pub struct Added {
    pub name: String,
    /// Guest path -> host directory standing in for it.
    pub mounts: Vec<(MountRequest, PathBuf)>,
}

struct ToolEntry {
    name: String,
    mounts: Vec<(String, PathBuf)>,
}

struct CredentialEntry {
    name: String,
    def: CredentialDef,
    audience: String,
    tools: Vec<String>,
    secret_file: Option<String>,
}

/// The manifest the stand-in deployment reads for a component given some grants.
#[derive(Serialize)]
struct StandInManifest<'a> {
    name: &'a str,
    component: &'a str,
    digest: String,
    kind: ToolKind,
    impact: Impact,
    sensitivity: Sensitivity,
    limits: &'a Limits,
    fs: &'a [MountRequest],
    egress: Vec<StandInRule<'a>>,
}

#[derive(Serialize)]
struct StandInRule<'a> {
    url: String,
    methods: &'a [String],
    allow_private: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<&'a str>,
}

impl StandIn {
    /// An empty stand-in deployment. Its state (audit, keys, compile cache) is `state_dir`'s:
    /// the drill's are recorded in the deployment it drills, a tool test's in a throwaway one.
    pub fn new(state_dir: Option<&Path>) -> Result<StandIn> {
        let dir = tempfile::tempdir().context("making a directory for the stand-in deployment")?;
        let state_dir = match state_dir {
            Some(state) => std::path::absolute(state)?,
            None => dir.path().join("state"),
        };
        let tag = format!("d{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        Ok(StandIn {
            dir,
            tag,
            state_dir,
            agent_key: keys::generate(),
            tools: Vec::new(),
            credentials: Vec::new(),
        })
    }

    /// Stands in for `manifest`'s grants, its credentials being `credentials`: starts a
    /// loopback server per origin its rules name and a throwaway credential per credential
    /// they name.
    pub async fn grants(
        &mut self,
        manifest: &Manifest,
        credentials: &BTreeMap<String, CredentialDef>,
    ) -> Result<Grants> {
        let mut upstreams: BTreeMap<String, std::sync::Arc<LoopbackServer>> = BTreeMap::new();
        let mut rules = Vec::new();
        for rule in &manifest.egress {
            let authority = authority(&rule.url);
            let upstream = match upstreams.get(&authority) {
                Some(server) => server.clone(),
                None => {
                    let server = std::sync::Arc::new(
                        LoopbackServer::start()
                            .await
                            .context("starting a loopback upstream")?,
                    );
                    upstreams.insert(authority, server.clone());
                    server
                }
            };
            let credential = match &rule.credential {
                Some(name) => Some(self.credential(name, credentials, &upstream)?),
                None => None,
            };
            rules.push(Rule {
                real: rule.url.clone(),
                path: rule.path().to_string(),
                methods: rule.methods.clone(),
                credential,
                upstream,
            });
        }
        Ok(Grants {
            tool: manifest.name.clone(),
            kind: manifest.kind,
            impact: manifest.impact,
            sensitivity: manifest.sensitivity,
            limits: manifest.limits.clone(),
            fs: manifest.fs.clone(),
            rules,
        })
    }

    /// A throwaway credential like `credentials[name]`, sent to `upstream`.
    fn credential(
        &mut self,
        name: &str,
        credentials: &BTreeMap<String, CredentialDef>,
        upstream: &LoopbackServer,
    ) -> Result<StandInCredential> {
        let real = credentials.get(name).with_context(|| {
            format!("an egress rule names credential `{name}`, which [credentials] does not define")
        })?;
        let stand_in = format!("{}-{}", self.tag, self.credentials.len());
        let value = (real.kind == CredentialKind::Static)
            .then(|| format!("sk-drill-{}", uuid::Uuid::new_v4().simple()));
        self.credentials.push(CredentialEntry {
            name: stand_in.clone(),
            def: real.clone(),
            audience: upstream.url(""),
            tools: Vec::new(),
            secret_file: value.clone(),
        });
        Ok(StandInCredential {
            name: stand_in,
            kind: real.kind,
            header: real.header.to_ascii_lowercase(),
            value,
        })
    }

    /// Adds `component` (a `kind` component that describes itself as `name`) as a tool with
    /// `grants`; each of its mounts is a new empty directory.
    pub fn add(
        &mut self,
        name: &str,
        component: &[u8],
        kind: ToolKind,
        grants: &Grants,
    ) -> Result<Added> {
        let name = name.to_string();
        let dir = self.dir.path().join("tools").join(&name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("component.wasm"), component)?;
        let egress = grants
            .rules
            .iter()
            .map(|rule| StandInRule {
                url: format!("{}{}", rule.upstream.url(""), rule.path),
                methods: &rule.methods,
                // The stand-ins are on loopback.
                allow_private: true,
                credential: rule.credential.as_ref().map(|c| c.name.as_str()),
            })
            .collect();
        let manifest = StandInManifest {
            name: &name,
            component: "component.wasm",
            digest: Digest::of(component).to_string(),
            kind,
            impact: grants.impact,
            sensitivity: grants.sensitivity,
            limits: &grants.limits,
            fs: &grants.fs,
            egress,
        };
        std::fs::write(dir.join("tool.toml"), toml::to_string(&manifest)?)?;
        for rule in &grants.rules {
            if let Some(credential) = &rule.credential {
                let entry = self
                    .credentials
                    .iter_mut()
                    .find(|c| c.name == credential.name)
                    .context("a stand-in credential")?;
                if !entry.tools.contains(&name) {
                    entry.tools.push(name.clone());
                }
            }
        }
        let mut mounts = Vec::new();
        for (i, request) in grants.fs.iter().enumerate() {
            // Each mount's directory has a parent of its own, for what is placed beside it.
            let host = self
                .dir
                .path()
                .join("mounts")
                .join(&name)
                .join(i.to_string())
                .join("in");
            std::fs::create_dir_all(&host)?;
            mounts.push((request.clone(), host));
        }
        self.tools.push(ToolEntry {
            name: name.clone(),
            mounts: mounts
                .iter()
                .map(|(m, host)| (m.guest.clone(), host.clone()))
                .collect(),
        });
        Ok(Added { name, mounts })
    }

    /// Writes the deployment file and policy, and builds a runtime for it.
    pub fn start(&self) -> Result<Running> {
        let root = self.dir.path();
        std::fs::create_dir_all(root.join("policies"))?;
        std::fs::write(
            root.join("policies/stand-in.cedar"),
            format!(
                "@id(\"stand-in\")\npermit(principal == Agent::\"{}\", action, resource);\n",
                self.agent()
            ),
        )?;
        let mut toml = format!(
            "state_dir = {:?}\ntool_dirs = [\"tools\"]\npolicy_dir = \"policies\"\n\n\
             [agents.{}]\npublic_key = \"{}\"\n",
            self.state_dir.display().to_string(),
            self.agent(),
            keys::format_public(&self.agent_key.verifying_key()),
        );
        for tool in &self.tools {
            for (guest, host) in &tool.mounts {
                let _ = write!(
                    toml,
                    "\n[[mounts]]\ntool = \"{}\"\nguest = {guest:?}\nhost = {:?}\n",
                    tool.name,
                    host.display().to_string()
                );
            }
        }
        for c in &self.credentials {
            let tools: Vec<String> = c.tools.iter().map(|t| format!("{t:?}")).collect();
            let _ = write!(
                toml,
                "\n[credentials.{}]\nkind = \"{}\"\naudience = {:?}\ntools = [{}]\n\
                 lifetime = \"{}s\"\nheader = {:?}\nprefix = {:?}\n",
                c.name,
                match c.def.kind {
                    CredentialKind::Minted => "minted",
                    CredentialKind::Static => "static",
                },
                c.audience,
                tools.join(", "),
                c.def.lifetime.as_secs().max(1),
                c.def.header,
                c.def.prefix,
            );
            if let Some(scope) = &c.def.scope {
                let _ = writeln!(toml, "scope = {scope:?}");
            }
            if let Some(value) = &c.secret_file {
                let file = root.join("secrets").join(&c.name);
                write_secret(&file, value)?;
                let _ = write!(
                    toml,
                    "secret = \"{0}\"\n\n[secrets.{0}]\nfile = {1:?}\n",
                    c.name,
                    file.display().to_string()
                );
            }
        }
        let config = root.join("warden.toml");
        std::fs::write(&config, toml)?;
        let deployment = Deployment::load(&config)?;
        let runtime = Runtime::new(deployment)?;
        let agent = runtime
            .authenticate(&Secret::new(assertion::sign_session(
                &self.agent_key,
                &self.agent(),
            )))
            .map_err(|e| anyhow::anyhow!("authenticating the stand-in agent: {e}"))?;
        Ok(Running {
            runtime,
            caller: Caller::Authenticated(agent),
        })
    }

    fn agent(&self) -> String {
        format!("{}-agent", self.tag)
    }
}

/// A stand-in deployment's runtime and its agent.
pub struct Running {
    pub runtime: Runtime,
    pub caller: Caller,
}

/// `https://api.example.com:8443` of `https://api.example.com:8443/v1/*`.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let end = rest.find('/').unwrap_or(rest.len());
    format!(
        "{}://{}",
        url.split("://").next().unwrap_or(""),
        &rest[..end]
    )
}

/// A secret file readable by its owner only, as the deployment requires.
fn write_secret(file: &Path, value: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)?
        .write_all(value.as_bytes())?;
    Ok(())
}

impl Grants {
    /// The mounts asked for in `mode`.
    pub fn mounts(&self, mode: MountMode) -> impl Iterator<Item = &MountRequest> {
        self.fs.iter().filter(move |m| m.mode == mode)
    }
}
