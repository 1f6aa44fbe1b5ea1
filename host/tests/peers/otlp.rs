//! An OpenTelemetry collector on loopback, as far as keel needs one:
//! `POST /v1/traces` with an OTLP/HTTP JSON body, answered `200 {}` (or a
//! chosen status while the test says it is down). Every request is kept,
//! and its spans can be read back flattened.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use serde_json::{Value, json};

use super::http::{HttpPeer, PeerResponse, RecordedRequest};

pub struct OtlpPeer {
    pub http: HttpPeer,
    status: Arc<AtomicU16>,
}

impl OtlpPeer {
    /// Starts on a free port of the current tokio runtime.
    pub async fn start() -> OtlpPeer {
        let status = Arc::new(AtomicU16::new(200));
        let answer = status.clone();
        let http = HttpPeer::start(move |request| match (request.method.as_str(), request.path.as_str()) {
            ("POST", "/v1/traces") => PeerResponse::json(answer.load(Ordering::SeqCst), &json!({})),
            _ => PeerResponse::json(404, &json!({"error": "only POST /v1/traces"})),
        })
        .await;
        OtlpPeer { http, status }
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        self.http.url("")
    }

    /// Answers every later export with `status` (e.g. 503: down).
    pub fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.http.requests()
    }

    /// Every span received (from exports answered 200 or not), each with
    /// the `service.name` of its resource added as `"service"`.
    pub fn spans(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for request in self.requests().iter().filter(|r| r.path == "/v1/traces") {
            let body: Value = serde_json::from_slice(&request.body)
                .unwrap_or_else(|e| panic!("an export that is not JSON ({e}): {}", request.text()));
            for resource in body["resourceSpans"].as_array().into_iter().flatten() {
                let service = resource["resource"]["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["key"] == "service.name")
                    .map_or(Value::Null, |a| a["value"]["stringValue"].clone());
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    for span in scope["spans"].as_array().into_iter().flatten() {
                        let mut span = span.clone();
                        span["service"] = service.clone();
                        out.push(span);
                    }
                }
            }
        }
        out
    }
}

/// A span attribute's value as JSON (`stringValue` as a string, `intValue`
/// as the string the encoding uses, ...), if the span has it.
pub fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    let attr = span["attributes"].as_array()?.iter().find(|a| a["key"] == key)?;
    attr["value"].as_object()?.values().next()
}
