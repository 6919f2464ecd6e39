//! Sends calls' spans to an OTLP/HTTP collector (`[telemetry] otlp_endpoint`), off the
//! calls' path: a call hands its spans to a bounded queue and goes on; one thread batches
//! them and posts each batch, in OTLP's JSON encoding, to `{endpoint}/v1/traces`. A full
//! queue drops spans rather than slow a call; a collector that does not take a batch after
//! one retry loses it. Both are counted (`warden_trace_spans_total`) and logged.

use super::{Span, otlp_json};
use crate::metrics::Metrics;
use crate::outbound::{self, Endpoint};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

/// Calls' span lists, and spans, waiting to be batched; past either, spans are dropped.
const QUEUE: usize = 1024;
const QUEUED_SPANS: usize = 16 * 1024;
/// A batch is posted when it has this many spans, or `INTERVAL` after its first one came.
const BATCH: usize = 512;
const INTERVAL: Duration = Duration::from_secs(1);
/// How long one post may take.
const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// The wait before the one retry of a batch the collector could not take.
const RETRY_AFTER: Duration = Duration::from_secs(1);

pub struct Exporter {
    queue: SyncSender<Message>,
    /// Spans queued and not yet taken by the thread.
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

enum Message {
    Spans(Vec<Span>),
    /// Post what is batched now, without a retry (a process about to exit), then answer.
    Flush(mpsc::Sender<()>),
}

impl Exporter {
    /// Starts the exporting thread for the collector at `endpoint` (OTLP/HTTP's base URL).
    pub fn start(
        endpoint: &Endpoint,
        service: String,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Exporter> {
        let (queue, received) = mpsc::sync_channel(QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            queued: queued.clone(),
            endpoint: endpoint.join("v1/traces"),
            service,
            metrics: metrics.clone(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        };
        std::thread::Builder::new()
            .name("warden-traces".into())
            .spawn(move || worker.run(received))?;
        Ok(Exporter {
            queue,
            queued,
            metrics,
        })
    }

    /// Queues one call's spans; never waits.
    pub fn export(&self, spans: Vec<Span>) {
        let count = spans.len();
        let room = self.queued.fetch_add(count, Ordering::SeqCst) + count <= QUEUED_SPANS;
        if !room || self.queue.try_send(Message::Spans(spans)).is_err() {
            self.queued.fetch_sub(count, Ordering::SeqCst);
            self.metrics.trace_spans("dropped", count as u64);
        }
    }

    /// Posts what is queued, waiting at most `timeout` (a process about to exit); a queue
    /// that is full is not waited for.
    pub fn flush(&self, timeout: Duration) {
        let (done, finished) = mpsc::channel();
        if self.queue.try_send(Message::Flush(done)).is_ok() {
            let _ = finished.recv_timeout(timeout);
        }
    }
}

impl Drop for Exporter {
    /// A short-lived process (`warden call`) sends its trace before it exits.
    fn drop(&mut self) {
        self.flush(POST_TIMEOUT);
    }
}

struct Worker {
    queued: Arc<AtomicUsize>,
    endpoint: Endpoint,
    service: String,
    metrics: Arc<Metrics>,
    runtime: tokio::runtime::Runtime,
}

impl Worker {
    fn run(self, received: mpsc::Receiver<Message>) {
        let mut batch: Vec<Span> = Vec::new();
        let mut due: Option<Instant> = None;
        loop {
            let wait = due.map_or(Duration::from_secs(3600), |due| {
                due.saturating_duration_since(Instant::now())
            });
            match received.recv_timeout(wait) {
                Ok(Message::Spans(spans)) => {
                    self.queued.fetch_sub(spans.len(), Ordering::SeqCst);
                    batch.extend(spans);
                    due.get_or_insert_with(|| Instant::now() + INTERVAL);
                    if batch.len() >= BATCH {
                        self.post(&mut batch, true);
                        due = None;
                    }
                }
                Ok(Message::Flush(done)) => {
                    self.post(&mut batch, false);
                    due = None;
                    let _ = done.send(());
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.post(&mut batch, true);
                    due = None;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.post(&mut batch, false);
                    return;
                }
            }
        }
    }

    /// Posts `batch` (emptying it), retrying once (if `retry`) what the collector could not
    /// take now.
    fn post(&self, batch: &mut Vec<Span>, retry: bool) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::take(batch);
        let body = otlp_json(&spans, &self.service).to_string().into_bytes();
        let count = spans.len() as u64;
        let mut outcome = self.send(body.clone());
        if let (true, Err((true, _))) = (retry, &outcome) {
            std::thread::sleep(RETRY_AFTER);
            outcome = self.send(body);
        }
        match outcome {
            Ok(()) => self.metrics.trace_spans("exported", count),
            Err((_, reason)) => {
                self.metrics.trace_spans("failed", count);
                tracing::warn!(%reason, spans = count, "exporting spans failed");
            }
        }
    }

    /// One post: Err((whether to retry, why)).
    fn send(&self, body: Vec<u8>) -> Result<(), (bool, String)> {
        let posted = self.runtime.block_on(outbound::post(
            &self.endpoint,
            "application/json",
            body,
            POST_TIMEOUT,
        ));
        match posted {
            Ok(status) if status.is_success() => Ok(()),
            // OTLP/HTTP: these mean "try again later"; the rest, that the batch is refused.
            Ok(status) => Err((
                matches!(status.as_u16(), 429 | 502 | 503 | 504),
                format!("{} answered {status}", self.endpoint),
            )),
            Err(reason) => Err((true, reason)),
        }
    }
}
