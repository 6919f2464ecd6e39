//! The egress mediator: Warden's `wasi:http` hook. Every outgoing request of a tool passes
//! here, after the guest has handed it over and before anything touches the network:
//!
//! 1. the request must match one of the tool's egress rules (scheme, host, port, path,
//!    method), be permitted by policy (the `egress` action) and stay within the call's
//!    request budget — decided before any DNS query;
//! 2. the host resolves the name itself and refuses loopback, private, link-local, metadata
//!    and non-routable addresses unless the rule allows private ones;
//! 3. it connects to the very address it checked (no second lookup, no rebinding);
//! 4. redirects are not followed, timeouts are clamped to the call's deadline, and response
//!    bytes count against the call's budget;
//! 5. every response is scrubbed of every secret the call holds (`credentials::scrub`): the
//!    host asks for unencoded responses and refuses an encoded one, which it could not scrub.
//!
//! Every request, allowed or denied, is appended to the call's egress log with its reason (up
//! to `MAX_RECORDS`, then counted). Denied requests spend the call's denial budget: a tool
//! that keeps knocking is stopped (`DeniedRequestsSpent`).

use super::egress::{
    Destination, EgressRule, MAX_URL_BYTES, Target, check_address, clip, match_rule,
};
use crate::credentials::inject::{CredentialUse, Credentials};
use crate::credentials::scrub::{Scrubber, SecretSet};
use crate::faults::{Fault, injected};
use crate::outbound::{Stream, TLS};
use crate::policy::{Decision, Outcome};
use crate::state::RevocationKind;
use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Empty};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, Error, ForbiddenHeaderFilter, RequestOptions, WasiBody,
    WasiHttpHooks,
};

/// Longest a single connect / first byte / between-bytes wait may take, whatever the guest asks.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// How far past the call's deadline a request's wait may end (see `send`).
const DEADLINE_MARGIN: Duration = Duration::from_millis(250);
/// Requests a call may have denied; the last one ends the call. A tool that meets a denial
/// has no reason to insist, and every denial costs a record.
pub const MAX_DENIED_REQUESTS: u32 = 16;
/// Egress records a call keeps; the requests past them are only counted (one more record).
pub const MAX_RECORDS: usize = 64;
/// Longest method text kept in a record (a tool may send any token as a method).
const MAX_RECORDED_METHOD: usize = 16;

/// One outgoing request as it appears in the call's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EgressRecord {
    pub method: String,
    /// Where it went (none for a request without a normal form, or the omitted count).
    #[serde(flatten)]
    pub destination: Destination,
    /// A request without a normal form: what the tool wrote, cut to a bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unparsed: Option<String>,
    pub decision: EgressDecision,
    /// The rule that allowed it.
    pub rule: Option<String>,
    /// The policies that permitted or stopped it.
    pub policies: Vec<String>,
    /// Why it was denied or failed.
    pub reason: Option<String>,
    /// The address actually connected to.
    #[serde(default)]
    pub address: Option<String>,
    pub status: Option<u16>,
    pub response_bytes: u64,
    /// The credential the host added, if any (never its value).
    pub credential: Option<CredentialUse>,
    /// Echoes of the call's secrets replaced in the response before the tool saw it.
    #[serde(default)]
    pub scrubbed: usize,
    /// When the tool sent it, and how long until its response's head came (or it failed),
    /// for the call's trace; not audited.
    #[serde(skip)]
    pub timing: Option<(std::time::SystemTime, Duration)>,
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EgressDecision {
    Allow,
    Deny,
    /// The last record of a call past `MAX_RECORDS`: its reason counts the requests not kept.
    Omitted,
}

impl EgressDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            EgressDecision::Allow => "allow",
            EgressDecision::Deny => "deny",
            EgressDecision::Omitted => "omitted",
        }
    }
}

/// Where a request was going, as far as it was understood.
enum Whither {
    Normal(Destination),
    /// What the tool wrote, cut to a bound.
    Unparsed(String),
}

impl Whither {
    /// A request without a normal form, as recorded: its scheme, host, port and path as the
    /// tool wrote them, cut to a bound; never its user info or its query, which may carry
    /// data the audit must not keep.
    fn unparsed(uri: &http::Uri) -> Whither {
        let mut text = String::new();
        if let Some(scheme) = uri.scheme_str() {
            text = format!("{scheme}://");
        }
        text += uri.host().unwrap_or_default();
        if let Some(port) = uri.port_u16() {
            text += &format!(":{port}");
        }
        text += uri.path();
        Whither::Unparsed(clip(&text, MAX_URL_BYTES))
    }
}

impl EgressRecord {
    fn new(
        method: String,
        whither: Whither,
        decision: EgressDecision,
        rule: Option<String>,
        reason: Option<String>,
    ) -> Self {
        let (destination, unparsed) = match whither {
            Whither::Normal(destination) => (destination, None),
            Whither::Unparsed(text) => (Destination::default(), Some(text)),
        };
        EgressRecord {
            method,
            destination,
            unparsed,
            decision,
            rule,
            policies: vec![],
            reason,
            address: None,
            status: None,
            response_bytes: 0,
            credential: None,
            scrubbed: 0,
            timing: Some((std::time::SystemTime::now(), Duration::ZERO)),
        }
    }

    /// `scheme://host:port/path`, or what the tool wrote when it had no normal form.
    pub fn url(&self) -> String {
        match &self.unparsed {
            Some(text) => text.clone(),
            None => self.destination.url(),
        }
    }
}

/// The per-call egress log, shared between the hook and the call that reads it afterwards,
/// with the call's budget of denied requests.
#[derive(Clone)]
pub struct EgressLog(Arc<LogInner>);

struct LogInner {
    kept: Mutex<Kept>,
    /// Told each request as it is decided (a caller following the call).
    listener: crate::call::events::Listener,
    denials_left: AtomicU32,
    /// Cancelled when the last denied request of the budget is spent.
    spent: tokio_util::sync::CancellationToken,
}

#[derive(Default)]
struct Kept {
    records: Vec<EgressRecord>,
    /// Requests past `MAX_RECORDS`.
    omitted: u64,
    /// The ids of the tokens minted for the call, recorded or not (revocations may name them).
    minted: Vec<String>,
}

impl Default for EgressLog {
    fn default() -> Self {
        EgressLog::told_to(None)
    }
}

impl EgressLog {
    /// A log that tells `listener` (if any) each request as it is decided.
    pub fn told_to(listener: crate::call::events::Listener) -> Self {
        EgressLog(Arc::new(LogInner {
            listener,
            kept: Mutex::default(),
            denials_left: AtomicU32::new(MAX_DENIED_REQUESTS),
            spent: Default::default(),
        }))
    }
}

impl EgressLog {
    /// The records kept, then (when some requests were not kept) one that counts them.
    pub fn records(&self) -> Vec<EgressRecord> {
        let kept = self.kept();
        let mut records = kept.records.clone();
        if kept.omitted > 0 {
            records.push(EgressRecord::new(
                String::new(),
                Whither::Unparsed(String::new()),
                EgressDecision::Omitted,
                None,
                Some(format!(
                    "{} more request(s) not recorded: a call keeps {MAX_RECORDS} records",
                    kept.omitted
                )),
            ));
        }
        records
    }

    /// Runs the call's guest until it is done or its denial budget is spent.
    pub async fn until_spent<T>(
        &self,
        guest: impl Future<Output = T>,
    ) -> Result<T, DeniedRequestsSpent> {
        tokio::select! {
            biased;
            () = self.0.spent.cancelled() => Err(DeniedRequestsSpent),
            done = guest => Ok(done),
        }
    }

    /// The records are plain data: a panic elsewhere while the lock was held leaves them usable.
    fn kept(&self) -> MutexGuard<'_, Kept> {
        self.0.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The ids of the tokens minted for this call so far.
    fn minted(&self) -> Vec<String> {
        self.kept().minted.clone()
    }

    /// Notes the credential added to the request at `index`.
    fn credential(&self, index: Option<usize>, used: CredentialUse) {
        let mut kept = self.kept();
        // A token is carried by many requests of the call; its id is kept once.
        if let Some(jti) = &used.jti
            && !kept.minted.contains(jti)
        {
            kept.minted.push(jti.clone());
        }
        if let Some(record) = index.and_then(|i| kept.records.get_mut(i)) {
            record.credential = Some(used);
        }
    }

    /// Keeps `record` (its index, for updates) or, past `MAX_RECORDS`, only counts it.
    fn push(&self, record: EgressRecord) -> Option<usize> {
        if let Some(listener) = &self.0.listener {
            listener.event(crate::call::events::CallEvent::Egress {
                method: record.method.clone(),
                url: record.url(),
                decision: record.decision.as_str().to_string(),
                rule: record.rule.clone(),
                reason: record.reason.clone(),
            });
        }
        let mut kept = self.kept();
        if kept.records.len() >= MAX_RECORDS {
            kept.omitted += 1;
            return None;
        }
        kept.records.push(record);
        Some(kept.records.len() - 1)
    }

    fn update(&self, index: Option<usize>, f: impl FnOnce(&mut EgressRecord)) {
        let mut kept = self.kept();
        if let Some(record) = index.and_then(|i| kept.records.get_mut(i)) {
            f(record);
        }
    }

    /// Whether the call's denied requests are spent (it is being stopped).
    fn spent(&self) -> bool {
        self.0.spent.is_cancelled()
    }

    /// Spends one denied request; the last one of the budget stops the call.
    fn denied(&self) {
        let left = self
            .0
            .denials_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if matches!(left, Ok(1) | Err(_)) {
            self.0.spent.cancel();
        }
    }
}

/// Budget for one call, shared by its concurrent requests.
struct Budget {
    requests_left: AtomicU32,
    response_bytes_left: AtomicU64,
    deadline: Instant,
}

/// The decision point as the sandbox sees it: decides each request whose rule matched.
/// `credentials`: the credential this request would carry (by name) and the ids (`jti`) of
/// the tokens minted for the call so far, which a revocation may have reached.
pub trait EgressGate: Send + Sync {
    fn decide(&self, target: &Target, credentials: &[String]) -> Decision;

    /// The revocable ids the call runs under (agent, tool, delegation, session): a token
    /// minted for the call names them, so that introspection reflects their revocation.
    fn call_ids(&self) -> &[(RevocationKind, String)] {
        &[]
    }
}

/// A request that passed the rules and the budget.
struct Admitted {
    target: Target,
    rule: EgressRule,
}

/// The tool kept sending requests that were refused, past the call's budget
/// (`MAX_DENIED_REQUESTS`): it is stopped.
#[derive(Debug, thiserror::Error)]
#[error("the tool was stopped after {MAX_DENIED_REQUESTS} denied requests")]
pub struct DeniedRequestsSpent;

/// The `WasiHttpHooks` of one call.
pub struct EgressHooks {
    rules: Arc<[EgressRule]>,
    /// None: no request is permitted (while a tool describes itself).
    gate: Option<Arc<dyn EgressGate>>,
    credentials: Credentials,
    log: EgressLog,
    budget: Arc<Budget>,
}

impl EgressHooks {
    pub fn new(
        rules: Arc<[EgressRule]>,
        gate: Option<Arc<dyn EgressGate>>,
        credentials: Credentials,
        max_requests: u32,
        max_response_bytes: u64,
        deadline: Instant,
        log: EgressLog,
    ) -> Self {
        EgressHooks {
            rules,
            gate,
            credentials,
            log,
            budget: Arc::new(Budget {
                requests_left: AtomicU32::new(max_requests),
                response_bytes_left: AtomicU64::new(max_response_bytes),
                deadline,
            }),
        }
    }

    /// Checks that need nothing but the request line; no DNS, no network.
    /// Returns the URL to record and the reason when the request is refused.
    fn admit(&self, method: &str, uri: &http::Uri) -> Result<Admitted, (Whither, String)> {
        // A request without a normal form is recorded as the tool wrote it, cut to a bound.
        let target = Target::from_uri(method, uri).map_err(|e| (Whither::unparsed(uri), e))?;
        let rule = match self.rules.first() {
            Some(first) if injected(Fault::NoEgressRuleCheck) => Ok(first),
            _ => match_rule(&self.rules, &target),
        }
        .map_err(|e| (Whither::Normal(Destination::of(&target)), e))?;
        let left =
            self.budget
                .requests_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if left.is_err() {
            return Err((
                Whither::Normal(Destination::of(&target)),
                "the call's egress request limit is reached".into(),
            ));
        }
        Ok(Admitted {
            target,
            rule: rule.clone(),
        })
    }
}

/// The policies' word on one request: Ok(the policies that permit it) or Err((why not, the
/// policies that decided so)).
fn ask_policy(
    gate: Option<&dyn EgressGate>,
    target: &Target,
    credentials: &[String],
) -> Result<Vec<String>, (String, Vec<String>)> {
    let decision = match gate {
        Some(gate) => gate.decide(target, credentials),
        None => Decision::deny("no request may be sent here".into()),
    };
    match decision.outcome {
        Outcome::Allow => Ok(decision.policies),
        Outcome::Deny => Err((decision.summary(), decision.policies)),
        Outcome::ApprovalRequired => Err((
            format!(
                "{} (a single request cannot wait for an approval)",
                decision.summary()
            ),
            decision.policies,
        )),
    }
}

/// Headers a tool may never set: credentials are the host's business; routing and override
/// headers would have the upstream act on another method or path than the one decided
/// (frameworks honour `x-http-method-override`, `x-original-url`…); and ranges would let an
/// echo arrive in pieces shorter than the scrubber's fragment.
fn forbidden_header(name: &http::HeaderName) -> bool {
    const OVERRIDES: [&str; 9] = [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
        "x-original-host",
        "x-host",
        "range",
        "if-range",
    ];
    let n = name.as_str();
    DEFAULT_FORBIDDEN_HEADERS.contains(name)
        || n == "authorization"
        || n == "cookie"
        || n.starts_with("proxy-")
        || n.starts_with("x-forwarded-")
        || n == "forwarded"
        || OVERRIDES.contains(&n)
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl WasiHttpHooks for EgressHooks {
    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        Arc::new(forbidden_header)
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        if self.log.spent() {
            // The call is being stopped; the requests the tool squeezes in meanwhile are
            // refused without a record.
            drain(request.into_body());
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let method = request.method().as_str().to_string();
        let Admitted { target, rule } = match self.admit(&method, request.uri()) {
            Ok(admitted) => admitted,
            Err((whither, reason)) => {
                let method = clip(&method, MAX_RECORDED_METHOD);
                let record =
                    EgressRecord::new(method, whither, EgressDecision::Deny, None, Some(reason));
                tracing::info!(method = %record.method, url = %record.url(), reason = ?record.reason, "egress denied");
                self.log.push(record);
                self.log.denied();
                // The guest may still be writing the body; drain it so it sees the denial
                // instead of a reset connection.
                drain(request.into_body());
                return Box::new(async { Err(Error::HttpRequestDenied) });
            }
        };
        let index = self.log.push(EgressRecord::new(
            target.method.clone(),
            Whither::Normal(Destination::of(&target)),
            EgressDecision::Allow,
            Some(rule.url.clone()),
            None,
        ));
        let out = Outgoing {
            target,
            rule,
            gate: self.gate.clone(),
            credentials: self.credentials.clone(),
            budget: self.budget.clone(),
            log: self.log.clone(),
            index,
        };
        Box::new(async move {
            let sending = Instant::now();
            let result = send(&out, request, options).await;
            out.log.update(out.index, |r| {
                if let Some((_, took)) = &mut r.timing {
                    *took = sending.elapsed();
                }
            });
            if let Err(e) = &result {
                let denied = matches!(e, Error::HttpRequestDenied);
                tracing::info!(url = %out.target.display(), error = ?e, "egress request failed");
                out.log.update(out.index, |r| {
                    if denied {
                        r.decision = EgressDecision::Deny;
                    }
                    r.reason.get_or_insert_with(|| format!("{e:?}"));
                });
                if denied {
                    out.log.denied();
                }
            }
            result
        })
    }
}

/// A request that passed the rules, on its way out: what it matched and where its record is.
struct Outgoing {
    target: Target,
    rule: EgressRule,
    gate: Option<Arc<dyn EgressGate>>,
    credentials: Credentials,
    budget: Arc<Budget>,
    log: EgressLog,
    index: Option<usize>,
}

/// A request that passed the rules, from decision to response: decide -> resolve (and check
/// every address) -> inject the credential -> transmit -> scrub the response. A request
/// refused on the way has its body drained, so that the guest sees the refusal, not a reset.
async fn send(
    out: &Outgoing,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> SendResult {
    let waits = Waits::new(&out.budget, options.unwrap_or_default());
    let addresses = match prepare(out, request.headers_mut(), &waits).await {
        Ok(addresses) => addresses,
        Err(e) => {
            drain(request.into_body());
            return Err(e);
        }
    };
    // The scrubber reads bytes as sent: the host owns the encoding of every response, and a
    // tool's own `accept-encoding` is replaced.
    request.headers_mut().insert(
        http::header::ACCEPT_ENCODING,
        http::HeaderValue::from_static("identity"),
    );
    let (response, conn) = transmit(out, request, &addresses, &waits).await?;
    let response = scrub_response(out, response, &waits)?;
    let io = async move {
        match conn.await {
            Ok(result) => result.map_err(Error::from),
            Err(_) => Ok(()),
        }
    };
    Ok((response, Box::new(io)))
}

/// How long each wait of one request may take: what the guest asked, never more than
/// `MAX_WAIT`, and never past the call's deadline as it stands when the wait starts. The
/// margin lets the call's own timeout end a call still waiting at its deadline, so that it
/// is reported as a timeout.
struct Waits {
    deadline: Instant,
    asked: RequestOptions,
}

impl Waits {
    fn new(budget: &Budget, asked: RequestOptions) -> Waits {
        Waits {
            deadline: budget.deadline,
            asked,
        }
    }

    fn clamp(&self, asked: Option<Duration>) -> Duration {
        let remaining = self.deadline.saturating_duration_since(Instant::now()) + DEADLINE_MARGIN;
        asked.unwrap_or(MAX_WAIT).min(MAX_WAIT).min(remaining)
    }

    fn connect(&self) -> Duration {
        self.clamp(self.asked.connect_timeout)
    }

    fn first_byte(&self) -> Duration {
        self.clamp(self.asked.first_byte_timeout)
    }

    fn between_bytes(&self) -> Duration {
        self.clamp(self.asked.between_bytes_timeout)
    }
}

/// Everything before the request touches the network to its upstream: the decision, the
/// addresses (resolved and checked), and the credential, added only once both hold.
async fn prepare(
    out: &Outgoing,
    headers: &mut http::HeaderMap,
    waits: &Waits,
) -> Result<Vec<SocketAddr>, Error> {
    decide(out)?;
    let addresses = resolve_checked(out, waits.connect()).await?;
    if let Some(name) = &out.rule.credential {
        let ids = out.gate.as_deref().map_or(&[][..], |g| g.call_ids());
        match out.credentials.inject(headers, name, &out.target, ids) {
            Ok(used) => out.log.credential(out.index, used),
            Err(reason) => {
                out.log.update(out.index, |r| r.reason = Some(reason));
                return Err(Error::HttpRequestDenied);
            }
        }
    }
    Ok(addresses)
}

/// Step: the policies' word, with the credentials the request would carry (its own and the
/// tokens minted for the call so far, which a revocation may have reached). Asked here, on a
/// host thread: Cedar needs more stack than a guest's fiber has.
fn decide(out: &Outgoing) -> Result<(), Error> {
    let carried: Vec<String> = out
        .rule
        .credential
        .iter()
        .cloned()
        .chain(out.log.minted())
        .collect();
    match ask_policy(out.gate.as_deref(), &out.target, &carried) {
        Ok(policies) => {
            out.log.update(out.index, |r| r.policies = policies);
            Ok(())
        }
        Err((reason, policies)) => {
            tracing::info!(url = %out.target.display(), %reason, ?policies, "egress denied by policy");
            out.log.update(out.index, |r| {
                r.reason = Some(reason);
                r.policies = policies;
            });
            Err(Error::HttpRequestDenied)
        }
    }
}

/// Step: the host resolves the name itself and checks every address before connecting to
/// any of them.
async fn resolve_checked(out: &Outgoing, timeout: Duration) -> Result<Vec<SocketAddr>, Error> {
    let addresses = resolve(&out.target, timeout).await?;
    if let Some(reason) = addresses
        .iter()
        .find_map(|a| check_address(a.ip(), out.rule.allow_private).err())
    {
        let reason = format!("`{}` resolves to {reason}", out.target.host);
        tracing::info!(url = %out.target.display(), %reason, "egress denied");
        out.log.update(out.index, |r| r.reason = Some(reason));
        return Err(Error::HttpRequestDenied);
    }
    Ok(addresses)
}

/// Step: connects to an address that was checked (no second lookup), with TLS for https,
/// and sends the request as decided.
async fn transmit(
    out: &Outgoing,
    request: http::Request<WasiBody>,
    addresses: &[SocketAddr],
    waits: &Waits,
) -> Result<
    (
        http::Response<hyper::body::Incoming>,
        tokio::task::JoinHandle<Result<(), hyper::Error>>,
    ),
    Error,
> {
    let target = &out.target;
    let (stream, address) = connect(addresses, waits.connect()).await?;
    out.log
        .update(out.index, |r| r.address = Some(address.to_string()));
    let io: Box<dyn Stream> = if target.scheme == "https" {
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let tls = tokio::time::timeout(waits.connect(), TLS.connect(name, stream))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Tls)?;
        Box::new(tls)
    } else {
        Box::new(stream)
    };
    let (mut sender, conn) = tokio::time::timeout(
        waits.connect(),
        hyper::client::conn::http1::handshake(TokioIo::new(io)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    let request = origin_form(request, target)?;
    let conn = tokio::spawn(conn);
    let response = tokio::time::timeout(waits.first_byte(), sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)??;
    out.log
        .update(out.index, |r| r.status = Some(response.status().as_u16()));
    Ok((response, conn))
}

/// Step: the response as the tool gets it: refused if encoded (it could not be scrubbed),
/// its headers scrubbed now, its body and trailers as they stream, counted against the
/// call's budget.
fn scrub_response(
    out: &Outgoing,
    response: http::Response<hyper::body::Incoming>,
    waits: &Waits,
) -> Result<http::Response<WasiBody>, Error> {
    let (mut parts, incoming) = response.into_parts();
    if let Some(header) = encoded(&parts.headers) {
        let reason = format!(
            "the response is encoded ({header}) although the host asked for identity: it cannot be scrubbed"
        );
        tracing::info!(url = %out.target.display(), %reason, "egress response refused");
        out.log.update(out.index, |r| r.reason = Some(reason));
        return Err(Error::HttpResponseContentCoding(None));
    }
    let unscrubbed;
    let secrets = match injected(Fault::NoScrubbing) {
        true => {
            unscrubbed = SecretSet::new();
            &unscrubbed
        }
        false => &out.credentials.secrets,
    };
    let scrubbed = scrub_headers(secrets, &mut parts.headers);
    // The body may shrink or grow by the marker; its declared length no longer holds.
    parts.headers.remove(http::header::CONTENT_LENGTH);
    out.log.update(out.index, |r| r.scrubbed += scrubbed);
    let between_bytes = waits.between_bytes();
    let body = CountedBody {
        inner: incoming.map_err(Error::from).boxed_unsync(),
        budget: out.budget.clone(),
        log: out.log.clone(),
        index: out.index,
        between_bytes,
        timer: Box::pin(tokio::time::sleep(between_bytes)),
        secrets: secrets.clone(),
        scrubber: secrets.scrubber(),
        trailers: None,
        done: false,
    };
    Ok(http::Response::from_parts(parts, body.boxed_unsync()))
}

/// The response header that says its body is encoded in a way the scrubber cannot read
/// through: a content coding other than identity, or a transfer coding other than chunked
/// (which hyper removes).
fn encoded(headers: &http::HeaderMap) -> Option<&'static str> {
    let foreign = |name: http::header::HeaderName, allowed: &str| {
        headers.get_all(name).iter().any(|value| {
            String::from_utf8_lossy(value.as_bytes())
                .split(',')
                .map(str::trim)
                .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case(allowed))
        })
    };
    if foreign(http::header::CONTENT_ENCODING, "identity") {
        Some("content-encoding")
    } else if foreign(http::header::TRANSFER_ENCODING, "chunked") {
        Some("transfer-encoding")
    } else {
        None
    }
}

/// Scrubs header (or trailer) values in place; returns the number of echoes replaced.
fn scrub_headers(secrets: &SecretSet, headers: &mut http::HeaderMap) -> usize {
    let mut scrubbed = 0;
    // A name cannot be rewritten into a valid one: a header named with a secret goes whole.
    let named: Vec<http::HeaderName> = headers
        .keys()
        .filter(|name| secrets.names_a_secret(name.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in named {
        headers.remove(&name);
        scrubbed += 1;
    }
    for value in headers.values_mut() {
        let (clean, n) = secrets.scrub_all(value.as_bytes());
        if n > 0 {
            // The marker is visible ASCII, so the value stays valid; if not, nothing is kept.
            *value = http::HeaderValue::from_bytes(&clean)
                .unwrap_or_else(|_| http::HeaderValue::from_static("[REDACTED]"));
            scrubbed += n;
        }
    }
    scrubbed
}

async fn resolve(target: &Target, timeout: Duration) -> Result<Vec<SocketAddr>, Error> {
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, target.port)]);
    }
    let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
    let addresses: Vec<SocketAddr> = tokio::time::timeout(timeout, lookup)
        .await
        .map_err(|_| Error::DnsTimeout)?
        .map_err(|_| Error::DnsError {
            rcode: None,
            info_code: None,
        })?
        .collect();
    if addresses.is_empty() {
        return Err(Error::DestinationNotFound);
    }
    Ok(addresses)
}

async fn connect(
    addresses: &[SocketAddr],
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), Error> {
    let mut last = Error::ConnectionRefused;
    for address in addresses {
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Ok((stream, *address)),
            Ok(Err(_)) => last = Error::ConnectionRefused,
            Err(_) => last = Error::ConnectionTimeout,
        }
    }
    Err(last)
}

/// The request as sent: the normal form's method, origin-form target (`/path?query`, as
/// hyper sends the request line as given) and `host` (the authority the rule matched, not the
/// one the tool wrote). A GET/HEAD/OPTIONS without a length gets an empty body, and the
/// guest's body stream is drained, or hyper would drop it mid-write and the guest would see a
/// reset connection.
fn origin_form(
    request: http::Request<WasiBody>,
    target: &Target,
) -> Result<http::Request<WasiBody>, Error> {
    let (mut parts, body) = request.into_parts();
    parts.method = http::Method::from_bytes(target.method.as_bytes())
        .map_err(|_| Error::HttpRequestMethodInvalid)?;
    parts.uri =
        http::Uri::try_from(target.path_and_query()).map_err(|_| Error::HttpRequestUriInvalid)?;
    let host = http::HeaderValue::try_from(target.authority())
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    parts.headers.insert(http::header::HOST, host);
    let bodiless = matches!(
        parts.method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    ) && !parts.headers.contains_key(http::header::CONTENT_LENGTH);
    let body = if bodiless {
        drain(body);
        Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync()
    } else {
        body
    };
    Ok(http::Request::from_parts(parts, body))
}

fn drain(body: WasiBody) {
    tokio::spawn(async move {
        let mut body = body;
        while let Some(Ok(_)) = body.frame().await {}
    });
}

/// A response body that counts bytes against the call's budget, times out between frames,
/// and replaces echoes of the call's secrets in its data and trailers.
struct CountedBody {
    inner: WasiBody,
    budget: Arc<Budget>,
    log: EgressLog,
    index: Option<usize>,
    between_bytes: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    secrets: SecretSet,
    scrubber: Scrubber,
    /// Trailers that wait while the data held back by the scrubber is passed on first.
    trailers: Option<Frame<Bytes>>,
    done: bool,
}

impl CountedBody {
    /// The data held back by the scrubber, with its count recorded: the body's data ends.
    fn finish(&mut self) -> Option<Frame<Bytes>> {
        let rest = self.scrubber.finish();
        let n = std::mem::take(&mut self.scrubber.replaced);
        self.log.update(self.index, |r| r.scrubbed += n);
        (!rest.is_empty()).then(|| Frame::data(Bytes::from(rest)))
    }
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if let Some(trailers) = self.trailers.take() {
            return Poll::Ready(Some(Ok(trailers)));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    let within = self
                        .budget
                        .response_bytes_left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                            left.checked_sub(n)
                        })
                        .is_ok();
                    self.log.update(self.index, |r| r.response_bytes += n);
                    if !within {
                        self.log.update(self.index, |r| {
                            r.reason = Some("the call's response byte limit is reached".into())
                        });
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(None))));
                    }
                }
                let next = Instant::now() + self.between_bytes;
                self.timer.as_mut().reset(next);
                let frame = match frame.into_data() {
                    Ok(data) => Frame::data(Bytes::from(self.scrubber.feed(&data))),
                    Err(frame) => match frame.into_trailers() {
                        Ok(mut trailers) => {
                            let n = scrub_headers(&self.secrets, &mut trailers);
                            self.log.update(self.index, |r| r.scrubbed += n);
                            // Trailers end the data: what the scrubber held goes first.
                            let trailers = Frame::trailers(trailers);
                            match self.finish() {
                                Some(rest) => {
                                    self.trailers = Some(trailers);
                                    rest
                                }
                                None => trailers,
                            }
                        }
                        Err(other) => other,
                    },
                };
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(self.finish().map(Ok))
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(decision: EgressDecision) -> EgressRecord {
        EgressRecord::new(
            "GET".into(),
            Whither::Unparsed("u".into()),
            decision,
            None,
            None,
        )
    }

    #[test]
    fn the_log_keeps_a_bounded_number_of_records_and_counts_the_rest() {
        let log = EgressLog::default();
        for _ in 0..MAX_RECORDS + 5 {
            log.push(record(EgressDecision::Allow));
        }
        let records = log.records();
        assert_eq!(records.len(), MAX_RECORDS + 1);
        let last = records.last().unwrap();
        assert_eq!(last.decision, EgressDecision::Omitted);
        assert!(last.reason.as_deref().unwrap().starts_with("5 more"));
    }

    #[test]
    fn the_last_denied_request_of_the_budget_stops_the_call() {
        let log = EgressLog::default();
        for _ in 1..MAX_DENIED_REQUESTS {
            log.denied();
        }
        assert!(!log.spent());
        log.denied();
        assert!(log.spent());
    }

    #[test]
    fn tools_cannot_set_credentials_routing_override_or_range_headers() {
        for name in [
            "authorization",
            "cookie",
            "host",
            "proxy-authorization",
            "proxy-foo",
            "x-forwarded-for",
            "forwarded",
            "x-http-method-override",
            "x-original-url",
            "range",
        ] {
            assert!(
                forbidden_header(&http::HeaderName::from_static(name)),
                "{name}"
            );
        }
        assert!(!forbidden_header(&http::HeaderName::from_static("accept")));
    }

    /// A key can come back as a header's name (lowercased on the way), which cannot be
    /// rewritten: the header goes.
    #[test]
    fn a_header_named_with_a_secret_is_dropped() {
        let secrets = SecretSet::new();
        assert!(secrets.add(&crate::credentials::Secret::new("0123456789abcdef0123")));
        assert!(secrets.add(&crate::credentials::Secret::new("sk-Live-MixedCase-Key42")));
        assert!(secrets.add(&crate::credentials::Secret::new("Short-Key9")));
        let mut headers = http::HeaderMap::new();
        for name in [
            "x-0123456789abcdef0123",
            "x-sk-live-mixedcase-key42",
            "x-short-key9",
        ] {
            headers.insert(
                http::HeaderName::from_static(name),
                http::HeaderValue::from_static("1"),
            );
        }
        headers.insert("x-ok", http::HeaderValue::from_static("fine"));
        assert_eq!(scrub_headers(&secrets, &mut headers), 3);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-ok"], "fine");
    }

    /// An upstream's trailers are scrubbed like its headers, and the data the scrubber held
    /// back (here the start of a truncated echo) comes before them, scrubbed too.
    #[tokio::test]
    async fn trailers_are_scrubbed_and_come_after_the_held_data() {
        use http_body_util::Full;
        let secrets = SecretSet::new();
        secrets.add(&crate::credentials::Secret::new("sk-trailer-secret-0123"));
        let mut trailers = http::HeaderMap::new();
        trailers.insert(
            "x-echo",
            http::HeaderValue::from_static("key=sk-trailer-secret-0123"),
        );
        let inner = Full::new(Bytes::from("the body ends with sk-trailer-sec"))
            .with_trailers(async move { Some(Ok(trailers)) })
            .map_err(|never: std::convert::Infallible| match never {})
            .boxed_unsync();
        let log = EgressLog::default();
        let index = log.push(EgressRecord::new(
            "GET".into(),
            Whither::Unparsed("http://upstream/".into()),
            EgressDecision::Allow,
            None,
            None,
        ));
        let between_bytes = Duration::from_secs(5);
        let body = CountedBody {
            inner,
            budget: Arc::new(Budget {
                requests_left: AtomicU32::new(1),
                response_bytes_left: AtomicU64::new(1024),
                deadline: Instant::now() + between_bytes,
            }),
            log: log.clone(),
            index,
            between_bytes,
            timer: Box::pin(tokio::time::sleep(between_bytes)),
            secrets: secrets.clone(),
            scrubber: secrets.scrubber(),
            trailers: None,
            done: false,
        };
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        assert_eq!(trailers["x-echo"], "key=[REDACTED]");
        assert_eq!(collected.to_bytes(), "the body ends with [REDACTED]");
        assert_eq!(log.records()[0].scrubbed, 2);
    }

    /// A request without a normal form is recorded without its user info and its query.
    #[test]
    fn an_unparsed_request_is_recorded_without_user_info_or_query() {
        let uri: http::Uri = "http://user:pw@h.example:8/p/q?ssn=123".parse().unwrap();
        let Whither::Unparsed(text) = Whither::unparsed(&uri) else {
            panic!("recorded as normal")
        };
        assert_eq!(text, "http://h.example:8/p/q");
    }

    #[test]
    fn encoded_responses_are_recognised() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = http::HeaderMap::new();
            for (k, v) in pairs {
                map.append(*k, http::HeaderValue::from_static(v));
            }
            map
        };
        assert_eq!(encoded(&headers(&[])), None);
        assert_eq!(encoded(&headers(&[("content-encoding", "Identity")])), None);
        assert_eq!(encoded(&headers(&[("transfer-encoding", "chunked")])), None);
        for refused in [
            [("content-encoding", "gzip")],
            [("content-encoding", "identity, br")],
            [("transfer-encoding", "gzip, chunked")],
        ] {
            assert!(encoded(&headers(&refused)).is_some(), "{refused:?}");
        }
    }
}
