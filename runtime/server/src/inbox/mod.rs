//! The approval inbox (`[approvals.inbox]`): a web page, on a listener of its own apart from
//! the agents' MCP endpoint, where approvers read held calls and approve or deny them.
//!
//! The approver's private key stays in their browser: the page imports it with WebCrypto as
//! non-extractable and signs there exactly what `warden approve` signs; this server only
//! verifies. Reading the inbox needs a sign-in: a fresh challenge signed by a registered
//! approver's key (an agent's key is refused), which opens a short session carried as a bearer
//! token, never a cookie. Every response forbids framing, inline scripts and anything loaded
//! from elsewhere; every state-changing request must come from the inbox's own origin.

mod sign_in;

use crate::json_response as json;
use anyhow::{Context as _, Result};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use warden::approval;
use warden::identity::{jwt, keys};
use warden::runtime::Runtime;
use warden::state::{Approval, ApprovalDecision, ApprovalStatus, Session};

pub use sign_in::SignIns;

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/inbox.js");
const STYLE: &str = include_str!("page/inbox.css");

/// The most a request body may be: a signature and an id.
const MAX_BODY: usize = 4096;
/// How many decided approvals the inbox shows besides the pending ones.
const RECENT_DECIDED: u32 = 50;

/// Nothing but this origin's own script and style; no frames, forms, plugins or base.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The inbox of one node.
pub struct Inbox {
    runtime: Arc<Runtime>,
    /// `scheme://host[:port]`: where approvers open it. State-changing requests must carry it
    /// as their `Origin`, and sign-ins sign it.
    origin: String,
    /// On loopback without a configured URL, the `Host` every request must name (a page on
    /// another site that rebinds its name to 127.0.0.1 names its own).
    host: Option<String>,
    sign_ins: Mutex<SignIns>,
}

/// The inbox's origin once bound to `bound`: the configured URL, or `http://` and the address.
pub fn origin_of(settings: &warden::deployment::InboxSettings, bound: SocketAddr) -> String {
    settings
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{bound}"))
}

/// Binds the inbox's listener (before the node announces itself, so a port taken fails the
/// start) and returns it with the inbox's origin.
pub async fn bind(
    settings: &warden::deployment::InboxSettings,
) -> Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding the approval inbox at {}", settings.listen))?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        tracing::warn!(%bound, "serving the approval inbox beyond loopback: put TLS in front of it");
    }
    Ok((listener, origin_of(settings, bound)))
}

/// The inbox's routes, for the listener `bind` returned.
pub fn router(runtime: Arc<Runtime>, origin: String, loopback: bool) -> axum::Router {
    let configured = runtime
        .deployment()
        .approvals
        .inbox
        .as_ref()
        .is_some_and(|i| i.url.is_some());
    let host = (loopback && !configured).then(|| origin.trim_start_matches("http://").to_string());
    let inbox = Arc::new(Inbox {
        runtime,
        origin,
        host,
        sign_ins: Mutex::default(),
    });
    use axum::routing::{get, post};
    axum::Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        )
        .route(
            "/inbox.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/inbox.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/api/challenge", post(challenge))
        .route("/api/sign-in", post(sign_in))
        .route("/api/approvals", get(list))
        .route("/api/decide", post(decide))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(inbox.clone(), guard))
        .with_state(inbox)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Before every request: the Host (on loopback) and, for a state-changing one, the Origin.
/// After: the headers that keep the page from being framed, sniffed, cached or scripted.
async fn guard(State(inbox): State<Arc<Inbox>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let named = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let refusal = if let Some(host) = &inbox.host
        && named(header::HOST) != Some(host.as_str())
    {
        Some((
            StatusCode::MISDIRECTED_REQUEST,
            format!("this inbox is served as {}", inbox.origin),
        ))
    } else if request.method() != http::Method::GET
        && named(header::ORIGIN) != Some(inbox.origin.as_str())
    {
        Some((
            StatusCode::FORBIDDEN,
            format!(
                "a request that changes anything must come from {}",
                inbox.origin
            ),
        ))
    } else {
        None
    };
    let mut response = match refusal {
        Some((status, reason)) => failure(status, &reason),
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn failure(status: StatusCode, reason: &str) -> Response {
    json(status, serde_json::json!({ "error": reason }))
}

/// A request refused, with its status and one-line reason (as JSON `error`).
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        failure(self.0, &self.1)
    }
}

fn refuse<T>(status: StatusCode, reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(status, reason.into()))
}

/// A request's JSON body, bounded.
fn body<T: for<'de> Deserialize<'de>>(bytes: &Bytes) -> Result<T, Refusal> {
    if bytes.len() > MAX_BODY {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "the request is too large");
    }
    serde_json::from_slice(bytes).or_else(|_| {
        refuse(
            StatusCode::BAD_REQUEST,
            "the request is not the JSON expected",
        )
    })
}

fn sign_ins(inbox: &Inbox) -> std::sync::MutexGuard<'_, SignIns> {
    inbox
        .sign_ins
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// `POST /api/challenge`: a challenge to sign in with.
async fn challenge(State(inbox): State<Arc<Inbox>>) -> Response {
    let challenge = sign_ins(&inbox).challenge(jwt::now());
    json(
        StatusCode::OK,
        serde_json::json!({ "challenge": challenge, "origin": inbox.origin }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    challenge: String,
    /// `ed25519:<base64url>`: the key that signed (one key is checked, not every one).
    public_key: String,
    signature: String,
}

/// `POST /api/sign-in`: a challenge signed by a registered approver opens a session.
async fn sign_in(State(inbox): State<Arc<Inbox>>, bytes: Bytes) -> Result<Response, Refusal> {
    let request: SignIn = body(&bytes)?;
    let now = jwt::now();
    if !sign_ins(&inbox).take_challenge(&request.challenge, now) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "the challenge is unknown, used or expired: sign in again",
        );
    }
    let deployment = inbox.runtime.deployment();
    let refused = |reason: String| {
        tracing::info!(%reason, "an inbox sign-in was refused");
        refuse(
            StatusCode::UNAUTHORIZED,
            format!("sign-in refused: {reason}"),
        )
    };
    let key = match keys::parse_public(&request.public_key) {
        Ok(key) => key,
        Err(reason) => return refused(reason),
    };
    let approver = match approval::approver_of(&deployment, &key) {
        Ok(approver) => approver,
        Err(reason) => return refused(reason.to_string()),
    };
    let signed = sign_in::message(&request.challenge, &inbox.origin);
    if let Err(reason) = approval::verify_signature(&key, &signed, &request.signature) {
        return refused(reason);
    }
    let (token, expires) = sign_ins(&inbox).open(approver, key, now);
    tracing::info!(%approver, "an approver signed in to the inbox");
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "token": token, "approver": approver, "expires": expires }),
    ))
}

/// The signed-in approver of a request, still registered with the key they signed in with.
fn session(inbox: &Inbox, headers: &HeaderMap) -> Result<sign_in::Session, Refusal> {
    let refused = || {
        Refusal(
            StatusCode::UNAUTHORIZED,
            "sign in with an approver's key first (or again: sessions expire)".into(),
        )
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(refused)?;
    let session = sign_ins(inbox)
        .session(token, jwt::now())
        .ok_or_else(refused)?;
    let registered = inbox
        .runtime
        .deployment()
        .approvers
        .get(&session.approver)
        .and_then(|a| keys::parse_public(&a.public_key).ok());
    if registered != Some(session.key) {
        return Err(refused());
    }
    Ok(session)
}

/// Runs a state store query off the async threads; its failure is logged, not shown.
async fn stored<T: Send + 'static>(
    inbox: &Inbox,
    query: impl FnOnce(&dyn warden::state::StateStore) -> Result<T> + Send + 'static,
) -> Result<T, Refusal> {
    let runtime = inbox.runtime.clone();
    let answered = tokio::task::spawn_blocking(move || query(runtime.state()?.as_ref())).await;
    match answered {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "the approval inbox could not read the state store");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "Warden could not read its state; try again",
            )
        }
        Err(_) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "Warden failed"),
    }
}

/// One approval as the page shows it, with its session's taint when that is known. Its input
/// is pretty-printed with every character that could hide or reorder text escaped (bidi
/// overrides, zero-width characters): what a person reads is what would run.
fn shown(a: &Approval, sessions: &HashMap<String, Session>, now: i64) -> serde_json::Value {
    let verifiable = approval::verifiable(a);
    let session = a.session.as_ref().and_then(|id| sessions.get(id));
    let pretty = serde_json::to_string_pretty(&a.input).unwrap_or_default();
    let status = match a.status {
        ApprovalStatus::Pending if a.expires <= now => "expired",
        status => status.as_str(),
    };
    serde_json::json!({
        "id": a.id,
        "digest": a.digest,
        "agent": a.agent,
        "user": a.user,
        "tool": a.tool,
        "tool_digest": a.tool_digest,
        "input": warden::text::printable_json(&pretty),
        "reason": a.reason,
        "created": a.created,
        "expires": a.expires,
        "status": status,
        "approver": a.approver,
        "used_by": a.used_by,
        "session": a.session,
        "delegation": a.delegation,
        "tainted": session.map(|s| s.tainted),
        "taint_reason": session.and_then(|s| s.taint_reason.clone()),
        "verifiable": verifiable.is_ok(),
        "unverifiable": verifiable.err(),
    })
}

/// `GET /api/approvals`: the pending approvals, then the most recently decided.
async fn list(State(inbox): State<Arc<Inbox>>, headers: HeaderMap) -> Result<Response, Refusal> {
    let session = session(&inbox, &headers)?;
    let now = jwt::now();
    let (pending, decided, sessions) = stored(&inbox, move |state| {
        // Pending ones are few (each agent may have `MAX_PENDING_PER_AGENT`); the decided
        // ones are read as many as are shown. Lapsed ones are shown as expired, undecidable.
        let (mut pending, lapsed): (Vec<_>, Vec<_>) = state
            .approvals(false)?
            .into_iter()
            .partition(|a| a.expires > now);
        let mut decided = state.decided_approvals(RECENT_DECIDED)?;
        decided.extend(lapsed);
        // Oldest first, so that a new one never moves the ones above it.
        pending.sort_by_key(|a| a.created);
        decided.sort_by_key(|a| std::cmp::Reverse(a.created));
        // What tainted the session of each call waiting (at most a few per agent).
        let mut sessions = HashMap::new();
        for id in pending.iter().filter_map(|a| a.session.as_ref()) {
            if !sessions.contains_key(id)
                && let Some(session) = state.session(id)?
            {
                sessions.insert(id.clone(), session);
            }
        }
        Ok((pending, decided, sessions))
    })
    .await?;
    Ok(json(
        StatusCode::OK,
        serde_json::json!({
            "approver": session.approver,
            "now": now,
            "pending": pending.iter().map(|a| shown(a, &sessions, now)).collect::<Vec<_>>(),
            "decided": decided.iter().map(|a| shown(a, &sessions, now)).collect::<Vec<_>>(),
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decide {
    id: String,
    decision: Decision,
    signature: String,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Decision {
    Approve,
    Deny,
}

/// `POST /api/decide`: the signed-in approver's decision, signed in their browser over the
/// approval (`approval::message` to approve, `approval::deny_message` to deny).
async fn decide(
    State(inbox): State<Arc<Inbox>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Refusal> {
    let session = session(&inbox, &headers)?;
    let request: Decide = body(&bytes)?;
    let id = request.id.clone();
    let Some(pending) = stored(&inbox, move |state| state.approval(&id)).await? else {
        return refuse(StatusCode::NOT_FOUND, "no such approval");
    };
    let id = &pending.id;
    if pending.status != ApprovalStatus::Pending {
        let status = pending.status.as_str();
        return refuse(
            StatusCode::CONFLICT,
            format!("approval {id} is {status}, not pending"),
        );
    }
    if pending.expires <= jwt::now() {
        return refuse(StatusCode::CONFLICT, format!("approval {id} has expired"));
    }
    // One that is not the call it claims to be may be denied, never approved.
    if let (Decision::Approve, Err(reason)) = (request.decision, approval::verifiable(&pending)) {
        return refuse(
            StatusCode::CONFLICT,
            format!("approval {id} cannot be approved: {reason}"),
        );
    }
    let (message, verb) = match request.decision {
        Decision::Approve => (approval::message(&pending), "approved"),
        Decision::Deny => (approval::deny_message(&pending), "denied"),
    };
    approval::verify_signature(&session.key, &message, &request.signature)
        .or_else(|reason| refuse(StatusCode::BAD_REQUEST, format!("not decided: {reason}")))?;
    let decision = match request.decision {
        Decision::Approve => ApprovalDecision::Approved {
            approver: session.approver.clone(),
            signature: request.signature,
        },
        Decision::Deny => ApprovalDecision::Denied {
            by: session.approver.clone(),
            signature: Some(request.signature),
        },
    };
    let key = id.clone();
    if !stored(&inbox, move |state| state.decide_approval(&key, &decision)).await? {
        return refuse(
            StatusCode::CONFLICT,
            format!("approval {id} was decided meanwhile"),
        );
    }
    tracing::info!(approval = %id, approver = %session.approver, verb, "decided in the inbox");
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "id": id, "status": verb }),
    ))
}
