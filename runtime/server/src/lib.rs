//! Warden as an MCP server (`warden mcp`): agent frameworks list and call Warden tools over
//! the Model Context Protocol (the `rmcp` SDK). Every `tools/call` is a `Runtime::call` — the
//! same pipeline as `warden call`: authentication, policy, sandbox, credentials, audit.
//!
//! Who calls is fixed outside the protocol: over stdio by the agent key the server started
//! with, over HTTP (`http.rs`) by the signed assertion each request carries. Nothing a client
//! sends changes it, and nothing a client sends approves anything: an approval id in a call's
//! `_meta` only names an approval a person already gave (`warden approve`).
//!
//! Every connection is a Warden session, so that what one call brings in (a tool that ingests
//! untrusted content) weighs on the later calls of the same conversation: a stdio connection
//! (unless the server was given `--session`) and each HTTP MCP session start one per agent on
//! their first call; a fresh connection is a fresh, clean session. A stateless HTTP request
//! (MCP 2026-07-28) has no connection: it names its session in `_meta` (`warden/session`, or
//! `new`), or runs outside any, which the example policies treat as unvetted.

mod elicit;
mod following;
pub mod http;
pub mod inbox;
pub mod oauth;
pub mod stdio;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;
use warden::call::{AuthenticatedAgent, CallRequest, Caller};
use warden::credentials::Secret;
use warden::manifest::Impact;
use warden::policy::{Access, Origin, OriginKind};
use warden::report::{CallReport, ErrorKind};
use warden::runtime::Runtime;
use warden::session::ActingFor;
use warden::trace::TraceContext;

/// The `_meta` key of a call that names the approval a person gave for it.
pub const APPROVAL_META: &str = "warden/approval";
/// The `_meta` key of a stateless HTTP call that names its Warden session; a result carries
/// the session its call ran in under the same key.
pub const SESSION_META: &str = "warden/session";
/// The `_meta` key of a result that names its call (its id in the audit).
pub const CALL_META: &str = "warden/call";
/// The `SESSION_META` value that asks for a new session.
pub const NEW_SESSION: &str = "new";

/// Who the server acts as, and for whom.
#[derive(Clone)]
pub struct Principal {
    pub agent: AuthenticatedAgent,
    /// A delegation token: calls are made on that user's behalf.
    pub on_behalf_of: Option<Secret>,
    pub session: Option<String>,
}

/// The MCP handler: one per stdio server, one per HTTP session (sharing the runtime).
#[derive(Clone)]
pub struct WardenMcp {
    runtime: Arc<Runtime>,
    /// Fixed for stdio; None over HTTP, where each request brings its own.
    principal: Option<Principal>,
    /// The Warden session (id, expiry) this connection started for each agent that called.
    sessions: Arc<Mutex<HashMap<String, (String, i64)>>>,
    /// The calls running, shared by every handler of one server.
    in_flight: Arc<InFlight>,
    /// Set once the client is gone: the cancellation of its requests that follows is no
    /// client's wish, and the calls in flight finish (bounded by their tools' limits).
    client_gone: Arc<std::sync::atomic::AtomicBool>,
    /// The approval inbox's origin, if this node serves one: a held call's client that can
    /// show a person a URL is sent there (`elicit::wait_for_person`).
    inbox: Option<String>,
    /// The level the client asked for log notifications at (`logging/setLevel`); none
    /// until it does.
    #[allow(deprecated)]
    log_level: Arc<Mutex<Option<rmcp::model::LoggingLevel>>>,
}

/// The calls a server has running, and whether it still takes new ones.
#[derive(Default)]
pub struct InFlight {
    /// Calls in flight hold it shared; `drain` takes it exclusively.
    calls: Arc<RwLock<()>>,
    stopping: std::sync::atomic::AtomicBool,
    /// Agent → its calls waiting for a person (`elicit`).
    waiting: Mutex<HashMap<String, u64>>,
}

impl InFlight {
    /// Takes no new call, and waits until every call in flight has finished and been
    /// recorded. Each is bounded by its tool's limits, so this ends.
    pub async fn drain(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        drop(self.calls.write().await);
    }
}

impl WardenMcp {
    pub fn new(runtime: Arc<Runtime>, principal: Option<Principal>) -> WardenMcp {
        WardenMcp {
            runtime,
            principal,
            sessions: Arc::default(),
            in_flight: Arc::default(),
            client_gone: Arc::default(),
            inbox: None,
            log_level: Arc::default(),
        }
    }

    /// The same handler, sending clients that can open a URL to the inbox at `origin`.
    pub fn inbox(mut self, origin: Option<String>) -> WardenMcp {
        self.inbox = origin;
        self
    }

    /// Marks the client as gone (its input closed): calls in flight are no longer cancelled
    /// when the transport cancels its requests.
    pub fn client_gone(&self) {
        self.client_gone
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The same handler, counting its calls in `in_flight` (one server's handlers share it).
    pub fn sharing(mut self, in_flight: Arc<InFlight>) -> WardenMcp {
        self.in_flight = in_flight;
        self
    }

    /// Takes no new call and waits for those in flight (`InFlight::drain`).
    pub async fn drain(&self) {
        self.in_flight.drain().await;
    }

    /// The Warden session of this request's call: the one the server was started with
    /// (`--session`); in a stateless HTTP request, the one the client names in `_meta`
    /// (`SESSION_META`, "new" to have one started), or none; otherwise the one this connection
    /// started for the agent, started now on its first call (and again once it expired).
    fn session(
        &self,
        principal: &Principal,
        context: &RequestContext<RoleServer>,
        named: Option<String>,
    ) -> Result<Option<String>, McpError> {
        if let Some(id) = &principal.session {
            return Ok(Some(id.clone()));
        }
        let agent = principal.agent.agent();
        // The agent's session, not a user's: each call brings (and the pipeline verifies and
        // records) its own delegation, and what one call brought in taints the next whoever
        // it acts for.
        let start = || self.runtime.start_session(agent, None).map_err(mcp_error);
        if is_stateless(context) {
            // Each stateless request reaches a fresh handler: a session it does not name
            // would be fresh and clean for every call, so a call that names none runs
            // outside any session (policies treat that as unvetted).
            return match named.as_deref() {
                Some(NEW_SESSION) => Ok(Some(start()?.id)),
                _ => Ok(named),
            };
        }
        if named.is_some() {
            return Err(McpError::invalid_params(
                format!(
                    "`_meta.{SESSION_META}` names a session only in stateless requests: this \
                     connection is a session of its own"
                ),
                None,
            ));
        }
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let now = warden::identity::jwt::now();
        if let Some((id, _)) = sessions.get(agent).filter(|(_, expires)| *expires > now) {
            return Ok(Some(id.clone()));
        }
        let session = start()?;
        sessions.insert(agent.to_string(), (session.id.clone(), session.expires));
        Ok(Some(session.id))
    }

    /// The principal of this request: the server's own, or the one the HTTP layer
    /// authenticated for this request.
    fn principal(&self, context: &RequestContext<RoleServer>) -> Result<Principal, McpError> {
        if let Some(principal) = &self.principal {
            return Ok(principal.clone());
        }
        context
            .extensions
            .get::<::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Principal>())
            .cloned()
            .ok_or_else(|| McpError::invalid_request("the request is not authenticated", None))
    }

    /// The user the principal acts for (its delegation verified now), for listing.
    fn acting_for(&self, principal: &Principal) -> Result<Option<ActingFor>, McpError> {
        let (_, acting) = self
            .runtime
            .resolve_session(
                principal.session.as_deref(),
                principal.agent.agent(),
                principal.on_behalf_of.as_ref(),
            )
            .map_err(mcp_error)?;
        Ok(acting)
    }

    fn origin(context: &RequestContext<RoleServer>) -> Origin {
        let label = context
            .peer
            .peer_info()
            .map(|info| info.client_info.name.clone())
            .unwrap_or_default();
        Origin {
            kind: OriginKind::Mcp,
            label,
        }
    }
}

impl ServerHandler for WardenMcp {
    #[allow(deprecated)] // MCP logging (SEP-2577), still what clients read
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                .build(),
        )
        .with_server_info(Implementation::new("warden", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Tools run sandboxed by Warden. A call may be denied by policy, or held for a \
                 person's approval: then a person approves it out of band and you repeat the \
                 same call, in the same session, with the approval id in `_meta` under \
                 `warden/approval`.",
        )
    }

    /// The level of the log notifications the client hears while its calls run.
    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        *self
            .log_level
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(request.level);
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let principal = self.principal(&context)?;
        let acting = self.acting_for(&principal)?;
        let callable = self.runtime.callable_tools(
            principal.agent.agent(),
            acting.as_ref(),
            Self::origin(&context),
        );
        let mut tools = Vec::new();
        for (name, access) in callable {
            // A tool that cannot be loaded could not be called either.
            let Ok(tool) = self.runtime.tool(&name).await else {
                continue;
            };
            let mut schema = match &tool.input_schema {
                serde_json::Value::Object(schema) => schema.clone(),
                _ => serde_json::Map::new(),
            };
            // MCP wants an object schema; a tool whose schema says nothing takes any object.
            schema
                .entry("type")
                .or_insert_with(|| serde_json::Value::from("object"));
            let mut description = tool.info.description.clone();
            if access == Access::ApprovalRequired {
                description.push_str(" (Calls need a person's approval.)");
            }
            let mut listed = Tool::new(name, description, schema);
            let impact = tool.manifest.impact;
            listed.annotations = Some(
                ToolAnnotations::new()
                    .read_only(impact == Impact::Read)
                    .destructive(impact == Impact::Irreversible),
            );
            tools.push(listed);
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let principal = self.principal(&context)?;
        let approval = meta_string(&request, &context, APPROVAL_META)?;
        let named = meta_string(&request, &context, SESSION_META)?;
        let session = self.session(&principal, &context, named)?;
        let trace = trace_context(&request, &context);
        let input = serde_json::Value::Object(request.arguments.unwrap_or_default());
        let origin = Self::origin(&context);
        let call = |approval: Option<String>| {
            CallRequest::new(
                request.name.to_string(),
                input.clone(),
                Caller::Authenticated(principal.agent.clone()),
            )
            .on_behalf_of(principal.on_behalf_of.clone())
            .session(session.clone())
            .origin(origin.clone())
            .approval(approval)
            .trace(trace.clone())
        };
        let mut report = self.run(call(approval), &context).await?;
        // Held for a person: a client that can open a URL waits for them in the inbox, and
        // the call runs once they approve it.
        if let (Some(inbox), Some(id)) = (&self.inbox, held(&report))
            && elicit::can_open_urls(&context)
        {
            let agent = principal.agent.agent();
            match elicit::wait_for_person(self, &context, agent, inbox, &id).await {
                elicit::Waited::Approved => report = self.run(call(Some(id)), &context).await?,
                elicit::Waited::NotOpened => {}
                elicit::Waited::Ended(ended) => return Ok(ended.into()),
            }
        }
        if let Some(e) = report
            .record
            .error
            .as_ref()
            .filter(|e| e.kind == ErrorKind::UnknownTool)
        {
            return Err(McpError::invalid_params(e.message.clone(), None));
        }
        let mut result = result(&report);
        // Which call this was (`warden audit show`), and the session it ran in.
        let mut meta = rmcp::model::MetaObject::default();
        meta.0
            .insert(CALL_META.to_string(), report.record.call_id.clone().into());
        if let Some(id) = &report.record.session {
            meta.0.insert(SESSION_META.to_string(), id.clone().into());
        }
        result.meta = Some(meta);
        Ok(result.into())
    }
}

impl WardenMcp {
    /// Runs one call in its own task, so that it finishes and is recorded even when the
    /// transport drops this request: a client's cancellation cancels it, the client going
    /// away does not.
    async fn run(
        &self,
        call: CallRequest,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallReport, McpError> {
        let cancel = CancellationToken::new();
        let call = call.cancel(cancel.clone());
        let running_tool = format!("`{}` runs", call.tool);
        if self
            .in_flight
            .stopping
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(McpError::internal_error(
                "this server is stopping: call again (another node, or this one restarted)",
                None,
            ));
        }
        let level = *self
            .log_level
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (call, relay) = match level {
            Some(level) => {
                let (listener, relay) = following::Relay::start(context.peer.clone(), level);
                (call.events(listener), Some(relay))
            }
            None => (call, None),
        };
        let in_flight = self.in_flight.calls.clone().read_owned().await;
        let runtime = self.runtime.clone();
        let running = tokio::spawn(async move {
            let report = runtime.call(call).await;
            drop(in_flight);
            report
        });
        let client_gone = self.client_gone.clone();
        let requested = context.ct.clone();
        let done = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = requested.cancelled() => {
                    if !client_gone.load(std::sync::atomic::Ordering::SeqCst) {
                        done.cancel();
                    }
                }
                () = done.cancelled() => {}
            }
        });
        let report = following::with_progress(context, &running_tool, running).await;
        // Ends the watcher (the call is over; cancelling it now changes nothing).
        cancel.cancel();
        if let Some(relay) = relay {
            relay.finish().await;
        }
        report.map_err(|e| McpError::internal_error(format!("the call's task failed: {e}"), None))
    }
}

/// The approval a call was held for, if it was.
fn held(report: &CallReport) -> Option<String> {
    match &report.record.error {
        Some(e) if e.kind == ErrorKind::ApprovalRequired => report.record.approval.clone(),
        _ => None,
    }
}

/// A JSON answer of the HTTP side (probes, OAuth, the inbox), never cached: some carry tokens
/// or what a person is asked to decide.
pub(crate) fn json_response(
    status: ::http::StatusCode,
    body: serde_json::Value,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let headers = [
        (::http::header::CONTENT_TYPE, "application/json"),
        (::http::header::CACHE_CONTROL, "no-store"),
    ];
    (status, headers, body.to_string()).into_response()
}

/// The string under `key` in the call's `_meta`, if any.
fn meta_string(
    request: &CallToolRequestParams,
    context: &RequestContext<RoleServer>,
    key: &str,
) -> Result<Option<String>, McpError> {
    let value = request
        .meta
        .as_ref()
        .and_then(|m| m.0.get(key))
        .or_else(|| context.meta.0.get(key));
    match value {
        None => Ok(None),
        Some(serde_json::Value::String(id)) => Ok(Some(id.clone())),
        Some(_) => Err(McpError::invalid_params(
            format!("`_meta.{key}` must be a string"),
            None,
        )),
    }
}

/// The client's trace, which the call's joins: W3C trace context from `_meta.traceparent`
/// (where MCP's conventions put it) or else the HTTP request's `traceparent` header; one that
/// is missing or malformed starts a trace of the call's own.
fn trace_context(
    request: &CallToolRequestParams,
    context: &RequestContext<RoleServer>,
) -> TraceContext {
    let from_meta = meta_string(request, context, "traceparent").ok().flatten();
    let from_header = || {
        context
            .extensions
            .get::<::http::request::Parts>()
            .and_then(|parts| parts.headers.get("traceparent"))
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    TraceContext::new(
        from_meta.or_else(from_header).as_deref(),
        Some(context.id.to_string()),
    )
}

/// Whether the request came over HTTP outside any MCP session (the stateless mode of MCP
/// 2026-07-28, or a server without sessions): then nothing ties it to earlier requests.
fn is_stateless(context: &RequestContext<RoleServer>) -> bool {
    context
        .extensions
        .get::<::http::request::Parts>()
        .is_some_and(|parts| !parts.headers.contains_key(MCP_SESSION_ID))
}

/// The header of an MCP session (streamable HTTP before 2026-07-28).
const MCP_SESSION_ID: &str = "mcp-session-id";

/// The MCP result of a call: its output, or a tool error saying what happened. A denial says
/// which policies denied it and why, never how to get around them.
fn result(report: &CallReport) -> CallToolResult {
    match (&report.output, &report.record.error) {
        (Some(output), None) => {
            let mut ok = CallToolResult::success(vec![ContentBlock::text(output.to_string())]);
            ok.structured_content = Some(output.clone());
            ok
        }
        (_, Some(error)) => {
            let text = match (error.kind, &report.record.approval) {
                (ErrorKind::ApprovalRequired, Some(id)) => format!(
                    "approval required: a person must approve this call out of band (approval \
                     {id}); once approved, repeat the same call in this session with `_meta` \
                     {{\"{APPROVAL_META}\": \"{id}\"}}. {}",
                    report.record.decision.summary()
                ),
                _ => error.message.clone(),
            };
            let mut failed = CallToolResult::error(vec![ContentBlock::text(text)]);
            failed.structured_content = Some(serde_json::json!({
                "call_id": report.record.call_id,
                "error": error.kind,
                "approval": report.record.approval,
                "policies": report.record.decision.policies,
            }));
            failed
        }
        (None, None) => {
            CallToolResult::error(vec![ContentBlock::text("the call returned nothing")])
        }
    }
}

/// A refusal is the client's to fix; anything else is Warden's, logged here and not shown.
fn mcp_error(e: warden::error::Error) -> McpError {
    match e {
        warden::error::Error::Refused(reason) => McpError::invalid_request(reason, None),
        e => {
            tracing::error!(error = %e, "an MCP request failed inside Warden");
            McpError::internal_error("Warden failed; the request may be tried again", None)
        }
    }
}
