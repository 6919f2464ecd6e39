//! A held call that waits for a person. When policy holds a `tools/call` for approval, this
//! node serves an approval inbox, and the client declared URL-mode elicitation (MCP
//! 2025-11-25), the server asks the client to show its user the inbox's link to that approval
//! and keeps the call open: approved, the call runs (with that approval, checked as any other)
//! and its result is the answer; denied or expired, the answer says so. Clients without
//! elicitation get today's answer: a tool error naming the approval, to repeat the call with.
//!
//! Nothing here approves anything: the client's answer to the elicitation only says the link
//! was shown. The approval is a person's signed decision, made in the inbox.

use super::WardenMcp;
use rmcp::RoleServer;
use rmcp::model::{CallToolResult, ContentBlock, ElicitRequestParams, ElicitationAction};
use rmcp::service::RequestContext;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use warden::approval::MAX_PENDING_PER_AGENT;
use warden::identity::jwt;
use warden::state::{Approval, ApprovalStatus};

/// How often the approval's state is read while a call waits.
const POLL: Duration = Duration::from_millis(500);

/// How a wait for a person ended.
pub enum Waited {
    /// Approved: run the call with the approval.
    Approved,
    /// The client did not show the link (declined, cancelled, failed): answer as without
    /// elicitation.
    NotOpened,
    /// Denied, expired, used elsewhere, cancelled, or the node stopping: this is the answer.
    Ended(CallToolResult),
}

/// Whether the client can be sent a URL to show its user: an MCP session (a stateless request
/// cannot be asked anything) whose client declared URL-mode elicitation.
pub fn can_open_urls(context: &RequestContext<RoleServer>) -> bool {
    !super::is_stateless(context)
        && context
            .peer
            .peer_info()
            .and_then(|info| info.capabilities.elicitation.clone())
            .is_some_and(|elicitation| elicitation.url.is_some())
}

/// Shows the client's user the inbox's link to approval `id`, then waits until a person
/// decides, the approval expires, the client cancels the call, or the node stops. At most
/// `MAX_PENDING_PER_AGENT` calls of one agent wait at once (each reads the store twice a
/// second); the others get the answer of a client without elicitation.
pub async fn wait_for_person(
    mcp: &WardenMcp,
    context: &RequestContext<RoleServer>,
    agent: &str,
    inbox: &str,
    id: &str,
) -> Waited {
    let Some(_waiting) = Waiting::enter(&mcp.in_flight.waiting, agent) else {
        return Waited::NotOpened;
    };
    let Some(pending) = read(mcp, id).await else {
        return Waited::NotOpened;
    };
    let ask = ElicitRequestParams::UrlElicitationParams {
        meta: None,
        message: format!(
            "Warden holds this call of `{}` for a person's approval ({}). An approver opens \
             this link to approve or deny it; the call runs once approved.",
            pending.tool, pending.reason
        ),
        url: warden::approval::inbox_link(inbox, id),
        elicitation_id: id.to_string(),
    };
    let left = Duration::from_secs(pending.expires.saturating_sub(jwt::now()).max(1) as u64);
    let asked = context
        .peer
        .create_elicitation_with_timeout(ask, Some(left));
    let answer = tokio::select! {
        answer = asked => answer,
        ended = interrupted(mcp, context, id) => return ended,
    };
    match answer {
        Ok(answer) if answer.action == ElicitationAction::Accept => {}
        Ok(_) => return Waited::NotOpened,
        Err(e) => {
            tracing::info!(approval = %id, error = %e, "the client did not show the approval's link");
            return Waited::NotOpened;
        }
    }
    tracing::info!(approval = %id, "waiting for a person's decision in the inbox");
    let waiting = format!("waiting for a person's approval ({id})");
    let decision = async {
        tokio::select! {
            decided = decided(mcp, id) => decided,
            ended = interrupted(mcp, context, id) => ended,
        }
    };
    crate::following::with_progress(context, &waiting, decision).await
}

/// One agent's calls waiting for a person, counted while they wait.
struct Waiting<'a> {
    counts: &'a Mutex<HashMap<String, u64>>,
    agent: String,
}

impl<'a> Waiting<'a> {
    fn enter(counts: &'a Mutex<HashMap<String, u64>>, agent: &str) -> Option<Waiting<'a>> {
        let mut waiting = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = waiting.entry(agent.to_string()).or_default();
        if *count >= MAX_PENDING_PER_AGENT {
            return None;
        }
        *count += 1;
        Some(Waiting {
            counts,
            agent: agent.to_string(),
        })
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waiting = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = waiting.get_mut(&self.agent) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                waiting.remove(&self.agent);
            }
        }
    }
}

/// Ends a wait when the client cancels the call or the node stops (checked every `POLL`).
async fn interrupted(mcp: &WardenMcp, context: &RequestContext<RoleServer>, id: &str) -> Waited {
    let stopping = async {
        while !mcp
            .in_flight
            .stopping
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::select! {
        () = context.ct.cancelled() => ended(
            id,
            "cancelled",
            format!("the call was cancelled while approval {id} was pending"),
        ),
        () = stopping => ended(
            id,
            "stopped",
            format!(
                "this server is stopping; approval {id} stays pending: once a person approves \
                 it, repeat the same call with `_meta` {{\"{}\": \"{id}\"}}",
                super::APPROVAL_META
            ),
        ),
    }
}

/// Polls approval `id` until a person decides or it expires.
async fn decided(mcp: &WardenMcp, id: &str) -> Waited {
    loop {
        let Some(now) = read(mcp, id).await else {
            return ended(id, "failed", format!("approval {id} could not be read"));
        };
        match now.status {
            ApprovalStatus::Approved => return Waited::Approved,
            ApprovalStatus::Denied => {
                let by = now.approver.as_deref().unwrap_or("an approver");
                return ended(
                    id,
                    "denied",
                    format!("denied: approval {id} was denied by `{by}`"),
                );
            }
            ApprovalStatus::Used => {
                return ended(
                    id,
                    "used",
                    format!("approval {id} was used by another call"),
                );
            }
            ApprovalStatus::Pending if now.expires <= jwt::now() => {
                return ended(
                    id,
                    "expired",
                    format!("approval {id} expired before a person decided"),
                );
            }
            ApprovalStatus::Pending => tokio::time::sleep(POLL).await,
        }
    }
}

/// The approval, read off the async threads; None if it cannot be (logged).
async fn read(mcp: &WardenMcp, id: &str) -> Option<Approval> {
    let runtime = mcp.runtime.clone();
    let id = id.to_string();
    let read = tokio::task::spawn_blocking(move || runtime.state()?.approval(&id)).await;
    match read {
        Ok(Ok(approval)) => approval,
        Ok(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "reading a held call's approval failed");
            None
        }
        Err(_) => None,
    }
}

fn ended(id: &str, how: &str, text: String) -> Waited {
    let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
    result.structured_content = Some(serde_json::json!({ "error": how, "approval": id }));
    Waited::Ended(result)
}
