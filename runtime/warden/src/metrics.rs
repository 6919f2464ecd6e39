//! What a runtime has done, counted for an operator's monitoring, in Prometheus' text format
//! (`warden serve` serves it at `/metrics`): calls by tool, agent and result, egress requests
//! by decision, decision and state-store latency, state-store errors, revocations announced by
//! other nodes. No wasmtime here.
//!
//! Every label value comes from a bounded set, never from what a caller typed: a tool found in
//! the deployment's tool directories (an unknown name counts as `other`), an agent the
//! deployment defines (or `unauthenticated`), a result kind, an egress decision.

use crate::report::{CallReport, ErrorKind};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
pub struct Metrics {
    counted: Mutex<Counted>,
}

#[derive(Default)]
struct Counted {
    /// (tool, agent, result) → calls.
    calls: BTreeMap<(String, String, String), u64>,
    /// Decision → egress requests.
    egress: BTreeMap<&'static str, u64>,
    decision: Histogram,
    store: Histogram,
    store_errors: u64,
    announced: u64,
    /// (applied, refused) reloads.
    reloads: (u64, u64),
    /// Result (exported, failed, dropped) → spans.
    trace_spans: BTreeMap<&'static str, u64>,
    /// (acknowledged, failed) attempts to deliver revocation events.
    event_deliveries: (u64, u64),
    /// Result (delivered, failed, dropped) → attempts to announce held calls.
    notifications: BTreeMap<&'static str, u64>,
}

/// A counter by result, from a bounded set of results; nothing until one is counted.
fn by_result(out: &mut String, name: &str, help: &str, counts: &BTreeMap<&'static str, u64>) {
    if counts.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (result, count) in counts {
        let _ = writeln!(out, "{name}{{result=\"{result}\"}} {count}");
    }
}

/// Upper bounds, in seconds, of the latency buckets: 10 µs to 1 s.
const BUCKETS: [f64; 14] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 1.0,
];

#[derive(Default)]
struct Histogram {
    /// Observations at or under each bound (not yet cumulative).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(self.buckets) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

/// A gauge read when the metrics are rendered: (name, help, value).
pub type Gauge = (&'static str, &'static str, f64);

impl Metrics {
    fn counted(&self) -> std::sync::MutexGuard<'_, Counted> {
        self.counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a call that ended with `report`. `tool` is the name it asked for.
    pub(crate) fn call(&self, tool: &str, report: &CallReport) {
        let record = &report.record;
        let error = record.error.as_ref().map(|e| e.kind);
        let tool = match error {
            Some(ErrorKind::UnknownTool) => "other",
            _ => tool,
        };
        let agent = record.agent.as_deref().unwrap_or("unauthenticated");
        let result = error.map_or_else(|| "ok".to_string(), kind_name);
        let mut counted = self.counted();
        *counted
            .calls
            .entry((tool.to_string(), agent.to_string(), result))
            .or_default() += 1;
        for request in &report.egress {
            let decision = match request.decision {
                crate::sandbox::http::EgressDecision::Allow => "allow",
                crate::sandbox::http::EgressDecision::Deny => "deny",
                crate::sandbox::http::EgressDecision::Omitted => continue,
            };
            *counted.egress.entry(decision).or_default() += 1;
        }
        if !record.timings.decision.is_zero() {
            counted.decision.observe(record.timings.decision);
        }
        if !record.timings.store.is_zero() {
            counted.store.observe(record.timings.store);
        }
    }

    /// Counts a write to the state store that failed (a call's count or records).
    pub(crate) fn store_error(&self) {
        self.counted().store_errors += 1;
    }

    /// Counts a reload of the policies and tools, applied or refused.
    pub(crate) fn reloaded(&self, applied: bool) {
        let mut counted = self.counted();
        match applied {
            true => counted.reloads.0 += 1,
            false => counted.reloads.1 += 1,
        }
    }

    /// Counts `spans` of calls' traces that were exported, failed to be, or were dropped.
    pub(crate) fn trace_spans(&self, result: &'static str, spans: u64) {
        *self.counted().trace_spans.entry(result).or_default() += spans;
    }

    /// Counts an attempt to announce a held call (`delivered`, `failed`), or one dropped.
    pub(crate) fn notification(&self, result: &'static str) {
        *self.counted().notifications.entry(result).or_default() += 1;
    }

    /// Counts an attempt to deliver a revocation event to a receiver.
    pub(crate) fn event_delivery(&self, acknowledged: bool) {
        let mut counted = self.counted();
        match acknowledged {
            true => counted.event_deliveries.0 += 1,
            false => counted.event_deliveries.1 += 1,
        }
    }

    /// Counts a revocation another process announced.
    pub(crate) fn announced(&self) {
        self.counted().announced += 1;
    }

    /// Everything, in Prometheus' text exposition format, with `gauges` read now.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let counted = self.counted();
        let mut out = String::new();
        out.push_str(
            "# HELP warden_calls_total Calls ended, by tool, agent and result (ok, or how it failed).\n\
             # TYPE warden_calls_total counter\n",
        );
        for ((tool, agent, result), calls) in &counted.calls {
            let _ = writeln!(
                out,
                "warden_calls_total{{tool=\"{}\",agent=\"{}\",result=\"{result}\"}} {calls}",
                escape(tool),
                escape(agent)
            );
        }
        out.push_str(
            "# HELP warden_egress_requests_total Requests tools sent, by Warden's decision.\n\
             # TYPE warden_egress_requests_total counter\n",
        );
        for (decision, requests) in &counted.egress {
            let _ = writeln!(
                out,
                "warden_egress_requests_total{{decision=\"{decision}\"}} {requests}"
            );
        }
        counted.decision.render(
            &mut out,
            "warden_decision_duration_seconds",
            "Time evaluating the policies on a call.",
        );
        counted.store.render(
            &mut out,
            "warden_state_store_duration_seconds",
            "Time a call waited for the state store (its count, revocation check and records).",
        );
        let _ = writeln!(
            out,
            "# HELP warden_state_store_errors_total Writes of a call's count or records that failed.\n\
             # TYPE warden_state_store_errors_total counter\n\
             warden_state_store_errors_total {}\n\
             # HELP warden_revocations_announced_total Revocations other processes announced.\n\
             # TYPE warden_revocations_announced_total counter\n\
             warden_revocations_announced_total {}",
            counted.store_errors, counted.announced
        );
        let _ = writeln!(
            out,
            "# HELP warden_reloads_total Reloads of the policies and tools (SIGHUP), by result.\n\
             # TYPE warden_reloads_total counter\n\
             warden_reloads_total{{result=\"applied\"}} {}\n\
             warden_reloads_total{{result=\"refused\"}} {}",
            counted.reloads.0, counted.reloads.1
        );
        let _ = writeln!(
            out,
            "# HELP warden_revocation_event_deliveries_total Attempts to deliver revocation events to receivers, by result.\n\
             # TYPE warden_revocation_event_deliveries_total counter\n\
             warden_revocation_event_deliveries_total{{result=\"acknowledged\"}} {}\n\
             warden_revocation_event_deliveries_total{{result=\"failed\"}} {}",
            counted.event_deliveries.0, counted.event_deliveries.1
        );
        by_result(
            &mut out,
            "warden_trace_spans_total",
            "Spans of calls' traces, by what became of them (exported, failed, dropped).",
            &counted.trace_spans,
        );
        by_result(
            &mut out,
            "warden_approval_notifications_total",
            "Attempts to announce held calls to the approvals webhook, by result (delivered, failed, dropped).",
            &counted.notifications,
        );
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

/// The error kind as the report and the audit write it (`snake_case`).
pub(crate) fn kind_name(kind: ErrorKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "error".into())
}

/// A label value, escaped as the format asks.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
