//! Warden as an MCP server (`warden mcp`): agent frameworks list and call Warden tools over
//! the Model Context Protocol (the `rmcp` SDK). Every `tools/call` is a `Runtime::call` — the
//! same pipeline as `warden call`: authentication, policy, sandbox, credentials, audit.
//!
//! Who calls is fixed outside the protocol: over stdio by the agent key the server started
//! with, over HTTP (`http.rs`) by the signed assertion each request carries. Nothing a client
//! sends changes it, and nothing a client sends approves anything: an approval id in a call's
//! `_meta` only names an approval a person already gave (`warden approve`).

pub mod http;

use crate::call::{AuthenticatedAgent, CallReport, CallRequest, Caller, ErrorKind};
use crate::credentials::Secret;
use crate::manifest::Impact;
use crate::policy::{Access, Origin, OriginKind};
use crate::runtime::Runtime;
use crate::session::ActingFor;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use std::sync::Arc;

/// The `_meta` key of a call that names the approval a person gave for it.
pub const APPROVAL_META: &str = "warden/approval";

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
}

impl WardenMcp {
    pub fn new(runtime: Arc<Runtime>, principal: Option<Principal>) -> WardenMcp {
        WardenMcp { runtime, principal }
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
            .map_err(|e| McpError::invalid_request(e, None))?;
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
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("warden", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Tools run sandboxed by Warden. A call may be denied by policy, or held for a \
                 person's approval: then a person approves it out of band and you repeat the \
                 same call with the approval id in `_meta` under `warden/approval`.",
            )
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
        let approval = approval_id(&request, &context)?;
        let input = serde_json::Value::Object(request.arguments.unwrap_or_default());
        let call = CallRequest {
            on_behalf_of: principal.on_behalf_of,
            session: principal.session,
            origin: Self::origin(&context),
            approval,
            cancel: Some(context.ct.clone()),
            ..CallRequest::new(
                request.name.to_string(),
                input,
                Caller::Authenticated(principal.agent),
            )
        };
        let report = self.runtime.call(call).await;
        if let Some(e) = report
            .error
            .as_ref()
            .filter(|e| e.kind == ErrorKind::UnknownTool)
        {
            return Err(McpError::invalid_params(e.message.clone(), None));
        }
        Ok(result(&report).into())
    }
}

/// The approval id in the call's `_meta`, if any.
fn approval_id(
    request: &CallToolRequestParams,
    context: &RequestContext<RoleServer>,
) -> Result<Option<String>, McpError> {
    let value = request
        .meta
        .as_ref()
        .and_then(|m| m.0.get(APPROVAL_META))
        .or_else(|| context.meta.0.get(APPROVAL_META));
    match value {
        None => Ok(None),
        Some(serde_json::Value::String(id)) => Ok(Some(id.clone())),
        Some(_) => Err(McpError::invalid_params(
            format!("`_meta.{APPROVAL_META}` must be a string"),
            None,
        )),
    }
}

/// The MCP result of a call: its output, or a tool error saying what happened. A denial says
/// which policies denied it and why, never how to get around them.
fn result(report: &CallReport) -> CallToolResult {
    match (&report.output, &report.error) {
        (Some(output), None) => {
            let mut ok = CallToolResult::success(vec![ContentBlock::text(output.to_string())]);
            ok.structured_content = Some(output.clone());
            ok
        }
        (_, Some(error)) => {
            let text = match (error.kind, &report.approval) {
                (ErrorKind::ApprovalRequired, Some(id)) => format!(
                    "approval required: a person must approve this call out of band (approval \
                     {id}); once approved, repeat the same call with `_meta` \
                     {{\"{APPROVAL_META}\": \"{id}\"}}. {}",
                    report.decision.summary()
                ),
                _ => error.message.clone(),
            };
            let mut failed = CallToolResult::error(vec![ContentBlock::text(text)]);
            failed.structured_content = Some(serde_json::json!({
                "call_id": report.call_id,
                "error": error.kind,
                "approval": report.approval,
                "policies": report.decision.policies,
            }));
            failed
        }
        (None, None) => {
            CallToolResult::error(vec![ContentBlock::text("the call returned nothing")])
        }
    }
}
