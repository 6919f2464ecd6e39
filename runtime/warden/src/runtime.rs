//! `Runtime`: a deployment, its engine, and its tools kept warm (compiled, linked, described)
//! across calls. Loading a tool is where a component proves it is one Warden can run.

/// What a tool says of itself (its `describe`).
pub use crate::bindings::ToolInfo;
use crate::credentials::mint::{KeyStore, Minter};
use crate::credentials::scrub::SecretSet;
use crate::deployment::Deployment;
use crate::engine::{Engine, Prepared};
use crate::error::Error;
use crate::identity::CallContext;
use crate::identity::delegation;
use crate::manifest::{Digest, Manifest};
use crate::policy::{Policies, ToolFacts};
use crate::registry::{self, ToolFiles};
use crate::sandbox::{CallState, Grants};
use crate::state::StateStore;
use anyhow::{Context as _, Result, anyhow, bail};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// A tool ready to be called: verified, compiled, linked, described, with its grants.
pub struct LoadedTool {
    pub manifest: Manifest,
    pub digest: Digest,
    pub info: ToolInfo,
    pub input_schema: serde_json::Value,
    pub(crate) validator: jsonschema::Validator,
    pub(crate) prepared: Prepared,
    pub grants: Grants,
    /// The publisher whose signature it carries (`[publishers]`), if any.
    pub publisher: Option<String>,
    /// The key it is signed with, if it is signed (what revoking its publisher names).
    pub signer: Option<String>,
    /// The deployment its grants came from: one a reload replaced is not kept warm.
    granted_by: Arc<Deployment>,
}

pub struct Runtime {
    /// Swapped whole by `reload`.
    deployment: RwLock<Arc<Deployment>>,
    /// Swapped whole by `reload`: a call decides with the set it read first.
    policies: RwLock<Arc<Policies>>,
    engine: Engine,
    tools: Arc<RwLock<WarmTools>>,
    /// Opened on first use, so that commands that only read (or refuse) write nothing.
    state: OnceLock<Arc<dyn StateStore>>,
    minter: OnceLock<Arc<Minter>>,
    /// The key that signs OAuth access tokens (`identity::oauth`), apart from the minter's.
    access_token_key: OnceLock<Arc<Minter>>,
    /// When this node issued each agent its recent access tokens (`identity::oauth`).
    pub(crate) issued_tokens: crate::identity::issuance::IssuedTokens,
    pub(crate) delegations: delegation::Verifier,
    metrics: Arc<crate::metrics::Metrics>,
    /// Sends each call's trace to the deployment's collector, if it names one.
    traces: Option<crate::trace::export::Exporter>,
    /// Announces held calls (`[approvals.notify]`), started at the first.
    notifier: OnceLock<crate::notify::Notifier>,
    /// Where this process serves the approval inbox, once bound (`set_inbox_origin`).
    inbox_origin: OnceLock<String>,
}

type WarmTools = HashMap<String, Arc<LoadedTool>>;

/// Forgets a revoked tool's warm and compiled forms: for this runtime's own revocations, and
/// for those the state store announces from other processes (`StateStore::on_revocation`).
#[derive(Clone)]
struct Evictor {
    tools: std::sync::Weak<RwLock<WarmTools>>,
    cache_dir: Option<std::path::PathBuf>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Evictor {
    fn evict(&self, digest: &str) {
        if let Some(tools) = self.tools.upgrade() {
            tools
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|_, tool| tool.digest.as_str() != digest);
        }
        if let (Some(dir), Ok(digest)) = (&self.cache_dir, digest.parse()) {
            crate::engine::evict_compiled(dir, &digest);
        }
    }

    /// Drops the warm tools signed with the key `signer` (their compiled forms stay: a call
    /// of them is refused by the revocation before it loads).
    fn evict_publisher(&self, signer: &str) {
        if let Some(tools) = self.tools.upgrade() {
            tools
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|_, tool| tool.signer.as_deref() != Some(signer));
        }
    }

    /// Has `store` announce revoked tools to this evictor.
    fn watch(&self, store: &Arc<dyn StateStore>) {
        let evictor = self.clone();
        store.on_revocation(Box::new(move |revoked| {
            evictor.metrics.announced();
                        match revoked.kind {
                crate::state::RevocationKind::Tool => {
                    tracing::info!(tool = %revoked.id, "a tool was revoked: its warm forms go");
                    evictor.evict(&revoked.id);
                }
                crate::state::RevocationKind::Publisher => {
                    tracing::info!(publisher = %revoked.id, "a publisher was revoked: its tools' warm forms go");
                    evictor.evict_publisher(&revoked.id);
                }
                _ => {}
            }
        }));
    }
}

/// A tool found by name: already loaded, or read from its directory (digest checked).
pub enum Found {
    Warm(Arc<LoadedTool>),
    OnDisk(Box<ToolFiles>),
}

impl Found {
    /// The key it is signed with, or claims to be (its signature is checked when it loads):
    /// what a revoked publisher refuses.
    pub fn signer(&self) -> Option<String> {
        match self {
            Found::Warm(tool) => tool.signer.clone(),
            Found::OnDisk(files) => files.signature.as_ref().and_then(crate::signing::signer),
        }
    }

    /// The tool as policies see it.
    pub fn facts(&self) -> ToolFacts {
        match self {
            Found::Warm(tool) => ToolFacts::of(&tool.manifest, &tool.digest),
            Found::OnDisk(files) => ToolFacts::of(&files.manifest, &files.digest),
        }
    }
}

/// A `Runtime` being configured: `Runtime::builder(deployment)…build()`.
pub struct RuntimeBuilder {
    deployment: Deployment,
    state: Option<Arc<dyn StateStore>>,
}

impl RuntimeBuilder {
    /// The state every process of the deployment shares (replay protection, sessions, call
    /// counts, the audit chain, approvals, revocations). Default: the SQLite file in the
    /// deployment's state directory, opened on first use.
    pub fn state_store(mut self, store: Arc<dyn StateStore>) -> RuntimeBuilder {
        self.state = Some(store);
        self
    }

    /// Loads the policies and starts the engine. Fails (`Error::Invalid`, with a
    /// `PolicyError`) if the policies are invalid.
    pub fn build(self) -> Result<Runtime, Error> {
        warm_schema_checks();
        let deployment = self.deployment;
        let policies = Arc::new(Policies::load(&deployment).map_err(|e| Error::Invalid(e.into()))?);
        let engine = Engine::new(Some(deployment.cache_dir()))
            .map_err(Error::internal("starting the engine"))?;
        let metrics = Arc::<crate::metrics::Metrics>::default();
        let telemetry = &deployment.telemetry;
        let traces = match &telemetry.otlp_endpoint {
            Some(endpoint) => Some(
                crate::trace::export::Exporter::start(
                    endpoint,
                    telemetry
                        .service_name
                        .clone()
                        .unwrap_or_else(|| "warden".into()),
                    metrics.clone(),
                )
                .map_err(|e| Error::internal("starting the trace exporter")(e.into()))?,
            ),
            None => None,
        };
        let runtime = Runtime {
            deployment: RwLock::new(Arc::new(deployment)),
            policies: RwLock::new(policies),
            engine,
            tools: Arc::default(),
            state: OnceLock::new(),
            minter: OnceLock::new(),
            access_token_key: OnceLock::new(),
            issued_tokens: Default::default(),
            delegations: delegation::Verifier::default(),
            metrics,
            traces,
            notifier: OnceLock::new(),
            inbox_origin: OnceLock::new(),
        };
        if let Some(store) = self.state {
            runtime.evictor().watch(&store);
            let _ = runtime.state.set(store);
        }
        Ok(runtime)
    }
}

/// Refuses a new deployment that differs from the one in force where only a restart can
/// apply it: where the state lives (the store is open), where traces go (the exporter
/// runs), and where the approval inbox listens.
fn needs_restart(current: &Deployment, fresh: &Deployment) -> Result<(), String> {
    let file = fresh.file.display();
    if fresh.state_dir != current.state_dir || fresh.state != current.state {
        return Err(format!(
            "{file}: `state_dir` or `[state]` changed: restart the node to apply it"
        ));
    }
    // The store's password is read when the store opens.
    if let Some(name) = &fresh.state.password
        && fresh.secrets.get(name) != current.secrets.get(name)
    {
        return Err(format!(
            "{file}: the secret `{name}` of `state.password` changed: restart the node to apply it"
        ));
    }
    if fresh.telemetry != current.telemetry {
        return Err(format!(
            "{file}: `[telemetry]` changed: restart the node to apply it"
        ));
    }
    if fresh.oauth_issuer != current.oauth_issuer {
        return Err(format!(
            "{file}: `[oauth] issuer` changed: restart the node to apply it"
        ));
    }
    // The inbox's listener is bound, and its origin checked, from the start.
    if fresh.approvals.inbox != current.approvals.inbox {
        return Err(format!(
            "{file}: `[approvals.inbox]` changed: restart the node to apply it"
        ));
    }
    Ok(())
}

/// A tool's input schema is checked against its meta-schema when the tool loads, and
/// `jsonschema` compiles that meta-schema's validator once per process (about 1 ms). Compiled
/// on a spare thread while the runtime starts, it is ready when the first tool loads. Best
/// effort: without the thread, the first load compiles it.
fn warm_schema_checks() {
    let _ = std::thread::Builder::new()
        .name("warden-schema-warmup".into())
        .spawn(|| jsonschema::draft202012::meta::is_valid(&serde_json::Value::Bool(true)));
}

/// Why a tool could not be found or loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "unknown tool `{0}`: not found in the deployment's tool directories (see `warden tool list`)"
    )]
    Unknown(String),
    #[error("{0:#}")]
    Invalid(anyhow::Error),
}

impl LoadedTool {
    /// The compiled component.
    pub fn component(&self) -> &wasmtime::component::Component {
        match &self.prepared {
            Prepared::Tool(pre) => pre.instance_pre().component(),
            Prepared::Command(pre) => pre.instance_pre().component(),
        }
    }
}

impl Runtime {
    /// A runtime for `deployment`, on its SQLite state store (`Runtime::builder` chooses
    /// another). Fails (`Error::Invalid`, with a `PolicyError`) if its policies are invalid.
    pub fn new(deployment: Deployment) -> Result<Runtime, Error> {
        Runtime::builder(deployment).build()
    }

    /// A runtime for `deployment`, configured before it is built.
    pub fn builder(deployment: Deployment) -> RuntimeBuilder {
        RuntimeBuilder {
            deployment,
            state: None,
        }
    }

    /// The state store shared by every process of the deployment, opened on first use.
    pub fn state(&self) -> Result<&Arc<dyn StateStore>, Error> {
        if let Some(state) = self.state.get() {
            return Ok(state);
        }
        let opened = crate::state::open(&self.deployment())
            .map_err(Error::internal("opening the state store"))?;
        Ok(self.state.get_or_init(|| {
            self.evictor().watch(&opened);
            opened
        }))
    }

    fn evictor(&self) -> Evictor {
        Evictor {
            tools: Arc::downgrade(&self.tools),
            cache_dir: self.engine.cache_dir().map(Into::into),
            metrics: self.metrics.clone(),
        }
    }

    /// Where this process serves the approval inbox (its server sets it once bound): links
    /// to approvals point there.
    pub fn set_inbox_origin(&self, origin: String) {
        let _ = self.inbox_origin.set(origin);
    }

    /// The link to approval `id` in the deployment's approval inbox, if it has one: where this
    /// process serves it, else its configured URL or address.
    pub fn inbox_link(&self, id: &str) -> Option<String> {
        let deployment = self.deployment();
        let inbox = deployment.approvals.inbox.as_ref()?;
        let origin = self
            .inbox_origin
            .get()
            .cloned()
            .or_else(|| inbox.url.clone())
            .unwrap_or_else(|| format!("http://{}", inbox.listen));
        Some(crate::approval::inbox_link(&origin, id))
    }

    /// Announces a call just held for `approval` to the deployment's webhook, if it has one,
    /// off the call's path (`crate::notify`).
    pub(crate) fn announce_held(&self, approval: &crate::state::Approval) {
        let deployment = self.deployment();
        let Some(notify) = &deployment.approvals.notify else {
            return;
        };
        let notifier = match self.notifier.get() {
            Some(notifier) => notifier,
            None => match crate::notify::Notifier::start(self.metrics.clone()) {
                Ok(started) => self.notifier.get_or_init(|| started),
                Err(e) => {
                    tracing::error!(error = %e, "starting the announcer of held calls failed");
                    return;
                }
            },
        };
        let audit = match deployment.audit.enabled {
            true => self.state().ok().cloned(),
            false => None,
        };
        notifier.announce(crate::notify::Announcement {
            approval: approval.clone(),
            link: self.inbox_link(&approval.id),
            webhook: notify.webhook.clone(),
            audit,
        });
    }

    /// The exporter of calls' traces, when the deployment names a collector.
    pub(crate) fn traces(&self) -> Option<&crate::trace::export::Exporter> {
        self.traces.as_ref()
    }

    /// What this runtime has done, for monitoring (`warden serve`'s `/metrics`).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// How many tools are loaded and kept warm.
    pub fn warm_tools(&self) -> usize {
        self.tools
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// The key that signs minted credentials, loaded (or made) on first use.
    pub(crate) fn minter(&self) -> Result<Arc<Minter>> {
        if let Some(minter) = self.minter.get() {
            return Ok(minter.clone());
        }
        let loaded = Arc::new(KeyStore::new(&self.deployment().state_dir).current()?);
        Ok(self.minter.get_or_init(|| loaded).clone())
    }

    /// The key that signs OAuth access tokens, loaded (or made) on first use: its own, in
    /// `state_dir/oauth/keys`, so that no upstream that trusts `warden jwks` accepts an access
    /// token, and no access token is a minted credential.
    pub(crate) fn access_token_key(&self) -> Result<Arc<Minter>> {
        if let Some(key) = self.access_token_key.get() {
            return Ok(key.clone());
        }
        let dir = self.deployment().state_dir.join("oauth");
        let loaded = Arc::new(KeyStore::new(&dir).current()?);
        Ok(self.access_token_key.get_or_init(|| loaded).clone())
    }

    /// The deployment in force now (`reload` may replace it).
    pub fn deployment(&self) -> Arc<Deployment> {
        self.deployment
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Keeps `tool`'s compiled component in the deployment's compile cache, so that the next
    /// process does not compile it again.
    pub fn keep_compiled(&self, tool: &LoadedTool) {
        self.engine.cache(tool.component(), &tool.digest);
    }

    /// The policies in force now.
    pub fn policies(&self) -> Arc<Policies> {
        self.policies
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads `warden.toml` and the policy directory again, as `SIGHUP` asks a server to. A
    /// valid deployment and policy set replace those in force; an invalid one, or a change
    /// only a restart applies (`needs_restart`), is refused with its one-line error and the
    /// old ones kept. An applied reload drops every warm tool: the next call of each loads
    /// what is on disk now (a replaced manifest or component), under the new grants, with the
    /// secrets' values as their files hold them now (from the compile cache: no compile).
    /// Audited either way; counted.
    pub fn reload(&self) -> Result<crate::audit::ReloadRecord, Error> {
        let current = self.deployment();
        let loaded = Deployment::load(&current.file)
            .map_err(|e| e.to_string())
            .and_then(|fresh| needs_restart(&current, &fresh).map(|()| fresh))
            .and_then(|fresh| match Policies::load(&fresh) {
                Ok(policies) => Ok((fresh, policies)),
                Err(e) => Err(e.to_string()),
            });
        let deployment_changed = matches!(&loaded, Ok((fresh, _)) if *fresh != *current);

        let record = crate::audit::ReloadRecord {
            id: format!("reload-{}", uuid::Uuid::now_v7()),
            time_ms: crate::identity::jwt::now_ms(),
            applied: loaded.is_ok(),
            error: loaded.as_ref().err().cloned(),
            policies: match &loaded {
                Ok((_, policies)) => policies.ids(),
                Err(_) => self.policies().ids(),
            },
            tools_dropped: match &loaded {
                Ok(_) => self.warm(),
                Err(_) => vec![],
            },
            deployment_changed,
        };
        // Recorded before it takes effect: no reload without its record.
        let entry = crate::audit::entry(&crate::audit::Record::Reload(record.clone()))
            .map_err(Error::internal("recording the reload"))?;
        self.state()?
            .append_audit(&[entry])
            .map_err(Error::internal("recording the reload"))?;
        if let Ok((fresh, policies)) = loaded {
            // Replaced even when equal: tools being loaded under the old one are not kept.
            *self
                .deployment
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(fresh);
            if deployment_changed {
                // Delegations verified under the old issuers and users are verified again.
                self.delegations.forget();
            }
            *self
                .policies
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policies);
            self.tools
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
        }
        self.metrics.reloaded(record.applied);
        Ok(record)
    }

    /// The names of the warm tools, sorted.
    fn warm(&self) -> Vec<String> {
        let mut warm: Vec<String> = self
            .tools
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        warm.sort();
        warm
    }

    /// The tool called `name`: warm, or read from its directory without compiling it.
    pub fn find(&self, name: &str) -> Result<Found, LoadError> {
        if let Some(tool) = self.tools.read().unwrap().get(name) {
            return Ok(Found::Warm(tool.clone()));
        }
        let dir = registry::find_tool(&self.deployment(), name)
            .ok_or_else(|| LoadError::Unknown(name.to_string()))?;
        let files = registry::read_tool(&dir, true).map_err(|e| LoadError::Invalid(e.into()))?;
        // Found by one read of its manifest, loaded from another: they must agree, or a
        // manifest swapped in between would run under (and be kept warm as) another name.
        if files.manifest.name != name {
            return Err(LoadError::Invalid(anyhow!(
                "{}: its manifest changed while it was read",
                dir.display()
            )));
        }
        Ok(Found::OnDisk(Box::new(files)))
    }

    /// Forgets every warm and cached compiled form of the component with `digest`.
    pub fn evict(&self, digest: &str) {
        self.evictor().evict(digest);
    }

    /// Forgets the warm tools signed with the key `signer`.
    pub(crate) fn evict_publisher(&self, signer: &str) {
        self.evictor().evict_publisher(signer);
    }

    /// Puts a change to the registered tools on the audit chain.
    pub fn record_tool_change(
        &self,
        action: crate::audit::ToolAction,
        name: &str,
        digest: Option<&Digest>,
        previous: Option<&Digest>,
    ) -> Result<(), Error> {
        let record = crate::audit::ToolRecord {
            id: format!("tool-{}", uuid::Uuid::now_v7()),
            time_ms: crate::identity::jwt::now_ms(),
            action,
            name: name.to_string(),
            digest: digest.map(ToString::to_string),
            previous: previous.map(ToString::to_string),
        };
        let entry = crate::audit::entry(&crate::audit::Record::Tool(record))
            .map_err(Error::internal("recording the tool change"))?;
        self.state()?
            .append_audit(&[entry])
            .map_err(Error::internal("recording the tool change"))
    }

    /// The tool called `name`, loaded once and then kept warm.
    pub async fn tool(&self, name: &str) -> Result<Arc<LoadedTool>, LoadError> {
        let found = self.find(name)?;
        self.load_found(name, found).await
    }

    /// Loads a tool `find` read (unless it is already warm) and keeps it warm.
    pub async fn load_found(&self, name: &str, found: Found) -> Result<Arc<LoadedTool>, LoadError> {
        let files = match found {
            Found::Warm(tool) => return Ok(tool),
            Found::OnDisk(files) => *files,
        };
        let tool = Arc::new(self.load(files, true).await.map_err(LoadError::Invalid)?);
        let mut tools = self
            .tools
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Read under the warm map's lock, which a reload takes after replacing the
        // deployment: a tool loaded under the old one is used once, never kept.
        if Arc::ptr_eq(&tool.granted_by, &self.deployment()) {
            tools.insert(name.to_string(), tool.clone());
        }
        Ok(tool)
    }

    /// Checks that `files` is a tool this runtime can run: compiles, links against exactly
    /// what Warden provides, describes itself consistently, and has its mounts bound.
    /// `cache`: keep the compiled form on disk (not while merely vetting a tool).
    pub async fn load(&self, files: ToolFiles, cache: bool) -> Result<LoadedTool> {
        let ToolFiles {
            manifest,
            manifest_text,
            digest,
            bytes,
            signature,
            ..
        } = files;
        let deployment = self.deployment();
        // Before anything of the component is compiled: a tool the deployment does not
        // trust is not even looked into.
        let publisher = crate::signing::check(
            &deployment,
            &manifest.name,
            &digest,
            manifest_text.as_bytes(),
            signature.as_ref(),
        )
        .map_err(|e| anyhow!(e))?;
        let signer = signature.as_ref().and_then(crate::signing::signer);
        let component = self
            .engine
            .compile(&bytes, &digest, cache)
            .with_context(|| {
                format!(
                    "{} is not a WebAssembly component Warden can compile",
                    manifest.component
                )
            })?;
        let prepared = self
            .engine
            .prepare(&component, manifest.kind)
            .with_context(|| format!("{} cannot be linked", manifest.component))?;
        let credentials =
            crate::credentials::grant(&manifest, &deployment).map_err(|e| anyhow!(e))?;
        let static_secrets = SecretSet::new();
        for secret in credentials.values().filter_map(|g| g.secret.as_ref()) {
            // A key past the set's bound is refused when a request would carry it (`inject`).
            let _ = static_secrets.add(secret);
        }
        let grants = Grants {
            mounts: deployment.grant_mounts(&manifest).map_err(|e| anyhow!(e))?,
            egress: manifest.egress.clone().into(),
            credentials: Arc::new(credentials),
            static_secrets,
            limits: manifest.limits.clone(),
        };
        let info = match &prepared {
            Prepared::Tool(pre) => describe(pre, &manifest).await?,
            Prepared::Command(_) => ToolInfo {
                name: manifest.name.clone(),
                description: "A wasi:cli/command tool: JSON on stdin, JSON on stdout.".into(),
                input_schema: "{}".into(),
            },
        };
        if info.name != manifest.name {
            bail!(
                "the component describes itself as `{}` but its manifest names `{}`",
                info.name,
                manifest.name
            );
        }
        let input_schema: serde_json::Value = serde_json::from_str(&info.input_schema)
            .context("the input schema from `describe` is not JSON")?;
        let validator = jsonschema::validator_for(&input_schema).map_err(|e| {
            anyhow!("the input schema from `describe` is not a valid JSON Schema: {e}")
        })?;
        Ok(LoadedTool {
            manifest,
            digest,
            info,
            input_schema,
            validator,
            prepared,
            grants,
            publisher,
            signer,
            granted_by: deployment,
        })
    }
}

/// Calls `describe` once, in a sandbox with no grants at all.
async fn describe(
    pre: &crate::bindings::ToolPre<CallState>,
    manifest: &Manifest,
) -> Result<ToolInfo> {
    let grants = Grants {
        mounts: vec![],
        egress: Arc::new([]),
        credentials: Arc::default(),
        static_secrets: SecretSet::new(),
        limits: manifest.limits.clone(),
    };
    let context = CallContext {
        call_id: "describe".into(),
        tool: manifest.name.clone(),
        agent: String::new(),
        user: None,
    };
    let timeout = Duration::from_secs(10);
    let (state, _) = CallState::new(
        &grants,
        None,
        None,
        context,
        None,
        tokio::time::Instant::now() + timeout,
        None,
    )?;
    let mut store = crate::sandbox::run::new_store(pre.engine(), state, &grants.limits);
    let run = async {
        let tool = pre.instantiate_async(&mut store).await?;
        tool.call_describe(&mut store).await
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(result) => result
            .map_err(anyhow::Error::from)
            .context("calling `describe`"),
        Err(_) => bail!("`describe` did not return within {timeout:?}"),
    }
}
