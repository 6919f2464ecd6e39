//! The deployment (`warden.toml`): where tools and state live, which agents exist, and which
//! host directories back the mounts that tools ask for. No wasmtime here.

use crate::identity::jwks::KeySet;
use crate::manifest::{Manifest, ManifestError, is_tool_name, toml_error_unquoted};
use crate::sandbox::fs::{Mount, overlap, resolved};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub const DEPLOYMENT_FILE: &str = "warden.toml";

#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// The file this was read from (for messages).
    pub file: PathBuf,
    pub state_dir: PathBuf,
    /// Directories holding one sub-directory per tool (`<dir>/<tool>/tool.toml`).
    pub tool_dirs: Vec<PathBuf>,
    /// The Cedar policies (`*.cedar`) that decide every call and request.
    pub policy_dir: PathBuf,
    pub agents: BTreeMap<String, Agent>,
    pub users: BTreeMap<String, User>,
    /// The people who approve calls that policies hold for approval, with their keys.
    pub approvers: BTreeMap<String, Approver>,
    pub approvals: ApprovalSettings,
    pub audit: AuditSettings,
    /// Where the state every process shares lives (`[state]`): SQLite in `state_dir` unless
    /// a PostgreSQL server is named.
    pub state: StateSettings,
    /// Where calls' traces go (`[telemetry]`), if anywhere.
    pub telemetry: TelemetrySettings,
    /// `[oauth] issuer`: the origin clients reach the MCP endpoint at (`https://warden.example`),
    /// behind a proxy or load balancer; the authorization server's issuer, and the resource
    /// its `/mcp`. None: each node's own bound address.
    pub oauth_issuer: Option<String>,
    /// `[oauth.authorization_server]`: an external authorization server whose access tokens
    /// the MCP endpoint accepts, and which its metadata names in place of Warden's own.
    pub oauth_authorization_server: Option<ExternalAuthorizationServer>,
    /// The downstream systems told of every revocation (`[event_receivers.NAME]`).
    pub event_receivers: BTreeMap<String, EventReceiver>,
    /// Who may sign tools (`[publishers.NAME]`), and which tools must be signed (`[signing]`).
    pub publishers: BTreeMap<String, Publisher>,
    pub signing: SigningSettings,
    /// Trusted issuers of delegations (identity providers) and their keys.
    pub issuers: BTreeMap<String, KeySet>,
    pub mounts: Vec<MountBinding>,
    pub secrets: BTreeMap<String, SecretSource>,
    pub credentials: BTreeMap<String, CredentialDef>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    #[serde(default)]
    pub description: String,
    /// `ed25519:<base64url>`: the key that signs this agent's call assertions.
    pub public_key: Option<String>,
    /// Who answers for this agent (`principal.owner` in policies).
    #[serde(default)]
    pub owner: String,
    /// How far this agent is trusted (`principal.trust`): low (default), medium or high.
    #[serde(default)]
    pub trust: Trust,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    #[default]
    Low,
    Medium,
    High,
}

impl Trust {
    /// As written in warden.toml and seen by policies (`principal.trust`).
    pub fn as_str(self) -> &'static str {
        match self {
            Trust::Low => "low",
            Trust::Medium => "medium",
            Trust::High => "high",
        }
    }
}

/// The agent whose registered public key is `key`.
pub fn agent_with_key<'a>(
    agents: &'a BTreeMap<String, Agent>,
    key: &ed25519_dalek::VerifyingKey,
) -> Option<&'a str> {
    agents
        .iter()
        .find(|(_, a)| {
            a.public_key
                .as_deref()
                .and_then(|k| crate::identity::keys::parse_public(k).ok())
                .as_ref()
                == Some(key)
        })
        .map(|(name, _)| name.as_str())
}

/// A user who can delegate to agents with their own key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub public_key: String,
    /// Roles (`roles` of the `User` entity in policies).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A publisher of tools (`warden tool sign DIR --key …`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publisher {
    /// `ed25519:<base64url>`: the key that signs this publisher's tools.
    pub public_key: String,
}

/// `[signing]`: which tools must be signed by a listed publisher.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSettings {
    /// Every tool (default false: only those in `signed_by`).
    #[serde(default)]
    pub required: bool,
    /// Tool name → the publisher that must have signed it.
    #[serde(default)]
    pub signed_by: BTreeMap<String, String>,
}

/// A person who approves calls (`warden approve ID --key …`). Never an agent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approver {
    /// `ed25519:<base64url>`: the key that signs this approver's approvals.
    pub public_key: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalSettings {
    /// How long a pending approval can be approved and then used (default 15m).
    pub lifetime: std::time::Duration,
    /// `[approvals.inbox]`: the web page where approvers decide (served by `warden serve`).
    pub inbox: Option<InboxSettings>,
    /// `[approvals.notify]`: where a held call is announced.
    pub notify: Option<NotifySettings>,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        ApprovalSettings {
            lifetime: default_approval_lifetime(),
            inbox: None,
            notify: None,
        }
    }
}

/// The approval inbox's listener, apart from the agents' MCP endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxSettings {
    /// Where it listens (default 127.0.0.1:8932).
    pub listen: std::net::SocketAddr,
    /// The origin approvers open (`https://approvals.example`), when a proxy stands in front;
    /// None: `http://` and the address bound. Links in notifications and elicitations use it,
    /// and state-changing requests must come from it.
    pub url: Option<String>,
}

/// Where a held call is announced: a JSON POST (Slack-compatible `text`).
#[derive(Debug, Clone, PartialEq)]
pub struct NotifySettings {
    pub webhook: crate::outbound::Endpoint,
}

/// Where the inbox listens unless told.
pub const DEFAULT_INBOX_ADDR: &str = "127.0.0.1:8932";

/// `[approvals]` as written (its URLs checked outside the TOML parser, like `[telemetry]`'s).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApprovals {
    #[serde(
        default = "default_approval_lifetime",
        deserialize_with = "crate::units::serde_text::de_duration"
    )]
    lifetime: std::time::Duration,
    inbox: Option<RawInbox>,
    notify: Option<RawNotify>,
}

impl Default for RawApprovals {
    fn default() -> Self {
        RawApprovals {
            lifetime: default_approval_lifetime(),
            inbox: None,
            notify: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInbox {
    listen: Option<std::net::SocketAddr>,
    url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    webhook: String,
}

/// `[oauth]` as written (its URL checked outside the TOML parser, like `[telemetry]`'s).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOAuth {
    issuer: Option<String>,
    authorization_server: Option<RawAuthorizationServer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorizationServer {
    issuer: String,
    jwks: PathBuf,
    #[serde(default = "default_agent_claim")]
    agent_claim: String,
    agents: Vec<String>,
}

fn default_agent_claim() -> String {
    "sub".into()
}

/// The claims an external authorization server may name a client in.
const AGENT_CLAIMS: [&str; 3] = ["sub", "client_id", "azp"];

/// An authorization server other than Warden whose access tokens (RFC 9068, `at+jwt`) the MCP
/// endpoint accepts: issued by `issuer`, signed by one of `keys` (Ed25519), and naming in
/// `agent_claim` one of `agents`, the registered agents it may speak for.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalAuthorizationServer {
    pub issuer: String,
    pub keys: KeySet,
    pub agent_claim: String,
    pub agents: BTreeSet<String>,
}

/// A public URL of Warden's (the inbox's, the issuer's) is an origin: `http(s)://host[:port]`,
/// nothing after it.
fn origin(text: &str) -> Result<String, String> {
    let endpoint = crate::outbound::Endpoint::parse(text)?;
    let origin = text.trim_end_matches('/');
    if endpoint.to_string().trim_end_matches('/') != origin || origin.matches('/').count() != 2 {
        return Err(
            "must be an origin like https://approvals.example, without a path or query".into(),
        );
    }
    Ok(origin.to_ascii_lowercase())
}

/// An external authorization server's issuer: an `https` URL (`http` on loopback only), with
/// no query or fragment, and not Warden's own (`[oauth] issuer`), whose tokens it would take.
fn external_issuer(issuer: &str, own: Option<&str>) -> Result<(), String> {
    crate::outbound::Endpoint::parse(issuer)?;
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|o| {
            issuer
                .strip_prefix(o)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        });
    if !issuer.starts_with("https://") && !loopback {
        return Err("must be an https:// URL (http:// on loopback only)".into());
    }
    if issuer.contains(['?', '#']) {
        return Err("must have no query or fragment".into());
    }
    if own.is_some_and(|own| {
        own.trim_end_matches('/')
            .eq_ignore_ascii_case(issuer.trim_end_matches('/'))
    }) {
        return Err("is Warden's own `oauth.issuer`".into());
    }
    Ok(())
}

fn default_approval_lifetime() -> std::time::Duration {
    std::time::Duration::from_secs(15 * 60)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// Write the audit chain (default true). Off only to measure what it costs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Keep each call's input (secret-looking values redacted) besides its digest.
    #[serde(default)]
    pub record_input: bool,
}

/// `[telemetry]`: the OpenTelemetry collector that receives each call's trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetrySettings {
    /// OTLP/HTTP's base URL (`http://127.0.0.1:4318`): traces are posted, as JSON, to its
    /// `/v1/traces`. None: no traces.
    pub otlp_endpoint: Option<crate::outbound::Endpoint>,
    /// The `service.name` of the spans (default `warden`).
    pub service_name: Option<String>,
}

/// `[event_receivers.NAME]`: a downstream system (an identity provider, an upstream that
/// caches what Warden sent it) that is pushed each revocation as a signed Security Event
/// Token (RFC 8417, delivered as RFC 8935 says), until it acknowledges it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventReceiver {
    /// Where events are posted.
    pub url: crate::outbound::Endpoint,
    /// The events' `aud` (default: the URL without its query, which may carry a token).
    pub audience: String,
}

/// `[telemetry]` as written: its URL is checked outside the TOML parser, whose errors quote
/// the line (a URL with a password in it would be repeated).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    otlp_endpoint: Option<String>,
    service_name: Option<String>,
}

/// `[event_receivers.NAME]` as written (its URL checked as `[telemetry]`'s is).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReceiver {
    url: String,
    audience: Option<String>,
}

/// `[state]`: the PostgreSQL server the deployment's nodes share, if any.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    /// `postgres://user@host:port/database`, without a password.
    pub url: Option<String>,
    /// The secret (in `[secrets]`) holding the password.
    pub password: Option<String>,
    /// The most connections one process opens (default 8).
    #[serde(default = "default_connections")]
    pub connections: usize,
}

fn default_connections() -> usize {
    8
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            url: None,
            password: None,
            connections: default_connections(),
        }
    }
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            enabled: true,
            record_input: false,
        }
    }
}

fn yes() -> bool {
    true
}

/// Where a secret's value comes from. Never inline.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretSource {
    /// A file readable by its owner only (0600 or stricter).
    File(PathBuf),
    /// An environment variable of the Warden process.
    Env(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A JWT Warden signs per call and audience.
    Minted,
    /// A long-lived API key, added as a header.
    Static,
}

/// What a credential name in an egress rule stands for.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialDef {
    #[serde(default = "minted")]
    pub kind: CredentialKind,
    /// The origin (`scheme://host[:port]`) the credential may be sent to; also the `aud` claim.
    pub audience: String,
    /// Tools that may use this credential.
    pub tools: Vec<String>,
    /// Minted: how long the token lives (default 60s, at most 15m).
    #[serde(
        default = "default_lifetime",
        deserialize_with = "crate::units::serde_text::de_duration"
    )]
    pub lifetime: std::time::Duration,
    /// Minted: the `scope` claim (default: the tool's name).
    pub scope: Option<String>,
    /// Static: the secret holding the key.
    pub secret: Option<String>,
    /// The header that carries it (default `authorization`).
    #[serde(default = "default_header")]
    pub header: String,
    /// Put before the value (default `Bearer `).
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn minted() -> CredentialKind {
    CredentialKind::Minted
}
fn default_lifetime() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}
fn default_header() -> String {
    "authorization".into()
}
fn default_prefix() -> String {
    "Bearer ".into()
}

/// Longest lifetime of a minted credential.
pub const MAX_CREDENTIAL_LIFETIME: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The connection settings in `url`, or why they are not usable. The message never repeats
/// the URL: a mistyped one may carry a password.
pub fn parse_state_url(url: &str) -> Result<tokio_postgres::Config, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("must start with postgres:// (a URL naming the server and database)".into());
    }
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|_| "is not a PostgreSQL connection URL".to_string())?;
    if config.get_password().is_some() {
        return Err(
            "carries a password: name a secret in `state.password` instead, \
                    so that no log line or process listing can show it"
                .into(),
        );
    }
    if config.get_dbname().is_none() {
        return Err("names no database (postgres://user@host:port/database)".into());
    }
    Ok(config)
}

/// `[state]` names a usable server, and its password by a secret that exists.
fn check_state(
    state: &StateSettings,
    secrets: &BTreeMap<String, SecretSource>,
) -> Result<(), String> {
    match (&state.url, &state.password) {
        (Some(url), password) => {
            parse_state_url(url).map_err(|e| format!("field `state.url`: {e}"))?;
            if let Some(name) = password
                && !secrets.contains_key(name)
            {
                return Err(format!(
                    "field `state.password`: no secret `{name}` in [secrets]"
                ));
            }
        }
        (None, Some(_)) => {
            return Err("field `state.password`: there is no `state.url` to use it for".into());
        }
        (None, None) => {}
    }
    if state.connections == 0 || state.connections > 1000 {
        return Err("field `state.connections`: must be between 1 and 1000".into());
    }
    Ok(())
}

/// Reads a JWKS file.
fn read_jwks(path: &Path) -> Result<KeySet, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    KeySet::from_json(&json).map_err(|e| format!("{}: {e}", path.display()))
}

/// The host directory that backs `guest` for `tool`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountBinding {
    pub tool: String,
    pub guest: String,
    pub host: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    #[serde(default = "default_state")]
    state_dir: PathBuf,
    #[serde(default)]
    tool_dirs: Vec<PathBuf>,
    #[serde(default = "default_policy_dir")]
    policy_dir: PathBuf,
    #[serde(default)]
    agents: BTreeMap<String, Agent>,
    #[serde(default)]
    users: BTreeMap<String, User>,
    #[serde(default)]
    approvers: BTreeMap<String, Approver>,
    #[serde(default)]
    approvals: RawApprovals,

    #[serde(default)]
    audit: AuditSettings,
    #[serde(default)]
    state: StateSettings,
    #[serde(default)]
    telemetry: RawTelemetry,
    #[serde(default)]
    oauth: RawOAuth,
    #[serde(default)]
    event_receivers: BTreeMap<String, RawReceiver>,
    #[serde(default)]
    publishers: BTreeMap<String, Publisher>,
    #[serde(default)]
    signing: SigningSettings,
    #[serde(default)]
    issuers: BTreeMap<String, RawIssuer>,
    #[serde(default)]
    mounts: Vec<MountBinding>,
    #[serde(default)]
    secrets: BTreeMap<String, SecretSource>,
    #[serde(default)]
    credentials: BTreeMap<String, CredentialDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    jwks: PathBuf,
}

fn default_state() -> PathBuf {
    PathBuf::from("state")
}

fn default_policy_dir() -> PathBuf {
    PathBuf::from("policies")
}

impl Deployment {
    pub fn load(path: &Path) -> Result<Deployment, ManifestError> {
        let file = path.display().to_string();
        let error = |message: String| ManifestError {
            file: file.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        let raw: RawDeployment =
            toml::from_str(&text).map_err(|e| error(toml_error_unquoted(&text, &e)))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let base = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };

        for name in raw.agents.keys() {
            if !is_tool_name(name) {
                return Err(error(format!(
                    "field `agents.{name}`: agent names are 1-64 lowercase letters, digits or '-'"
                )));
            }
        }
        for (i, m) in raw.mounts.iter().enumerate() {
            if !m.guest.starts_with('/') {
                return Err(error(format!(
                    "field `mounts[{i}].guest`: `{}` must be absolute",
                    m.guest
                )));
            }
            if raw.mounts[..i]
                .iter()
                .any(|o| o.tool == m.tool && o.guest == m.guest)
            {
                return Err(error(format!(
                    "field `mounts[{i}]`: {} {} is bound twice",
                    m.tool, m.guest
                )));
            }
        }
        for (name, agent) in &raw.agents {
            if let Some(key) = &agent.public_key {
                crate::identity::keys::parse_public(key)
                    .map_err(|e| error(format!("field `agents.{name}.public_key`: {e}")))?;
            }
        }
        for (name, user) in &raw.users {
            crate::identity::keys::parse_public(&user.public_key)
                .map_err(|e| error(format!("field `users.{name}.public_key`: {e}")))?;
        }
        let mut keys_seen = std::collections::BTreeMap::new();
        for (name, publisher) in &raw.publishers {
            if !is_tool_name(name) {
                return Err(error(format!(
                    "field `publishers.{name}`: publisher names are 1-64 lowercase letters, digits or '-'"
                )));
            }
            // One key, one publisher: a revocation by either name must reach both.
            let key = crate::identity::keys::parse_public(&publisher.public_key)
                .map_err(|e| error(format!("field `publishers.{name}.public_key`: {e}")))?;
            if let Some(other) = keys_seen.insert(key.to_bytes(), name) {
                return Err(error(format!(
                    "field `publishers.{name}.public_key`: it is `{other}`'s key too"
                )));
            }
        }
        for (tool, publisher) in &raw.signing.signed_by {
            if !raw.publishers.contains_key(publisher) {
                return Err(error(format!(
                    "field `signing.signed_by.{tool}`: no publisher `{publisher}` in [publishers]"
                )));
            }
        }
        for (name, approver) in &raw.approvers {
            let field = |m: String| error(format!("field `approvers.{name}.public_key`: {m}"));
            let key = crate::identity::keys::parse_public(&approver.public_key).map_err(field)?;
            // An agent's key never approves: the agent would approve its own calls.
            if let Some(agent) = agent_with_key(&raw.agents, &key) {
                return Err(field(format!(
                    "this is agent `{agent}`'s key; an agent cannot approve"
                )));
            }
        }
        if let Some(inbox) = &raw.approvals.inbox
            && inbox.listen.is_some_and(|a| !a.ip().is_loopback())
            && !inbox
                .url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
        {
            // Over plain HTTP anyone on the path could change the page and take the key an
            // approver loads into it.
            return Err(error(
                "field `approvals.inbox.listen`: beyond loopback the inbox must be reached over \
                 TLS: put a proxy that terminates it in front and set `approvals.inbox.url = \
                 \"https://…\"`"
                    .into(),
            ));
        }
        let approvals = ApprovalSettings {
            lifetime: raw.approvals.lifetime,
            inbox: match &raw.approvals.inbox {
                None => None,
                Some(inbox) => Some(InboxSettings {
                    listen: inbox.listen.unwrap_or_else(|| {
                        DEFAULT_INBOX_ADDR.parse().expect("a fixed, valid address")
                    }),
                    url: match &inbox.url {
                        None => None,
                        Some(url) => Some(
                            origin(url)
                                .map_err(|e| error(format!("field `approvals.inbox.url`: {e}")))?,
                        ),
                    },
                }),
            },
            notify: match &raw.approvals.notify {
                None => None,
                Some(notify) => Some(NotifySettings {
                    webhook: crate::outbound::Endpoint::parse(&notify.webhook)
                        .map_err(|e| error(format!("field `approvals.notify.webhook`: {e}")))?
                        .shown_as_origin(),
                }),
            },
        };
        if raw.approvals.lifetime.is_zero() {
            return Err(error(
                "field `approvals.lifetime`: must be at least 1s".into(),
            ));
        }
        let mut issuers = BTreeMap::new();
        let mut trusted = Vec::new();
        for (name, issuer) in &raw.issuers {
            if name.starts_with("user:") {
                return Err(error(format!(
                    "field `issuers.{name}`: issuer names must not start with `user:`"
                )));
            }
            let jwks = base.join(&issuer.jwks);
            let issuer =
                read_jwks(&jwks).map_err(|e| error(format!("field `issuers.{name}.jwks`: {e}")))?;
            issuers.insert(name.clone(), issuer);
            trusted.push((format!("`issuers.{name}.jwks`"), jwks));
        }
        let oauth_authorization_server = match &raw.oauth.authorization_server {
            None => None,
            Some(server) => {
                let field = |f: &str, m: String| {
                    error(format!("field `oauth.authorization_server.{f}`: {m}"))
                };
                external_issuer(&server.issuer, raw.oauth.issuer.as_deref())
                    .map_err(|e| field("issuer", e))?;
                if let Some(unknown) = server.agents.iter().find(|a| !raw.agents.contains_key(*a)) {
                    return Err(field("agents", format!("`{unknown}` is not an agent")));
                }
                if server.agents.is_empty() {
                    return Err(field(
                        "agents",
                        "name the agents it may authenticate (none is trusted by default)".into(),
                    ));
                }
                if !AGENT_CLAIMS.contains(&server.agent_claim.as_str()) {
                    return Err(field(
                        "agent_claim",
                        format!("must be one of {}", AGENT_CLAIMS.join(", ")),
                    ));
                }
                let jwks = base.join(&server.jwks);
                let keys = read_jwks(&jwks).map_err(|e| field("jwks", e))?;
                trusted.push(("`oauth.authorization_server.jwks`".into(), jwks));
                Some(ExternalAuthorizationServer {
                    issuer: server.issuer.clone(),
                    keys,
                    agent_claim: server.agent_claim.clone(),
                    agents: server.agents.iter().cloned().collect(),
                })
            }
        };
        for (name, c) in &raw.credentials {
            let field = |f: &str, m: String| error(format!("field `credentials.{name}.{f}`: {m}"));
            crate::sandbox::egress::Origin::parse(&c.audience).map_err(|e| field("audience", e))?;
            if c.lifetime.is_zero() || c.lifetime > MAX_CREDENTIAL_LIFETIME {
                return Err(field("lifetime", "must be between 1s and 15m".into()));
            }
            if http::HeaderName::from_bytes(c.header.as_bytes()).is_err() {
                return Err(field(
                    "header",
                    format!("`{}` is not a header name", c.header),
                ));
            }
            match (c.kind, &c.secret) {
                (CredentialKind::Static, None) => {
                    return Err(field(
                        "secret",
                        "a static credential names its secret".into(),
                    ));
                }
                (CredentialKind::Static, Some(s)) if !raw.secrets.contains_key(s) => {
                    return Err(field("secret", format!("no secret `{s}` in [secrets]")));
                }
                (CredentialKind::Minted, Some(_)) => {
                    return Err(field("secret", "a minted credential has no secret".into()));
                }
                _ => {}
            }
        }
        check_state(&raw.state, &raw.secrets).map_err(error)?;
        // An endpoint's error names its field, never its value.
        let endpoint = |field: &str, text: &str| {
            crate::outbound::Endpoint::parse(text)
                .map_err(|e| error(format!("field `{field}`: {e}")))
        };
        let telemetry = TelemetrySettings {
            otlp_endpoint: match &raw.telemetry.otlp_endpoint {
                Some(text) => Some(endpoint("telemetry.otlp_endpoint", text)?),
                None => None,
            },
            service_name: raw.telemetry.service_name,
        };
        let mut event_receivers = BTreeMap::new();
        for (name, receiver) in raw.event_receivers {
            if !is_tool_name(&name) {
                return Err(error(format!(
                    "field `event_receivers.{name}`: receiver names are 1-64 lowercase letters, digits or '-'"
                )));
            }
            let url = endpoint(&format!("event_receivers.{name}.url"), &receiver.url)?;
            let audience = receiver.audience.unwrap_or_else(|| url.to_string());
            event_receivers.insert(name, EventReceiver { url, audience });
        }
        let secrets = raw
            .secrets
            .into_iter()
            .map(|(name, source)| match source {
                SecretSource::File(p) => (name, SecretSource::File(base.join(p))),
                env => (name, env),
            })
            .collect();
        let deployment = Deployment {
            file: path.to_path_buf(),
            state_dir: base.join(raw.state_dir),
            tool_dirs: raw.tool_dirs.iter().map(|d| base.join(d)).collect(),
            policy_dir: base.join(raw.policy_dir),
            agents: raw.agents,
            users: raw.users,
            approvers: raw.approvers,
            approvals,

            audit: raw.audit,
            state: raw.state,
            telemetry,
            oauth_issuer: match &raw.oauth.issuer {
                Some(issuer) => {
                    Some(origin(issuer).map_err(|e| error(format!("field `oauth.issuer`: {e}")))?)
                }
                None => None,
            },
            oauth_authorization_server,
            event_receivers,
            publishers: raw.publishers,
            signing: raw.signing,
            issuers,
            secrets,
            credentials: raw.credentials,
            mounts: raw
                .mounts
                .into_iter()
                .map(|m| MountBinding {
                    host: base.join(&m.host),
                    ..m
                })
                .collect(),
        };
        deployment.refuse_mounts_over(trusted).map_err(error)?;
        Ok(deployment)
    }

    /// Everything Warden trusts on disk, as (what, path): a mount over any of it would let a
    /// tool read or plant keys, secrets, policies, tools or the compiled native code Warden
    /// loads. `also`: more of it, found while loading.
    fn trusted_paths(&self, also: Vec<(String, PathBuf)>) -> Vec<(String, PathBuf)> {
        // The parts of the state directory first, so that a message names the closest one.
        let mut trusted = vec![
            ("the signing keys in `state_dir`".into(), self.keys_dir()),
            ("the compile cache in `state_dir`".into(), self.cache_dir()),
            ("`state_dir`".into(), self.state_dir.clone()),
            ("`policy_dir`".into(), self.policy_dir.clone()),
            ("this deployment file".into(), self.file.clone()),
        ];
        for (i, dir) in self.tool_dirs.iter().enumerate() {
            trusted.push((format!("`tool_dirs[{i}]`"), dir.clone()));
        }
        for (name, source) in &self.secrets {
            if let SecretSource::File(file) = source {
                trusted.push((
                    format!("the secret file `secrets.{name}.file`"),
                    file.clone(),
                ));
            }
        }
        trusted.extend(also);
        trusted
    }

    /// The intersection of what the manifest asks for and what the deployment binds. A requested
    /// mount with no binding is an error naming both, rather than a tool that fails obscurely.
    pub fn grant_mounts(&self, manifest: &Manifest) -> Result<Vec<Mount>, String> {
        manifest
            .fs
            .iter()
            .map(|request| {
                let host = self.mount_for(&manifest.name, &request.guest).ok_or_else(|| {
                    format!(
                        "{}: tool `{}` asks for mount `{}` but no [[mounts]] entry binds it to a host directory",
                        self.file.display(),
                        manifest.name,
                        request.guest
                    )
                })?;
                if !host.is_dir() {
                    return Err(format!(
                        "{}: mount `{}` of tool `{}`: host directory {} does not exist",
                        self.file.display(),
                        request.guest,
                        manifest.name,
                        host.display()
                    ));
                }
                Ok(Mount { guest: request.guest.clone(), host: host.to_path_buf(), mode: request.mode })
            })
            .collect()
    }

    /// Refuses a mount whose host directory overlaps (contains, or lies inside) anything
    /// Warden trusts, comparing paths with symlinks resolved. Whatever the mode: read-only
    /// would still show the tool keys and secrets.
    fn refuse_mounts_over(&self, also: Vec<(String, PathBuf)>) -> Result<(), String> {
        let resolve = |what: &str, path: &Path| {
            resolved(path).map_err(|e| format!("{what}: cannot resolve {}: {e}", path.display()))
        };
        let mut trusted = Vec::new();
        for (what, path) in self.trusted_paths(also) {
            let real = resolve(&what, &path)?;
            trusted.push((what, real));
        }
        for (i, mount) in self.mounts.iter().enumerate() {
            let field = format!("field `mounts[{i}].host`");
            let host = resolve(&field, &mount.host)?;
            if let Some((what, path)) = trusted.iter().find(|(_, p)| overlap(&host, p)) {
                return Err(format!(
                    "{field}: {} overlaps {what} ({}); a tool must not reach what Warden trusts",
                    mount.host.display(),
                    path.display()
                ));
            }
        }
        Ok(())
    }

    /// The host directory bound to `guest` for `tool`, if the deployment binds one.
    pub fn mount_for(&self, tool: &str, guest: &str) -> Option<&Path> {
        self.mounts
            .iter()
            .find(|m| m.tool == tool && m.guest == guest)
            .map(|m| m.host.as_path())
    }

    /// Where `warden tool add` puts registered tools.
    pub fn registered_tools_dir(&self) -> PathBuf {
        self.state_dir.join("tools")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.state_dir.join("cache")
    }

    /// Where the signing keys live (`credentials::mint::KeyStore`).
    pub fn keys_dir(&self) -> PathBuf {
        self.state_dir.join("keys")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_resolves_paths_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warden.toml");
        std::fs::write(
            &path,
            r#"
tool_dirs = ["tools"]
[agents.bot]
trust = "high"
[[mounts]]
tool = "read-file"
guest = "/data"
host = "data"
"#,
        )
        .unwrap();
        let d = Deployment::load(&path).unwrap();
        assert_eq!(d.state_dir, dir.path().join("state"));
        assert_eq!(d.tool_dirs, vec![dir.path().join("tools")]);
        assert_eq!(
            d.mount_for("read-file", "/data"),
            Some(dir.path().join("data").as_path())
        );
        assert_eq!(d.mount_for("read-file", "/other"), None);
        assert_eq!(d.policy_dir, dir.path().join("policies"));
        assert_eq!(d.agents["bot"].trust, Trust::High);
    }

    /// Loads `warden.toml` in `dir` written with the text given; the error as text.
    fn loader(dir: &Path) -> impl Fn(&str) -> Result<Deployment, String> {
        let path = dir.join("warden.toml");
        move |text| {
            std::fs::write(&path, text).unwrap();
            Deployment::load(&path).map_err(|e| e.to_string())
        }
    }

    #[test]
    fn the_inbox_is_an_origin_and_beyond_loopback_behind_tls() {
        let dir = tempfile::tempdir().unwrap();
        let load = loader(dir.path());
        let d = load("[approvals.inbox]\n").unwrap();
        let inbox = d.approvals.inbox.unwrap();
        assert_eq!(inbox.listen.to_string(), DEFAULT_INBOX_ADDR);
        assert_eq!(inbox.url, None);
        let behind =
            "[approvals.inbox]\nlisten = \"0.0.0.0:8932\"\nurl = \"https://Approvals.example/\"\n";
        assert_eq!(
            load(behind)
                .unwrap()
                .approvals
                .inbox
                .unwrap()
                .url
                .as_deref(),
            Some("https://approvals.example")
        );
        let e = load("[approvals.inbox]\nlisten = \"0.0.0.0:8932\"\n").unwrap_err();
        assert!(
            e.contains("approvals.inbox.listen") && e.contains("TLS"),
            "{e}"
        );
        for bad in [
            "https://a.example/inbox",
            "https://a.example/?x=1",
            "ftp://a.example",
        ] {
            let e = load(&format!("[approvals.inbox]\nurl = \"{bad}\"\n")).unwrap_err();
            assert!(e.contains("approvals.inbox.url") && !e.contains(bad), "{e}");
        }
        let issuer = load("[oauth]\nissuer = \"https://Warden.example/\"\n").unwrap();
        assert_eq!(
            issuer.oauth_issuer.as_deref(),
            Some("https://warden.example")
        );
        let e = load("[oauth]\nissuer = \"https://warden.example/mcp\"\n").unwrap_err();
        assert!(e.contains("oauth.issuer"), "{e}");
        let e = load("[approvals.notify]\nwebhook = \"hooks.example/T0/secret\"\n").unwrap_err();
        assert!(
            e.contains("approvals.notify.webhook") && !e.contains("secret"),
            "{e}"
        );
    }

    #[test]
    fn an_external_authorization_server_is_named_checked_and_its_keys_read() {
        let dir = tempfile::tempdir().unwrap();
        let load = loader(dir.path());
        let key = crate::identity::keys::generate().verifying_key();
        let jwks = KeySet::new(vec![(Some("k1".into()), key)]);
        std::fs::write(dir.path().join("idp.json"), jwks.to_json().to_string()).unwrap();
        let agent = format!(
            "[agents.bot]\npublic_key = \"{}\"\n",
            crate::identity::keys::format_public(&key)
        );
        let server =
            format!("{agent}[oauth.authorization_server]\nissuer = \"https://idp.example/r\"\n");
        let d = load(&format!(
            "{server}jwks = \"idp.json\"\nagents = [\"bot\"]\n"
        ))
        .unwrap();
        let external = d.oauth_authorization_server.unwrap();
        assert_eq!(external.agent_claim, "sub");
        assert_eq!(external.keys.key(Some("k1")), Some(key));
        assert!(external.agents.contains("bot"));
        for (bad, field) in [
            (
                "jwks = \"idp.json\"\nagents = [\"bot\"]\nagent_claim = \"email\"\n",
                "agent_claim",
            ),
            ("jwks = \"missing.json\"\nagents = [\"bot\"]\n", "jwks"),
            ("jwks = \"warden.toml\"\nagents = [\"bot\"]\n", "jwks"),
            ("jwks = \"idp.json\"\nagents = []\n", "agents"),
            ("jwks = \"idp.json\"\nagents = [\"mallory\"]\n", "agents"),
        ] {
            let e = load(&format!("{server}{bad}")).unwrap_err();
            assert!(
                e.contains(&format!("oauth.authorization_server.{field}")),
                "{e}"
            );
        }
        for issuer in [
            "not a url",
            "http://idp.example",
            "https://idp.example/?realm=x",
            "https://warden.example",
        ] {
            let e = load(&format!(
                "{agent}[oauth]\nissuer = \"https://warden.example\"\n\
                 [oauth.authorization_server]\nissuer = \"{issuer}\"\njwks = \"idp.json\"\n\
                 agents = [\"bot\"]\n"
            ))
            .unwrap_err();
            assert!(
                e.contains("oauth.authorization_server.issuer"),
                "{issuer}: {e}"
            );
        }
        let on_loopback = format!(
            "{agent}[oauth.authorization_server]\nissuer = \"http://127.0.0.1:9000\"\n\
             jwks = \"idp.json\"\nagents = [\"bot\"]\n"
        );
        assert!(load(&on_loopback).is_ok());
    }

    #[test]
    fn unknown_fields_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warden.toml");
        std::fs::write(&path, "tool_dir = [\"tools\"]\n").unwrap();
        let e = Deployment::load(&path).unwrap_err().to_string();
        assert!(e.contains("warden.toml") && e.contains("tool_dir"), "{e}");
    }
}
