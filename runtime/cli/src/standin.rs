//! A throwaway deployment that gives components a real tool's grants with nothing real behind
//! them: each egress rule's origin is a loopback server started for it (same path pattern,
//! methods and credential name), each mount a fresh directory (same guest path and mode), each
//! credential a throwaway one of the same kind, header, prefix and lifetime signed with a
//! throwaway key. One throwaway agent may call everything (a permit-all policy): what is under
//! test is the sandbox, not the policies (`warden policy test` tests those). The isolation
//! drill runs Warden's hostile components in it; `warden test` runs a tool's own cases in it.

use anyhow::{Context as _, Result};
use ed25519_dalek::SigningKey;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use warden::call::Caller;
use warden::credentials::Secret;
use warden::deployment::{AuditSettings, CredentialDef, CredentialKind, Deployment};
use warden::identity::{assertion, keys};
use warden::manifest::{Digest, Impact, Limits, Manifest, MountRequest, Sensitivity, ToolKind};
use warden::runtime::Runtime;
use warden::sandbox::egress::EgressRule;
use warden::state::StateStore;
use warden_test_support::loopback::LoopbackServer;

/// Where stand-in deployments keep their state: their own directory for keys and compiled
/// components, and optionally another deployment's store, so that their calls are recorded
/// in its audit (the drill's, marked as drills).
#[derive(Clone)]
pub struct Backing {
    pub state_dir: PathBuf,
    pub store: Option<Arc<dyn StateStore>>,
    pub audit: AuditSettings,
}

/// The deployment being assembled, and then run.
pub struct StandIn {
    dir: tempfile::TempDir,
    /// The throwaway agent and credentials are named with this (`d<8 hex>`).
    pub tag: String,
    backing: Backing,
    agent_key: SigningKey,
    tools: Vec<(String, Vec<(String, PathBuf)>)>,
    credentials: BTreeMap<String, CredentialFile>,
    secrets: BTreeMap<String, SecretFile>,
}

/// A real tool's grants, standing in: the upstreams for its rules, started once and shared by
/// every component given these grants.
pub struct Grants {
    /// The real tool.
    pub tool: String,
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
    pub upstream: Arc<LoopbackServer>,
    /// The rule as the stand-in deployment has it.
    pub stand_in: EgressRule,
}

#[derive(Clone)]
pub struct StandInCredential {
    pub name: String,
    pub kind: CredentialKind,
    pub header: String,
    /// What the header's value starts with before the credential (`Bearer `).
    pub prefix: String,
    /// A static credential's throwaway value (a minted one is read from the upstream's log).
    pub value: Option<String>,
}

/// A component added with some grants, as the stand-in deployment names it.
pub struct Added {
    pub name: String,
    pub limits: Limits,
    /// Each mount asked for, and the host directory standing in for it.
    pub mounts: Vec<(MountRequest, PathBuf)>,
}

/// The stand-in deployment's `warden.toml`.
#[derive(Serialize)]
struct DeploymentFile<'a> {
    state_dir: &'a Path,
    tool_dirs: [&'a str; 1],
    policy_dir: &'a str,
    agents: BTreeMap<String, AgentFile>,
    mounts: Vec<MountFile<'a>>,
    credentials: &'a BTreeMap<String, CredentialFile>,
    secrets: &'a BTreeMap<String, SecretFile>,
    audit: AuditFile,
}

#[derive(Serialize)]
struct AgentFile {
    public_key: String,
}

#[derive(Serialize)]
struct MountFile<'a> {
    tool: &'a str,
    guest: &'a str,
    host: &'a Path,
}

#[derive(Serialize)]
struct CredentialFile {
    kind: CredentialKind,
    audience: String,
    tools: Vec<String>,
    lifetime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    header: String,
    prefix: String,
}

#[derive(Serialize)]
struct SecretFile {
    file: PathBuf,
}

#[derive(Serialize)]
struct AuditFile {
    enabled: bool,
    record_input: bool,
}

/// The manifest the stand-in deployment reads for a component given some grants.
#[derive(Serialize)]
struct ManifestFile<'a> {
    name: &'a str,
    component: &'a str,
    digest: String,
    kind: ToolKind,
    impact: Impact,
    sensitivity: Sensitivity,
    limits: &'a Limits,
    fs: &'a [MountRequest],
    egress: Vec<RuleFile<'a>>,
}

#[derive(Serialize)]
struct RuleFile<'a> {
    url: &'a str,
    methods: &'a [String],
    allow_private: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<&'a str>,
}

impl StandIn {
    pub fn new(backing: Backing) -> Result<StandIn> {
        let dir = tempfile::tempdir().context("making a directory for the stand-in deployment")?;
        let tag = format!("d{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        Ok(StandIn {
            dir,
            tag,
            backing,
            agent_key: keys::generate(),
            tools: Vec::new(),
            credentials: BTreeMap::new(),
            secrets: BTreeMap::new(),
        })
    }

    /// Stands in for `manifest`'s grants, its credentials being `credentials`: starts a
    /// loopback server per origin its rules name and a throwaway credential per rule that
    /// names one.
    pub async fn grants(
        &mut self,
        manifest: &Manifest,
        credentials: &BTreeMap<String, CredentialDef>,
    ) -> Result<Grants> {
        let mut upstreams: BTreeMap<String, Arc<LoopbackServer>> = BTreeMap::new();
        let mut rules = Vec::new();
        for rule in &manifest.egress {
            let authority = rule.url.split('/').take(3).collect::<Vec<_>>().join("/");
            let upstream = match upstreams.get(&authority) {
                Some(server) => server.clone(),
                None => {
                    let server = Arc::new(
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
            let url = format!("{}{}", upstream.url(""), rule.path());
            let stand_in = EgressRule::new(
                &url,
                &rule.methods,
                true,
                credential.as_ref().map(|c| c.name.clone()),
            )
            .map_err(anyhow::Error::msg)?;
            rules.push(Rule {
                real: rule.url.clone(),
                path: rule.path().to_string(),
                methods: rule.methods.clone(),
                credential,
                upstream,
                stand_in,
            });
        }
        Ok(Grants {
            tool: manifest.name.clone(),
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
        let value = match real.kind {
            CredentialKind::Static => {
                let value = format!("sk-drill-{}", uuid::Uuid::new_v4().simple());
                let file = self.dir.path().join("secrets").join(&stand_in);
                write_secret(&file, &value)?;
                self.secrets.insert(stand_in.clone(), SecretFile { file });
                Some(value)
            }
            CredentialKind::Minted => None,
        };
        self.credentials.insert(
            stand_in.clone(),
            CredentialFile {
                kind: real.kind,
                audience: upstream.url(""),
                tools: Vec::new(),
                lifetime: warden::units::format_duration(real.lifetime),
                scope: real.scope.clone(),
                secret: value.is_some().then(|| stand_in.clone()),
                header: real.header.clone(),
                prefix: real.prefix.clone(),
            },
        );
        Ok(StandInCredential {
            name: stand_in,
            kind: real.kind,
            header: real.header.to_ascii_lowercase(),
            prefix: real.prefix.clone(),
            value,
        })
    }

    /// Adds `component` (a `kind` component that describes itself as `name`) as a tool with
    /// `grants` and `limits`; each of its mounts is a new empty directory.
    pub fn add(
        &mut self,
        name: &str,
        component: &[u8],
        kind: ToolKind,
        grants: &Grants,
        limits: &Limits,
    ) -> Result<Added> {
        let dir = self.dir.path().join("tools").join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("component.wasm"), component)?;
        let manifest = ManifestFile {
            name,
            component: "component.wasm",
            digest: Digest::of(component).to_string(),
            kind,
            impact: grants.impact,
            sensitivity: grants.sensitivity,
            limits,
            fs: &grants.fs,
            egress: grants
                .rules
                .iter()
                .map(|rule| RuleFile {
                    url: &rule.stand_in.url,
                    methods: &rule.methods,
                    // The stand-ins are on loopback.
                    allow_private: true,
                    credential: rule.credential.as_ref().map(|c| c.name.as_str()),
                })
                .collect(),
        };
        std::fs::write(dir.join("tool.toml"), toml::to_string(&manifest)?)?;
        for credential in grants.rules.iter().filter_map(|r| r.credential.as_ref()) {
            if let Some(entry) = self.credentials.get_mut(&credential.name) {
                entry.tools.push(name.to_string());
            }
        }
        let mut mounts = Vec::new();
        for (i, request) in grants.fs.iter().enumerate() {
            // Each mount's directory has a parent of its own, for what is placed beside it.
            let host = self
                .dir
                .path()
                .join("mounts")
                .join(name)
                .join(i.to_string())
                .join("in");
            std::fs::create_dir_all(&host)?;
            mounts.push((request.clone(), host));
        }
        self.tools.push((
            name.to_string(),
            mounts
                .iter()
                .map(|(m, host)| (m.guest.clone(), host.clone()))
                .collect(),
        ));
        Ok(Added {
            name: name.to_string(),
            limits: limits.clone(),
            mounts,
        })
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
        let file = DeploymentFile {
            state_dir: &self.backing.state_dir,
            tool_dirs: ["tools"],
            policy_dir: "policies",
            agents: BTreeMap::from([(
                self.agent(),
                AgentFile {
                    public_key: keys::format_public(&self.agent_key.verifying_key()),
                },
            )]),
            mounts: self
                .tools
                .iter()
                .flat_map(|(tool, mounts)| {
                    mounts
                        .iter()
                        .map(move |(guest, host)| MountFile { tool, guest, host })
                })
                .collect(),
            credentials: &self.credentials,
            secrets: &self.secrets,
            audit: AuditFile {
                enabled: self.backing.audit.enabled,
                record_input: self.backing.audit.record_input,
            },
        };
        let config = root.join("warden.toml");
        std::fs::write(&config, toml::to_string(&file)?)?;
        let mut builder = Runtime::builder(Deployment::load(&config)?);
        if let Some(store) = &self.backing.store {
            builder = builder.state_store(store.clone());
        }
        let runtime = builder.build()?;
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
