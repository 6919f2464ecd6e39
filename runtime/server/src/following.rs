//! What an MCP client hears while its call runs: log notifications at the level it set
//! (`logging/setLevel`) — the decision, a hold for approval, each outgoing request and
//! Warden's decision on it, the tool's stderr lines — and progress notifications, when it
//! asked for them, for a call that runs long.
//!
//! The call tells its events on its own path (`warden::call::events`); they are queued
//! (bounded: past it they are dropped, never waited for) and a task sends them to the client.
#![allow(deprecated)] // MCP logging is deprecated by SEP-2577, and still what clients read.

use rmcp::RoleServer;
use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam, ProgressNotificationParam};
use rmcp::service::{Peer, RequestContext};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use warden::call::events::{CallEvent, CallEvents};

/// Events queued for the client at most; past it they are dropped.
const QUEUE: usize = 256;
/// How often a client that asked for progress hears that its call still runs.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Severity order, lowest first.
fn rank(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// An event's level and what the client is sent.
fn notification(event: CallEvent) -> (LoggingLevel, serde_json::Value) {
    match event {
        CallEvent::Decided { outcome, summary } => {
            let level = match outcome.as_str() {
                "allow" => LoggingLevel::Info,
                "approval_required" => LoggingLevel::Notice,
                _ => LoggingLevel::Warning,
            };
            let data =
                serde_json::json!({ "event": "decision", "outcome": outcome, "summary": summary });
            (level, data)
        }
        CallEvent::Held { approval } => (
            LoggingLevel::Notice,
            serde_json::json!({ "event": "held", "approval": approval }),
        ),
        CallEvent::Egress {
            method,
            url,
            decision,
            rule,
            reason,
        } => {
            let level = match decision.as_str() {
                "allow" => LoggingLevel::Info,
                _ => LoggingLevel::Warning,
            };
            let data = serde_json::json!({
                "event": "egress", "method": method, "url": url, "decision": decision,
                "rule": rule, "reason": reason,
            });
            (level, data)
        }
        CallEvent::Stderr(line) => (
            LoggingLevel::Debug,
            serde_json::json!({ "event": "stderr", "line": line }),
        ),
    }
}

/// A call's events, queued for the client.
struct Queue(tokio::sync::mpsc::Sender<CallEvent>);

impl CallEvents for Queue {
    fn event(&self, event: CallEvent) {
        let _ = self.0.try_send(event);
    }
}

/// Relays one call's events to the client at `level` and up, until `finish`.
pub struct Relay {
    done: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// The listener to give the call, and the relay sending what it hears to `peer`.
    pub fn start(peer: Peer<RoleServer>, level: LoggingLevel) -> (Arc<dyn CallEvents>, Relay) {
        let (queue, mut heard) = tokio::sync::mpsc::channel(QUEUE);
        let done = CancellationToken::new();
        let finished = done.clone();
        let task = tokio::spawn(async move {
            let send = |event: CallEvent| {
                let (at, data) = notification(event);
                let peer = peer.clone();
                async move {
                    if rank(at) >= rank(level) {
                        let mut message = LoggingMessageNotificationParam::new(at, data);
                        message.logger = Some("warden".into());
                        let _ = peer.notify_logging_message(message).await;
                    }
                }
            };
            loop {
                tokio::select! {
                    biased;
                    event = heard.recv() => match event {
                        Some(event) => send(event).await,
                        None => return,
                    },
                    () = finished.cancelled() => break,
                }
            }
            while let Ok(event) = heard.try_recv() {
                send(event).await;
            }
        });
        (Arc::new(Queue(queue)), Relay { done, task })
    }

    /// Sends what the call told before it ended (at most a second more), then stops.
    pub async fn finish(mut self) {
        self.done.cancel();
        if tokio::time::timeout(Duration::from_secs(1), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

impl Drop for Relay {
    /// A relay not finished (its call never ran) stops with it.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Tells the client, every `PROGRESS_EVERY` while `running` has not ended, that the call
/// still runs, if it asked for progress; returns what `running` does.
pub async fn with_progress<T>(
    context: &RequestContext<RoleServer>,
    message: &str,
    running: impl Future<Output = T>,
) -> T {
    let Some(token) = context.meta.get_progress_token() else {
        return running.await;
    };
    let started = tokio::time::Instant::now();
    let mut every = tokio::time::interval_at(started + PROGRESS_EVERY, PROGRESS_EVERY);
    let mut running = std::pin::pin!(running);
    loop {
        tokio::select! {
            done = &mut running => return done,
            _ = every.tick() => {
                let waited = started.elapsed().as_secs_f64().floor();
                let _ = context
                    .peer
                    .notify_progress(
                        ProgressNotificationParam::new(token.clone(), waited)
                            .with_message(message.to_string()),
                    )
                    .await;
            }
        }
    }
}
