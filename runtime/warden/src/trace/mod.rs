//! A call as an OpenTelemetry trace: the spans of one call's report, named and attributed
//! after OpenTelemetry's MCP and GenAI semantic conventions, in OTLP's JSON encoding.
//! `export` sends them to a collector. No wasmtime, no I/O here.
//!
//! One call is one trace (or a subtree of the caller's, when it sent a W3C `traceparent`):
//!
//! - `tools/call {tool}` (MCP, kind server) or `warden.call {tool}`: the whole call;
//!   - `warden.decide`: the policies' decision;
//!   - `execute_tool {tool}`: the tool's run;
//!     - `{METHOD}` (kind client): each request the tool sent, allowed or not.
//!
//! A trace carries nothing the audit does not keep (no input, no output, no credential's
//! value), except the client's JSON-RPC request id.

pub mod export;

use crate::policy::{OriginKind, Outcome};
use crate::report::{CallReport, ErrorKind};
use crate::sandbox::http::{EgressDecision, EgressRecord};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest attribute value a caller chose (a tool name, a request id) that is kept.
const MAX_CHOSEN: usize = 128;

/// Who asked for the call, as a trace sees it: the caller's span (W3C trace context) and the
/// JSON-RPC request id, when the call came over MCP.
#[derive(Debug, Clone, Default)]
pub struct TraceContext {
    pub parent: Option<Parent>,
    pub request_id: Option<String>,
}

impl TraceContext {
    /// From what a client sent: a `traceparent` that does not parse is ignored (the call
    /// starts a trace of its own), a request id is cut to a bound.
    pub fn new(traceparent: Option<&str>, request_id: Option<String>) -> TraceContext {
        TraceContext {
            parent: traceparent.and_then(Parent::parse),
            request_id: request_id.map(|id| clip(&id)),
        }
    }
}

/// The caller's span, from a W3C `traceparent` header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

impl Parent {
    /// `00-<32 hex>-<16 hex>-<2 hex>`, lower case, ids not all zero (W3C Trace Context §3.2).
    pub fn parse(text: &str) -> Option<Parent> {
        let mut parts = text.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let lower_hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        // Version 00 has exactly four fields; a later version may add some.
        if !lower_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some())
        {
            return None;
        }
        if !lower_hex(trace, 32) || !lower_hex(span, 16) || !lower_hex(flags, 2) {
            return None;
        }
        let mut parent = Parent {
            trace_id: [0; 16],
            span_id: [0; 8],
        };
        hex::decode_to_slice(trace, &mut parent.trace_id).ok()?;
        hex::decode_to_slice(span, &mut parent.span_id).ok()?;
        let zero = |b: &[u8]| b.iter().all(|x| *x == 0);
        (!zero(&parent.trace_id) && !zero(&parent.span_id)).then_some(parent)
    }
}

/// OTLP's span kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
}

/// One span, ready to encode.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub name: String,
    pub kind: Kind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, Attr)>,
    /// The span failed: its error type.
    pub error: Option<String>,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Strs(Vec<String>),
}

impl From<&str> for Attr {
    fn from(s: &str) -> Attr {
        Attr::Str(s.to_string())
    }
}

impl From<String> for Attr {
    fn from(s: String) -> Attr {
        Attr::Str(s)
    }
}

/// The spans of the call `report` describes: every call's, whatever the caller's sampling
/// flag says (which calls an operator sees is not the caller's choice).
pub fn call_spans(report: &CallReport, context: &TraceContext) -> Vec<Span> {
    let record = &report.record;
    let timings = &record.timings;
    let trace_id = context.parent.map_or_else(random, |p| p.trace_id);
    let start = timings
        .accepted
        .unwrap_or_else(|| UNIX_EPOCH + Duration::from_millis(record.time_ms.max(0) as u64));
    let end = start + Duration::from_secs_f64(record.duration_ms.max(0.0) / 1000.0);
    let error = record.error.as_ref().map(|e| e.kind);
    let error_type = error.map(crate::metrics::kind_name);
    // A name the caller typed that names no tool does not become a span's name.
    let tool = clip(&record.tool);
    let target = match error {
        Some(ErrorKind::UnknownTool) => String::new(),
        _ => format!(" {tool}"),
    };
    let mcp = record.origin.kind == OriginKind::Mcp;
    let span = |name: String, kind, parent, start, end| Span {
        trace_id,
        span_id: random(),
        parent,
        name,
        kind,
        start,
        end,
        attributes: vec![],
        error: None,
    };

    let mut root = match mcp {
        true => span(
            format!("tools/call{target}"),
            Kind::Server,
            None,
            start,
            end,
        ),
        false => span(
            format!("warden.call{target}"),
            Kind::Internal,
            None,
            start,
            end,
        ),
    };
    root.parent = context.parent.map(|p| p.span_id);
    if mcp {
        root.attributes
            .push(("mcp.method.name", "tools/call".into()));
        if let Some(id) = &context.request_id {
            root.attributes
                .push(("jsonrpc.request.id", id.clone().into()));
        }
    }
    root.attributes
        .extend(tool_attributes(&tool, &record.call_id));
    let decision = outcome_name(record.decision.outcome);
    root.attributes.extend([
        ("warden.origin", record.origin.kind.as_str().into()),
        (
            "warden.agent",
            record.agent.as_deref().unwrap_or("unauthenticated").into(),
        ),
        ("warden.decision", decision.into()),
        (
            "warden.egress.requests",
            Attr::Int(report.egress.len() as i64),
        ),
    ]);
    for (key, value) in [
        ("warden.user", &record.user),
        ("warden.session", &record.session),
        ("warden.tool.digest", &record.tool_digest),
        ("warden.approval", &record.approval),
    ] {
        if let Some(value) = value {
            root.attributes.push((key, clip(value).into()));
        }
    }
    root.error = error_type.clone();
    let root_id = root.span_id;
    let mut spans = vec![root];

    if let Some(at) = timings.decided_at {
        let mut decide = span(
            "warden.decide".into(),
            Kind::Internal,
            Some(root_id),
            at,
            at + timings.decision,
        );
        decide.attributes = vec![
            ("warden.decision", decision.into()),
            (
                "warden.policies",
                Attr::Strs(record.decision.policies.clone()),
            ),
        ];
        if record.decision.outcome == Outcome::Deny {
            decide.error = Some("denied".into());
        }
        spans.push(decide);
    }

    let mut requests_parent = root_id;
    if let Some((at, took)) = timings.ran {
        let mut run = span(
            format!("execute_tool {tool}"),
            Kind::Internal,
            Some(root_id),
            at,
            at + took,
        );
        run.attributes = tool_attributes(&tool, &record.call_id).collect();
        run.error = error_type.filter(|_| error.is_some_and(ran_into));
        requests_parent = run.span_id;
        spans.push(run);
    }

    for request in &report.egress {
        let Some((at, took)) = request.timing else {
            continue;
        };
        if request.decision == EgressDecision::Omitted {
            continue;
        }
        let (name, method) = http_method(&request.method);
        let mut sent = span(name, Kind::Client, Some(requests_parent), at, at + took);
        sent.attributes = request_attributes(request, method);
        sent.error = match (request.decision, request.status) {
            (EgressDecision::Deny, _) => Some("denied".into()),
            (_, None) => Some("failed".into()),
            (_, Some(status)) if status >= 400 => Some(status.to_string()),
            _ => None,
        };
        spans.push(sent);
    }
    spans
}

/// What names the tool on the call's span and on its run's.
fn tool_attributes(tool: &str, call_id: &str) -> impl Iterator<Item = (&'static str, Attr)> {
    [
        ("gen_ai.operation.name", "execute_tool".into()),
        ("gen_ai.tool.name", tool.into()),
        ("gen_ai.tool.call.id", call_id.into()),
    ]
    .into_iter()
}

/// An egress request's span attributes (HTTP client conventions, and Warden's decision):
/// where it went without its query, which may carry data.
fn request_attributes(
    request: &EgressRecord,
    method: Vec<(&'static str, Attr)>,
) -> Vec<(&'static str, Attr)> {
    let mut attributes = method;
    attributes.push(("warden.egress.decision", request.decision.as_str().into()));
    if request.unparsed.is_none() {
        let to = &request.destination;
        attributes.extend([
            ("url.full", clip(&to.url()).into()),
            ("url.scheme", to.scheme.clone().into()),
            ("server.address", clip(&to.host).into()),
            ("server.port", Attr::Int(i64::from(to.port))),
            ("url.path", clip(&to.path).into()),
        ]);
    }
    if let Some(status) = request.status {
        attributes.push(("http.response.status_code", Attr::Int(i64::from(status))));
    }
    if let Some(rule) = &request.rule {
        attributes.push(("warden.egress.rule", rule.clone().into()));
    }
    if !request.policies.is_empty() {
        attributes.push((
            "warden.egress.policies",
            Attr::Strs(request.policies.clone()),
        ));
    }
    if let Some(credential) = &request.credential {
        attributes.push(("warden.credential", credential.name.clone().into()));
    }
    if request.scrubbed > 0 {
        attributes.push(("warden.scrubbed", Attr::Int(request.scrubbed as i64)));
    }
    attributes
}

/// HTTP's conventions name a client span by its method and record it, or, for a method
/// outside the registered set (a tool may invent methods), name it `HTTP`, record `_OTHER`
/// and keep the method as sent apart.
fn http_method(method: &str) -> (String, Vec<(&'static str, Attr)>) {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    match KNOWN.contains(&method) {
        true => (
            method.to_string(),
            vec![("http.request.method", method.into())],
        ),
        false => (
            "HTTP".into(),
            vec![
                ("http.request.method", "_OTHER".into()),
                ("http.request.method_original", clip(method).into()),
            ],
        ),
    }
}

/// The failures that happen while the tool runs (the rest end the call before it).
fn ran_into(kind: ErrorKind) -> bool {
    !matches!(
        kind,
        ErrorKind::UnknownTool
            | ErrorKind::InvalidTool
            | ErrorKind::InvalidInput
            | ErrorKind::Denied
            | ErrorKind::ApprovalRequired
            | ErrorKind::Internal
    )
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Allow => "allow",
        Outcome::Deny => "deny",
        Outcome::ApprovalRequired => "approval_required",
    }
}

/// A value a caller chose, cut to `MAX_CHOSEN` bytes on a character boundary.
fn clip(text: &str) -> String {
    let mut end = text.len().min(MAX_CHOSEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn random<const N: usize>() -> [u8; N] {
    let mut id = [0u8; N];
    // The OS's randomness; a failure of it leaves a fixed id, which only weakens correlation.
    let _ = getrandom::fill(&mut id);
    id
}

/// `spans` as one OTLP `ExportTraceServiceRequest`, in OTLP's JSON encoding (ids in hex,
/// times in nanoseconds as strings).
pub fn otlp_json(spans: &[Span], service: &str) -> Value {
    let nanos = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_string()
    };
    let spans: Vec<Value> = spans
        .iter()
        .map(|span| {
            let mut encoded = json!({
                "traceId": hex::encode(span.trace_id),
                "spanId": hex::encode(span.span_id),
                "name": span.name,
                "kind": span.kind as i32,
                "startTimeUnixNano": nanos(span.start),
                "endTimeUnixNano": nanos(span.end.max(span.start)),
                "attributes": span.attributes.iter().map(|(k, v)| attribute(k, v)).collect::<Vec<_>>(),
                "status": match &span.error {
                    Some(error) => json!({ "code": 2, "message": error }),
                    None => json!({ "code": 0 }),
                },
            });
            if let Some(parent) = span.parent {
                encoded["parentSpanId"] = hex::encode(parent).into();
            }
                        if let (Some(error), Some(attributes)) =
                (&span.error, encoded["attributes"].as_array_mut())
            {
                attributes.push(attribute("error.type", &Attr::Str(error.clone())));
            }
            encoded
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [attribute("service.name", &Attr::Str(service.into()))] },
            "scopeSpans": [{
                "scope": { "name": "warden", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }],
        }],
    })
}

fn attribute(key: &str, value: &Attr) -> Value {
    let value = match value {
        Attr::Str(s) => json!({ "stringValue": s }),
        Attr::Int(i) => json!({ "intValue": i.to_string() }),
        Attr::Strs(list) => json!({ "arrayValue": {
            "values": list.iter().map(|s| json!({ "stringValue": s })).collect::<Vec<_>>()
        } }),
    };
    json!({ "key": key, "value": value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_strictly() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = Parent::parse(good).unwrap();
        assert_eq!(
            hex::encode(parent.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(hex::encode(parent.span_id), "00f067aa0ba902b7");
        assert!(Parent::parse(&good.replace("-01", "-00")).is_some());
        // A later version may carry more fields.
        assert!(Parent::parse(&format!("01{}-extra", &good[2..])).is_some());
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
        ] {
            assert_eq!(Parent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn chosen_values_are_cut_on_a_character_boundary() {
        let long = "é".repeat(200);
        let cut = TraceContext::new(None, Some(long)).request_id.unwrap();
        assert!(cut.len() <= MAX_CHOSEN && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn spans_encode_as_otlp_json() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let span = Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: Some([3; 8]),
            name: "GET".into(),
            kind: Kind::Client,
            start: at,
            end: at + Duration::from_micros(1500),
            attributes: vec![
                ("server.port", Attr::Int(443)),
                ("warden.policies", Attr::Strs(vec!["a".into()])),
            ],
            error: Some("denied".into()),
        };
        let body = otlp_json(&[span], "warden");
        let span = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "01".repeat(16));
        assert_eq!(span["parentSpanId"], "03".repeat(8));
        assert_eq!(span["kind"], 3);
        assert_eq!(span["startTimeUnixNano"], "1700000000123000000");
        assert_eq!(span["endTimeUnixNano"], "1700000000124500000");
        assert_eq!(span["attributes"][0]["value"]["intValue"], "443");
        assert_eq!(
            span["attributes"][1]["value"]["arrayValue"]["values"][0]["stringValue"],
            "a"
        );
        assert_eq!(span["attributes"][2]["key"], "error.type");
        assert_eq!(span["status"]["code"], 2);
    }
}
