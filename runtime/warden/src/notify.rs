//! Announces held calls where approvers are (`[approvals.notify] webhook`): when policy holds
//! a call for approval, one JSON message is posted — Slack-compatible `text`, the approval's
//! facts, and a link to it in the approval inbox — off the call's path, retried with backoff
//! until the webhook takes it, the approval expires, or the attempts run out, and its outcome
//! is kept in the audit.
//!
//! A message never carries the call's input (the approver reads it in the inbox, signed in):
//! an input may hold anything. The webhook's URL is shown (in logs and the audit) without its
//! path and query, which carry a chat service's token.

use crate::outbound::{self, Endpoint};
use crate::state::{Approval, StateStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Held calls waiting to be announced; past it, announcements are dropped (logged, counted).
const QUEUE: usize = 1024;
const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts at most, the first at once, then waits doubling from `FIRST_RETRY`.
const ATTEMPTS: u32 = 6;
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Announcements being posted at once; the queue waits behind them.
const POSTING: usize = 64;
/// How long a process that exits waits for announcements being posted.
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// The message announcing `approval`, with its inbox `link` (if the deployment has an inbox).
pub fn message(approval: &Approval, link: Option<&str>) -> serde_json::Value {
    // Slack reads `<`, `>` and `&` as markup.
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let user = approval.user.as_deref().unwrap_or("nobody");
    let mut text = format!(
        "Warden holds a call for approval: agent `{}` calls `{}` for {}. {}",
        escape(&approval.agent),
        escape(&approval.tool),
        escape(user),
        escape(&approval.reason)
    );
    if let Some(link) = link {
        text.push_str(&format!(" <{link}|Open it in the inbox>"));
    }
    text.push_str(&format!(
        " (approval {}, until {})",
        approval.id,
        crate::units::format_unix(approval.expires)
    ));
    serde_json::json!({
        "text": text,
        "approval": {
            "id": approval.id,
            "agent": approval.agent,
            "user": approval.user,
            "delegation": approval.delegation,
            "session": approval.session,
            "tool": approval.tool,
            "tool_digest": approval.tool_digest,
            "input_digest": approval.input_digest,
            "reason": approval.reason,
            "created": approval.created,
            "expires": approval.expires,
        },
        "link": link,
    })
}

/// One announcement to make.
pub struct Announcement {
    pub approval: Approval,
    pub link: Option<String>,
    pub webhook: Endpoint,
    /// Where its outcome is audited (None: the deployment keeps no audit).
    pub audit: Option<Arc<dyn StateStore>>,
}

/// The announcing thread of one process.
pub struct Notifier {
    queue: Option<tokio::sync::mpsc::Sender<Announcement>>,
    /// Set when the process exits: posts under way finish, no retry is waited for.
    closing: Arc<AtomicBool>,
    finished: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Notifier {
    pub fn start(metrics: Arc<crate::metrics::Metrics>) -> std::io::Result<Notifier> {
        let (queue, mut received) = tokio::sync::mpsc::channel::<Announcement>(QUEUE);
        let (done, finished) = std::sync::mpsc::channel();
        let closing = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, counted) = (closing.clone(), metrics.clone());
        std::thread::Builder::new()
            .name("warden-notify".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut posting = tokio::task::JoinSet::new();
                    while let Some(announcement) = received.recv().await {
                        while posting.try_join_next().is_some() {}
                        // The queue (bounded) fills while these post; past it, new ones drop.
                        if posting.len() >= POSTING {
                            posting.join_next().await;
                        }
                        posting.spawn(deliver(announcement, stop.clone(), counted.clone()));
                    }
                    while posting.join_next().await.is_some() {}
                });
                let _ = done.send(());
            })?;
        Ok(Notifier {
            queue: Some(queue),
            closing,
            finished: std::sync::Mutex::new(finished),
            metrics,
        })
    }

    /// Queues an announcement; never waits.
    pub fn announce(&self, announcement: Announcement) {
        let id = announcement.approval.id.clone();
        let queued = self
            .queue
            .as_ref()
            .is_some_and(|q| q.try_send(announcement).is_ok());
        if !queued {
            self.metrics.notification("dropped");
            tracing::warn!(approval = %id, "too many held calls waiting to be announced: this one is not");
        }
    }
}

impl Drop for Notifier {
    /// A short-lived process (`warden call`) posts what it holds before it exits.
    fn drop(&mut self) {
        self.closing.store(true, Ordering::SeqCst);
        self.queue = None;
        let finished = self
            .finished
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = finished.recv_timeout(EXIT_WAIT);
    }
}

/// Posts one announcement until it is taken, and audits what became of it.
async fn deliver(
    announcement: Announcement,
    closing: Arc<AtomicBool>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let Announcement {
        approval,
        link,
        webhook,
        audit,
    } = announcement;
    let body = message(&approval, link.as_deref()).to_string().into_bytes();
    let mut attempts = 0;
    let mut wait = FIRST_RETRY;
    let error = loop {
        attempts += 1;
        let error =
            match outbound::post(&webhook, "application/json", body.clone(), POST_TIMEOUT).await {
                Ok(status) if status.is_success() => None,
                Ok(status) => Some(format!("{webhook} answered {status}")),
                Err(reason) => Some(reason),
            };
        metrics.notification(if error.is_none() {
            "delivered"
        } else {
            "failed"
        });
        let out_of_time =
            crate::identity::jwt::now().saturating_add(wait.as_secs() as i64) >= approval.expires;
        match error {
            None => break None,
            Some(e) if attempts >= ATTEMPTS || out_of_time || closing.load(Ordering::SeqCst) => {
                break Some(e);
            }
            Some(e) => {
                tracing::warn!(approval = %approval.id, attempts, error = %e, "announcing a held call failed; it is tried again");
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
    };
    match &error {
        None => tracing::info!(approval = %approval.id, attempts, "held call announced"),
        Some(e) => {
            tracing::warn!(approval = %approval.id, attempts, error = %e, "a held call could not be announced")
        }
    }
    let Some(state) = audit else {
        return;
    };
    let record = crate::audit::NotificationRecord {
        id: format!("notify-{}", approval.id),
        time_ms: crate::identity::jwt::now_ms(),
        approval: approval.id.clone(),
        webhook: webhook.to_string(),
        attempts,
        delivered: error.is_none(),
        error,
    };
    let kept = tokio::task::spawn_blocking(move || {
        state.append_audit(&[crate::audit::entry(&crate::audit::Record::Notification(
            record,
        ))?])
    })
    .await;
    if !matches!(kept, Ok(Ok(()))) {
        tracing::error!(approval = %approval.id, "recording a held call's announcement failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_the_call_and_links_it_but_never_carries_its_input() {
        let approval = Approval {
            id: "a1".into(),
            digest: "d".into(),
            agent: "ops<bot>".into(),
            user: Some("alice".into()),
            tool: "delete-note".into(),
            tool_digest: "sha256:t".into(),
            input_digest: "i".into(),
            input: serde_json::json!({ "password": "hunter2", "name": "a" }),
            reason: "deletes need a person".into(),
            created: 0,
            expires: 60,
            status: crate::state::ApprovalStatus::Pending,
            approver: None,
            signature: None,
            used_by: None,
            session: None,
            delegation: Some("del-1".into()),
        };
        let m = message(&approval, Some("http://inbox/#approval=a1"));
        let text = m["text"].as_str().unwrap();
        assert!(
            text.contains("`ops&lt;bot&gt;`") && text.contains("`delete-note`"),
            "{text}"
        );
        assert!(text.contains("<http://inbox/#approval=a1|"), "{text}");
        assert_eq!(m["approval"]["delegation"], "del-1");
        assert_eq!(m["link"], "http://inbox/#approval=a1");
        assert!(!m.to_string().contains("hunter2") && !m.to_string().contains("\"name\""));
    }
}
