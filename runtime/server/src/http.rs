//! The streamable HTTP transport (`warden serve`, `warden mcp --http ADDR`), with a node's
//! liveness (`/healthz`) and readiness (`/readyz`) probes and a draining stop.
//!
//! Every MCP request carries a signed agent assertion as its bearer token (`warden assert`);
//! requests without one, or with one that does not verify, get 401 before any MCP handling. The first use of an assertion
//! records its nonce, so it is bound to this server; it is then accepted from this server's
//! memory until it expires (or until the memory, which is bounded, needs its place).
//!
//! Each MCP session (`Mcp-Session-Id`) is a Warden session per agent (`super::WardenMcp`); a
//! stateless request names its session in `_meta` or runs outside any.

use super::{InFlight, Principal, WardenMcp, json_response};
use anyhow::{Context as _, Result};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use warden::call::AuthenticatedAgent;
use warden::credentials::Secret;
use warden::error::Error;
use warden::identity::oauth::{self, Endpoints};
use warden::identity::{assertion, jwt};
use warden::runtime::Runtime;

/// The header that carries a delegation token: the request acts for that user.
pub const DELEGATION_HEADER: &str = "x-warden-delegation";

/// How a node stops: when `shutdown` resolves it accepts no new connection and no new call,
/// lets the calls in flight finish and be recorded for up to `drain`, then ends the MCP
/// sessions (an idle client's event stream with them) and returns.
pub struct Stop<F> {
    pub shutdown: F,
    pub drain: Duration,
}

/// Where a node serves, once bound.
pub struct Bound {
    /// The MCP endpoint's address (`http://ADDR/mcp`).
    pub mcp: SocketAddr,
    /// The approval inbox's origin, if the deployment has one (`[approvals.inbox]`).
    pub inbox: Option<String>,
}

/// Serves MCP at `http://ADDR/mcp`, liveness at `/healthz` and readiness at `/readyz` (503
/// while the state store does not answer: a call could not be recorded), and the approval
/// inbox on its own listener if the deployment has one, until `stop`. `bound` hears where
/// (ADDR may ask for port 0).
pub async fn serve<F>(
    runtime: Arc<Runtime>,
    addr: SocketAddr,
    stop: Stop<F>,
    bound: impl FnOnce(Bound),
) -> Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    // A store that cannot open fails the start, not the first call.
    runtime.state()?;
    let delivering = tokio::spawn(deliver_revocation_events(runtime.clone()));
    let in_flight = Arc::new(InFlight::default());
    let sessions = CancellationToken::new();
    let mut config =
        StreamableHttpServerConfig::default().with_cancellation_token(sessions.clone());
    if !addr.ip().is_loopback() {
        // Behind a load balancer the Host is the service's name. The check guards a local
        // server from a browser's DNS rebinding; every request here carries a signed assertion,
        // which a browser page cannot.
        config = config.disable_allowed_hosts();
    }
    let inbox = match &runtime.deployment().approvals.inbox {
        Some(settings) => Some(crate::inbox::bind(settings).await?),
        None => None,
    };
    let inbox_origin = inbox.as_ref().map(|(_, origin)| origin.clone());
    if let Some(origin) = &inbox_origin {
        runtime.set_inbox_origin(origin.clone());
    }
    let handlers = runtime.clone();
    let shared = in_flight.clone();
    let linked = inbox_origin.clone();
    let service = StreamableHttpService::new(
        move || {
            Ok(WardenMcp::new(handlers.clone(), None)
                .sharing(shared.clone())
                .inbox(linked.clone()))
        },
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let mcp_addr = listener.local_addr()?;
    // The MCP endpoint is the one resource Warden, its authorization server, issues for:
    // named as clients reach it (`[oauth] issuer`), else by this node's own address.
    let issuer = runtime
        .deployment()
        .oauth_issuer
        .clone()
        .unwrap_or_else(|| format!("http://{mcp_addr}"));
    let endpoints = Endpoints {
        resource: format!("{issuer}/mcp"),
        issuer,
    };
    let auth = Arc::new(Bearers {
        runtime: runtime.clone(),
        verified: Mutex::new(BearerCache::new(MAX_BEARERS, MAX_BEARERS_PER_AGENT)),
        endpoints: endpoints.clone(),
    });
    let oauth = crate::oauth::router(runtime.clone(), endpoints);
    let inbox_app = inbox.map(|(listener, origin)| {
        let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
        (
            listener,
            crate::inbox::router(runtime.clone(), origin, loopback),
        )
    });
    let probes = axum::Router::new()
        .route("/healthz", axum::routing::get(live))
        .route("/readyz", axum::routing::get(ready))
        .route("/metrics", axum::routing::get(metrics))
        .with_state(Arc::new(Readiness {
            runtime,
            last: tokio::sync::Mutex::new(None),
            gauges: tokio::sync::Mutex::new(None),
        }));
    let app = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(auth, authenticate))
        .merge(probes)
        .merge(oauth);
    bound(Bound {
        mcp: mcp_addr,
        inbox: inbox_origin,
    });
    let (stopping, mut told) = tokio::sync::watch::channel(false);
    // The inbox stops taking requests when the node does; a decision being written finishes.
    let inbox_served = inbox_app.map(|(listener, app)| {
        let mut told = told.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = told.wait_for(|stopping| *stopping).await;
            });
            if let Err(e) = served.await {
                tracing::error!(error = %e, "the approval inbox stopped");
            }
        })
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = told.wait_for(|stopping| *stopping).await;
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
                served = &mut server => {
            delivering.abort();
            if let Some(inbox) = inbox_served {
                inbox.abort();
            }
            return Ok(served?);
        }
        () = stop.shutdown => {}
    }
    delivering.abort();
    // No new connection, no new call; those in flight finish and are recorded.
    let _ = stopping.send(true);
    let deadline = tokio::time::Instant::now() + stop.drain;
    if tokio::time::timeout_at(deadline, in_flight.drain())
        .await
        .is_err()
    {
        tracing::warn!(drain = ?stop.drain, "calls still running after the drain period");
    }
    // Their last responses written, the sessions end, and with them their connections.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sessions.cancel();
    let closing = tokio::time::Instant::now() + Duration::from_secs(2);
    if tokio::time::timeout_at(closing, &mut server).await.is_err() {
        tracing::warn!("connections still open after the sessions ended: stopping anyway");
    }
    // A browser's idle connection to the inbox would hold it open.
    if let Some(inbox) = inbox_served {
        inbox.abort();
    }
    Ok(())
}

/// Delivers the deployment's revocation events, each second, for as long as the node serves,
/// each receiver in a task of its own (a slow one holds up no other), for the receivers of
/// the deployment in force (a reload may add some): every node does, and the state store
/// hands each event to one of them at a time.
async fn deliver_revocation_events(runtime: Arc<Runtime>) {
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut passes = tokio::task::JoinSet::new();
    loop {
        every.tick().await;
        while passes.try_join_next().is_some() {}
        for name in runtime.deployment().event_receivers.keys() {
            if !lock(&busy).insert(name.clone()) {
                continue;
            }
            let (runtime, busy, name) = (runtime.clone(), busy.clone(), name.clone());
            passes.spawn(async move {
                if let Err(e) = runtime.deliver_revocation_events_to(&name).await {
                    tracing::warn!(receiver = %name, error = %format!("{e:#}"), "delivering revocation events failed");
                }
                lock(&busy).remove(&name);
            });
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Liveness: the process serves requests.
async fn live() -> Response {
    json_response(
        http::StatusCode::OK,
        serde_json::json!({ "status": "live" }),
    )
}

/// What readiness last found, for a moment: a flood of probes asks the store once.
struct Readiness {
    runtime: Arc<Runtime>,
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, bool)>>,
    /// The store's gauges as the last scrape read them (pending approvals, revocations; None:
    /// the store did not answer), reused for `GAUGES_FRESH`.
    gauges: tokio::sync::Mutex<Option<(tokio::time::Instant, Option<StoreGauges>)>>,
}

/// Approvals pending, revocations in force, revocation events not yet acknowledged.
type StoreGauges = (usize, usize, u64);

/// How long the store's gauges are reused: a flood of scrapes reads the store once a second.
const GAUGES_FRESH: Duration = Duration::from_secs(1);

/// How long a readiness answer is reused.
const READINESS_FRESH: Duration = Duration::from_millis(250);

/// Readiness: the state store answers (a call could not be recorded otherwise). Its error is
/// logged when readiness changes, never shown: it may name the store's address.
async fn ready(State(readiness): State<Arc<Readiness>>) -> Response {
    // Probes wait for one another here, without holding a thread.
    let mut last = readiness.last.lock().await;
    let ready = match *last {
        Some((at, ready)) if at.elapsed() < READINESS_FRESH => ready,
        previous => {
            let runtime = readiness.runtime.clone();
            let answered = tokio::task::spawn_blocking(move || runtime.state()?.ping()).await;
            let ready = match answered {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    if previous.is_none_or(|(_, was)| was) {
                        tracing::warn!(error = %format!("{e:#}"), "not ready: the state store does not answer");
                    }
                    false
                }
                Err(e) => {
                    tracing::error!(error = %e, "the readiness check failed");
                    false
                }
            };
            *last = Some((tokio::time::Instant::now(), ready));
            ready
        }
    };
    match ready {
        true => json_response(
            http::StatusCode::OK,
            serde_json::json!({ "status": "ready" }),
        ),
        false => json_response(
            http::StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "status": "not ready", "reason": "the state store does not answer" }),
        ),
    }
}

/// Prometheus metrics (`warden::metrics`), with the gauges read from the state store now:
/// approvals waiting for a person, revocations in force; and the tools kept warm. A store
/// that does not answer leaves its gauges out and says `warden_state_store_up 0`.
async fn metrics(State(readiness): State<Arc<Readiness>>) -> Response {
    let read = {
        let mut last = readiness.gauges.lock().await;
        match *last {
            Some((at, read)) if at.elapsed() < GAUGES_FRESH => read,
            _ => {
                let runtime = readiness.runtime.clone();
                let read = tokio::task::spawn_blocking(move || {
                    let store = runtime.state()?;
                    let pending = store.approvals(false)?.len();
                    let revoked = store.revocations()?.len();
                    let deployment = runtime.deployment();
                    let receivers: Vec<&str> = deployment
                        .event_receivers
                        .keys()
                        .map(String::as_str)
                        .collect();
                    let events = store.pending_events(&receivers)?;
                    anyhow::Ok((pending, revoked, events))
                })
                .await
                .ok()
                .and_then(Result::ok);
                *last = Some((tokio::time::Instant::now(), read));
                read
            }
        }
    };
    let runtime = &readiness.runtime;
    let mut gauges = vec![(
        "warden_tools_warm",
        "Tools loaded and kept warm on this node.",
        runtime.warm_tools() as f64,
    )];
    match read {
        Some((pending, revoked, events)) => gauges.extend([
            (
                "warden_state_store_up",
                "Whether the state store answered this scrape.",
                1.0,
            ),
            (
                "warden_approvals_pending",
                "Approvals waiting for a person.",
                pending as f64,
            ),
            (
                "warden_revocations",
                "Revocations in force.",
                revoked as f64,
            ),
            (
                "warden_revocation_events_pending",
                "Revocation events no receiver has acknowledged yet.",
                events as f64,
            ),
        ]),
        None => gauges.push((
            "warden_state_store_up",
            "Whether the state store answered this scrape.",
            0.0,
        )),
    }
    let text = [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")];
    (text, runtime.metrics().render(&gauges)).into_response()
}

/// How many verified assertions the server remembers. An assertion lives a minute, so this is
/// many busy clients; beyond it, the one closest to expiring is forgotten (its client is
/// asked for a fresh assertion: a reused one is a replay to the state store).
const MAX_BEARERS: usize = 10_000;
/// Live assertions of one agent kept: a client needs one at a time, a few while it rotates.
const MAX_BEARERS_PER_AGENT: usize = 64;

/// Assertions this server has verified.
struct Bearers {
    runtime: Arc<Runtime>,
    verified: Mutex<BearerCache<AuthenticatedAgent>>,
    /// Where this node's resource and authorization server are (access tokens).
    endpoints: Endpoints,
}

impl Bearers {
    /// A bearer: an OAuth access token (`at+jwt`, checked whole at every request, so that a
    /// revocation ends it at the next), or a signed agent assertion.
    /// The agent, and the delegation an access token acts under (a token exchange's).
    fn verify(&self, token: &str) -> Result<(AuthenticatedAgent, Option<Secret>), Error> {
        let access = jwt::peek_header(token)
            .ok()
            .and_then(|h| h.typ)
            .is_some_and(|t| oauth::is_access_token_type(&t));
        if access {
            let bearer = self
                .runtime
                .authenticate_access_token(token, &self.endpoints)?;
            return Ok((bearer.agent, bearer.on_behalf_of));
        }
        Ok((self.verify_assertion(token)?, None))
    }

    fn verify_assertion(&self, token: &str) -> Result<AuthenticatedAgent, Error> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = jwt::now();
        // Held while verifying: two requests bringing one new assertion at once (a client's
        // stream and its first post) must not both try to record its nonce.
        let mut verified = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A reload may have removed the agent or changed its key since.
        if let Some(agent) = verified.get(&key, now)
            && self.runtime.is_current(&agent)
        {
            return Ok(agent);
        }
        let agent = self.runtime.authenticate(&Secret::new(token))?;
        let expires = jwt::peek_claims::<assertion::CallAssertion>(token)
            .map_err(|e| Error::Refused(format!("the assertion: {e}")))?
            .exp;
        verified.insert(key, agent.clone(), agent.agent(), expires, now);
        Ok(agent)
    }
}

/// Verified assertions by the sha256 of the token, with their expiry and the agent they are
/// from; at most `capacity`, and at most `per_agent` of one agent. Expired entries are
/// dropped as new ones come in, soonest-expiring first, each once: no request scans the whole
/// cache. An agent bringing assertions without end evicts its own, not other agents' (whose
/// next request, its nonce spent, would otherwise be refused as a replay).
struct BearerCache<V> {
    entries: HashMap<[u8; 32], (V, i64, String)>,
    by_expiry: BTreeSet<(i64, [u8; 32])>,
    by_agent: HashMap<String, BTreeSet<(i64, [u8; 32])>>,
    capacity: usize,
    per_agent: usize,
}

impl<V: Clone> BearerCache<V> {
    fn new(capacity: usize, per_agent: usize) -> BearerCache<V> {
        BearerCache {
            entries: HashMap::new(),
            by_expiry: BTreeSet::new(),
            by_agent: HashMap::new(),
            capacity,
            per_agent,
        }
    }

    fn get(&self, key: &[u8; 32], now: i64) -> Option<V> {
        self.entries
            .get(key)
            .filter(|(_, expires, _)| *expires > now)
            .map(|(value, _, _)| value.clone())
    }

    fn insert(&mut self, key: [u8; 32], value: V, agent: &str, expires: i64, now: i64) {
        if expires <= now {
            return;
        }
        self.remove(&key);
        while let Some(&(soonest, old)) = self.by_expiry.first()
            && soonest <= now
        {
            self.remove(&old);
        }
        let own_oldest = self
            .by_agent
            .get(agent)
            .filter(|own| own.len() >= self.per_agent)
            .and_then(|own| own.first().copied());
        if let Some((_, old)) = own_oldest {
            self.remove(&old);
        }
        if self.entries.len() >= self.capacity
            && let Some(&(_, old)) = self.by_expiry.first()
        {
            self.remove(&old);
        }
        self.entries
            .insert(key, (value, expires, agent.to_string()));
        self.by_expiry.insert((expires, key));
        self.by_agent
            .entry(agent.to_string())
            .or_default()
            .insert((expires, key));
    }

    fn remove(&mut self, key: &[u8; 32]) {
        let Some((_, expires, agent)) = self.entries.remove(key) else {
            return;
        };
        self.by_expiry.remove(&(expires, *key));
        if let Some(own) = self.by_agent.get_mut(&agent) {
            own.remove(&(expires, *key));
            if own.is_empty() {
                self.by_agent.remove(&agent);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

async fn authenticate(
    State(bearers): State<Arc<Bearers>>,
    mut request: Request,
    next: Next,
) -> Response {
    // Owned copies: the request's body is not `Sync`, so no borrow of it may live across
    // an await.
    let (token, delegation) = {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        (
            header(http::header::AUTHORIZATION.as_str())
                .and_then(|v| v.strip_prefix("Bearer ").map(str::to_string)),
            header(DELEGATION_HEADER).map(Secret::new),
        )
    };
    let Some(token) = token else {
        return unauthorized(
            &bearers.endpoints,
            None,
            "a bearer token is required: an OAuth access token (see the resource metadata \
             this answer names) or a signed agent assertion (`warden assert`)",
        );
    };
    // Verifying may touch the state file: off the async threads.
    let verified = tokio::task::spawn_blocking({
        let bearers = bearers.clone();
        move || bearers.verify(&token)
    })
    .await
    .unwrap_or_else(|e| {
        Err(Error::Internal(anyhow::anyhow!(
            "verifying the assertion: {e}"
        )))
    });
    match verified {
        // A token that acts for a user says for whom: a header cannot change it.
        Ok((_, Some(_))) if delegation.is_some() => unauthorized(
            &bearers.endpoints,
            Some("invalid_request"),
            &format!(
                "this access token acts for a user already: send no `{DELEGATION_HEADER}` with it"
            ),
        ),
        Ok((agent, from_token)) => {
            request.extensions_mut().insert(Principal {
                agent,
                on_behalf_of: from_token.or(delegation),
                session: None,
            });
            next.run(request).await
        }
        Err(Error::Refused(reason)) => {
            tracing::info!(%reason, "MCP request refused");
            unauthorized(
                &bearers.endpoints,
                Some("invalid_token"),
                &format!("authentication failed: {reason}"),
            )
        }
        // Warden failed, not the client: it may try again, and is not told it is unknown.
        Err(e) => {
            tracing::error!(error = %e, "verifying an MCP request failed");
            (
                http::StatusCode::SERVICE_UNAVAILABLE,
                "Warden could not verify the request; try again",
            )
                .into_response()
        }
    }
}

/// 401, pointing the client at the resource's metadata (RFC 9728, section 5.1), whence the
/// authorization server; `error` when the token given was refused (RFC 6750, section 3).
fn unauthorized(endpoints: &Endpoints, error: Option<&str>, reason: &str) -> Response {
    let mut challenge = format!(
        "Bearer resource_metadata=\"{}\"",
        crate::oauth::resource_metadata_url(endpoints)
    );
    if let Some(error) = error {
        challenge.push_str(&format!(", error=\"{error}\""));
    }
    let mut response = (http::StatusCode::UNAUTHORIZED, reason.to_string()).into_response();
    if let Ok(value) = http::HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> String {
        "a".to_string()
    }

    #[test]
    fn the_bearer_cache_stays_bounded_and_forgets_expired_assertions() {
        let mut cache = BearerCache::new(3, 3);
        let key = |n: u8| [n; 32];
        // Four live assertions in a cache of three: the one closest to expiring goes.
        for (n, expires) in [(1, 150), (2, 120), (3, 180), (4, 170)] {
            cache.insert(key(n), agent(), "a", expires, 100);
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&key(2), 100).is_none());
        assert!(cache.get(&key(1), 100).is_some());
        // Expired entries answer nothing, and are dropped by the next insertion.
        assert!(cache.get(&key(1), 160).is_none());
        cache.insert(key(5), agent(), "a", 220, 175);
        assert_eq!(cache.len(), 2, "1 and 4 had expired by 175");
        assert!(cache.get(&key(5), 175).is_some());
        // An assertion already expired is not kept; one inserted twice counts once.
        cache.insert(key(6), agent(), "a", 175, 175);
        cache.insert(key(5), agent(), "a", 230, 175);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.by_expiry.len(), 2);
        // However many come in, at most three are held.
        for n in 10..=200 {
            cache.insert(key(n), agent(), "a", 300 + i64::from(n), 180);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.by_expiry.len(), 3);
    }

    /// One agent bringing fresh assertions without end evicts its own, never another's.
    #[test]
    fn an_agent_cannot_evict_another_agents_assertions() {
        let mut cache = BearerCache::new(10, 4);
        let key = |n: u8| [n; 32];
        cache.insert(key(0), agent(), "victim", 160, 100);
        for n in 1..=200 {
            cache.insert(key(n), agent(), "flooder", 200 + i64::from(n), 100);
        }
        assert!(
            cache.get(&key(0), 150).is_some(),
            "the victim's assertion was evicted"
        );
        assert_eq!(cache.len(), 5);
        assert_eq!(cache.by_agent["flooder"].len(), 4);
        assert!(cache.get(&key(200), 150).is_some());
    }
}
