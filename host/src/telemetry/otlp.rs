//! A `tracing` layer that exports spans over OTLP/HTTP with JSON bodies
//! (`POST {endpoint}/v1/traces`, the OTLP JSON encoding: `resourceSpans`,
//! `scopeSpans`, spans with hex `traceId`/`spanId`, start and end as Unix
//! nanoseconds in strings, attributes and events).
//!
//! A span's ids are made when it opens (a new trace for a root span, the
//! parent's trace otherwise); when it closes it is queued for the exporter
//! thread, which posts batches of up to [`MAX_BATCH`] spans at least every
//! [`EXPORT_EVERY`]. The queue holds [`QUEUE_SPANS`] spans: when it is
//! full, or when the collector fails, spans are dropped and counted, never
//! waited for. Spans carry what the log lines on stderr carry, no more:
//! the host never puts a secret in a span field or an event, and guest
//! log lines (events of `keel::guest`) are exported as span events, as
//! they are printed.
//!
//! Configured from the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (base URL; `/v1/traces` is appended) or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is),
//! `OTEL_EXPORTER_OTLP_HEADERS` (`name=value,...`, e.g. an auth header),
//! `OTEL_SERVICE_NAME` (default `keel`); and `KEEL_OTLP_FILTER`, which
//! spans to export in `RUST_LOG` syntax (default [`DEFAULT_FILTER`]).

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::{count_dropped, count_exported};

/// Spans waiting for the exporter; beyond this they are dropped.
pub const QUEUE_SPANS: usize = 4096;
/// Most spans in one request.
pub const MAX_BATCH: usize = 512;
/// The longest a closed span waits before it is sent.
pub const EXPORT_EVERY: Duration = Duration::from_secs(1);
/// One request's time limit: a collector that hangs costs the exporter
/// thread this much per batch, never the host.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a span keeps of the events inside it.
pub const MAX_EVENTS_PER_SPAN: usize = 16;
/// Drops are warned about at most this often (with the count since).
pub const WARN_EVERY: Duration = Duration::from_secs(30);
/// How long the exit flush waits for the collector.
pub const FLUSH_WAIT: Duration = Duration::from_secs(3);
/// Spans exported unless `KEEL_OTLP_FILTER` says otherwise: the host's
/// own, host calls (debug level) included, and guest log lines as events.
pub const DEFAULT_FILTER: &str = "keel_host=debug,keel=info";

/// Where and how to export.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// The full traces URL.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub service: String,
    pub filter: String,
}

impl ExportConfig {
    /// From the environment; `None` when no endpoint is set.
    pub fn from_env() -> Option<ExportConfig> {
        let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let url = match var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(url) => url,
            None => format!("{}/v1/traces", var("OTEL_EXPORTER_OTLP_ENDPOINT")?.trim_end_matches('/')),
        };
        let headers = var("OTEL_EXPORTER_OTLP_HEADERS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().replace("%20", " ")))
            .filter(|(k, _)| !k.is_empty())
            .collect();
        Some(ExportConfig {
            url,
            headers,
            service: var("OTEL_SERVICE_NAME").unwrap_or_else(|| "keel".into()),
            filter: var("KEEL_OTLP_FILTER").unwrap_or_else(|| DEFAULT_FILTER.into()),
        })
    }
}

/// The layer (with its filter) and the exporter's handle.
pub fn install<S>(config: ExportConfig) -> (Box<dyn Layer<S> + Send + Sync>, Exporter)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let filter = tracing_subscriber::EnvFilter::try_new(&config.filter).unwrap_or_else(|e| {
        eprintln!("keel: KEEL_OTLP_FILTER `{}` is not a filter ({e}); using `{DEFAULT_FILTER}`", config.filter);
        tracing_subscriber::EnvFilter::new(DEFAULT_FILTER)
    });
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_SPANS);
    let thread = std::thread::Builder::new().name("keel-otlp".into()).spawn(move || export_loop(&config, &rx));
    if let Err(e) = thread {
        eprintln!("keel: cannot start the OTLP exporter thread ({e}); spans are not exported");
    }
    (OtlpLayer { tx: tx.clone() }.with_filter(filter).boxed(), Exporter { tx })
}

/// Flushes the queue at exit.
#[derive(Debug)]
pub struct Exporter {
    tx: SyncSender<Message>,
}

impl Exporter {
    /// Asks the exporter to send what is queued and waits for it, at most
    /// [`FLUSH_WAIT`].
    pub fn flush(&self) {
        let deadline = Instant::now() + FLUSH_WAIT;
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        let mut message = Message::Flush(done_tx);
        loop {
            match self.tx.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    message = m;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return,
            }
        }
        let _ = done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

#[derive(Debug)]
enum Message {
    Span(Box<FinishedSpan>),
    Flush(SyncSender<()>),
}

#[derive(Debug, Clone)]
enum AttrValue {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
}

impl AttrValue {
    fn json(&self) -> Value {
        match self {
            // 64-bit integers are strings in the protobuf JSON mapping.
            AttrValue::Int(i) => json!({"intValue": i.to_string()}),
            AttrValue::Str(s) => json!({"stringValue": s}),
            AttrValue::Double(d) => json!({"doubleValue": d}),
            AttrValue::Bool(b) => json!({"boolValue": b}),
        }
    }
}

type Attrs = Vec<(&'static str, AttrValue)>;

fn attrs_json(attrs: &Attrs) -> Value {
    attrs.iter().map(|(k, v)| json!({"key": k, "value": v.json()})).collect()
}

/// Records fields as attributes; a field recorded again replaces the old
/// value.
struct Visitor<'a>(&'a mut Attrs);

impl Visitor<'_> {
    fn put(&mut self, field: &Field, value: AttrValue) {
        match self.0.iter_mut().find(|(k, _)| *k == field.name()) {
            Some(slot) => slot.1 = value,
            None => self.0.push((field.name(), value)),
        }
    }
}

impl Visit for Visitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, AttrValue::Double(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, AttrValue::Int(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        let value = i64::try_from(value).map_or_else(|_| AttrValue::Str(value.to_string()), AttrValue::Int);
        self.put(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, AttrValue::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, AttrValue::Str(value.to_owned()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, AttrValue::Str(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, AttrValue::Str(format!("{value:?}")));
    }
}

#[derive(Debug)]
struct SpanEvent {
    at_ns: u64,
    name: String,
    attrs: Attrs,
}

/// A span's ids and what it recorded so far, kept in its extensions.
#[derive(Debug)]
struct SpanState {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    start_ns: u64,
    attrs: Attrs,
    events: Vec<SpanEvent>,
    /// An error-level event happened inside it.
    error: bool,
}

#[derive(Debug)]
struct FinishedSpan {
    name: &'static str,
    target: &'static str,
    state: SpanState,
    end_ns: u64,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn random<const N: usize>() -> [u8; N] {
    use rand::Rng;
    let mut bytes = [0u8; N];
    // All-zero ids are invalid in OTLP.
    while bytes.iter().all(|b| *b == 0) {
        rand::rng().fill_bytes(&mut bytes);
    }
    bytes
}

struct OtlpLayer {
    tx: SyncSender<Message>,
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = span.parent().and_then(|p| p.extensions().get::<SpanState>().map(|s| (s.trace_id, s.span_id)));
        let mut state = SpanState {
            trace_id: parent.map_or_else(random, |(trace, _)| trace),
            span_id: random(),
            parent: parent.map(|(_, span)| span),
            start_ns: now_ns(),
            attrs: Vec::new(),
            events: Vec::new(),
            error: false,
        };
        attrs.record(&mut Visitor(&mut state.attrs));
        span.extensions_mut().insert(state);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(state) = span.extensions_mut().get_mut::<SpanState>()
        {
            values.record(&mut Visitor(&mut state.attrs));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else { return };
        let mut extensions = span.extensions_mut();
        let Some(state) = extensions.get_mut::<SpanState>() else { return };
        if *event.metadata().level() == Level::ERROR {
            state.error = true;
        }
        if state.events.len() >= MAX_EVENTS_PER_SPAN {
            return;
        }
        let mut attrs = Vec::new();
        event.record(&mut Visitor(&mut attrs));
        let name = match attrs.iter().position(|(k, _)| *k == "message") {
            Some(i) => match attrs.remove(i).1 {
                AttrValue::Str(s) => s,
                other => format!("{other:?}"),
            },
            None => event.metadata().name().to_owned(),
        };
        attrs.push(("level", AttrValue::Str(event.metadata().level().to_string())));
        state.events.push(SpanEvent { at_ns: now_ns(), name, attrs });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(state) = span.extensions_mut().remove::<SpanState>() else { return };
        let finished = FinishedSpan { name: span.name(), target: span.metadata().target(), state, end_ns: now_ns() };
        if self.tx.try_send(Message::Span(Box::new(finished))).is_err() {
            count_dropped(1);
        }
    }
}

fn span_json(span: &FinishedSpan) -> Value {
    let s = &span.state;
    let mut attrs = attrs_json(&s.attrs);
    if let Value::Array(list) = &mut attrs {
        list.push(json!({"key": "code.namespace", "value": {"stringValue": span.target}}));
    }
    let events: Vec<Value> = s
        .events
        .iter()
        .map(|e| json!({"timeUnixNano": e.at_ns.to_string(), "name": e.name, "attributes": attrs_json(&e.attrs)}))
        .collect();
    let mut out = json!({
        "traceId": hex::encode(s.trace_id),
        "spanId": hex::encode(s.span_id),
        "name": span.name,
        // SPAN_KIND_INTERNAL
        "kind": 1,
        "startTimeUnixNano": s.start_ns.to_string(),
        "endTimeUnixNano": span.end_ns.max(s.start_ns).to_string(),
        "attributes": attrs,
        "events": events,
        // STATUS_CODE_ERROR or STATUS_CODE_UNSET
        "status": if s.error { json!({"code": 2}) } else { json!({}) },
    });
    if let Some(parent) = s.parent {
        out["parentSpanId"] = json!(hex::encode(parent));
    }
    out
}

/// The request body for `spans`.
fn body(config: &ExportConfig, spans: &[Box<FinishedSpan>]) -> Value {
    json!({"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": config.service}},
            {"key": "service.version", "value": {"stringValue": env!("CARGO_PKG_VERSION")}},
        ]},
        "scopeSpans": [{
            "scope": {"name": "keel", "version": env!("CARGO_PKG_VERSION")},
            "spans": spans.iter().map(|s| span_json(s)).collect::<Vec<_>>(),
        }],
    }]})
}

/// Drops, warned about at most every [`WARN_EVERY`].
struct DropWarning {
    last: Option<Instant>,
    since: u64,
}

impl DropWarning {
    fn dropped(&mut self, n: usize, why: &str) {
        count_dropped(n);
        self.since += n as u64;
        if self.last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            let total = super::counters().dropped;
            tracing::warn!(dropped = self.since, total, "OTLP export failed, spans dropped: {why}");
            self.last = Some(Instant::now());
            self.since = 0;
        }
    }
}

fn export_loop(config: &ExportConfig, rx: &Receiver<Message>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return eprintln!("keel: the OTLP exporter cannot start ({e}); spans are not exported"),
    };
    // The client's connector needs the runtime's timer and reactor.
    let _entered = runtime.enter();
    let client = crate::tls::client_config().and_then(|tls| {
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())
    });
    let client = match client {
        Ok(c) => c,
        Err(e) => return eprintln!("keel: the OTLP exporter cannot start ({e}); spans are not exported"),
    };
    let mut warning = DropWarning { last: None, since: 0 };
    let mut batch: Vec<Box<FinishedSpan>> = Vec::new();
    let mut due = Instant::now() + EXPORT_EVERY;
    let mut send = |batch: &mut Vec<Box<FinishedSpan>>| {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::take(batch);
        let mut request = client.post(&config.url).header("content-type", "application/json");
        for (name, value) in &config.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request.body(body(config, &spans).to_string());
        match runtime.block_on(request.send()) {
            Ok(r) if r.status().is_success() => count_exported(spans.len()),
            Ok(r) => warning.dropped(spans.len(), &format!("{} answered {}", config.url, r.status())),
            Err(e) => warning.dropped(spans.len(), &format!("{}: {e}", config.url)),
        }
    };
    loop {
        match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Ok(Message::Span(span)) => {
                batch.push(span);
                if batch.len() >= MAX_BATCH {
                    send(&mut batch);
                    due = Instant::now() + EXPORT_EVERY;
                }
            }
            Ok(Message::Flush(done)) => {
                send(&mut batch);
                let _ = done.try_send(());
            }
            Err(RecvTimeoutError::Timeout) => {
                send(&mut batch);
                due = Instant::now() + EXPORT_EVERY;
            }
            Err(RecvTimeoutError::Disconnected) => return send(&mut batch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_encode_as_otlp_json() {
        let state = SpanState {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: Some([3; 8]),
            start_ns: 10,
            attrs: vec![("plugin", AttrValue::Str("hello".into())), ("attempt", AttrValue::Int(2))],
            events: vec![SpanEvent { at_ns: 11, name: "done".into(), attrs: vec![] }],
            error: true,
        };
        let span = Box::new(FinishedSpan { name: "keel.call", target: "keel_host::runtime", state, end_ns: 12 });
        let config =
            ExportConfig { url: String::new(), headers: vec![], service: "keel".into(), filter: String::new() };
        let body = body(&config, &[span]);
        let s = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "01".repeat(16));
        assert_eq!(
            (s["spanId"].as_str(), s["parentSpanId"].as_str()),
            (Some("0202020202020202"), Some("0303030303030303"))
        );
        assert_eq!((s["startTimeUnixNano"].as_str(), s["endTimeUnixNano"].as_str()), (Some("10"), Some("12")));
        assert_eq!(s["attributes"][1], json!({"key": "attempt", "value": {"intValue": "2"}}));
        assert_eq!(s["events"][0]["name"], "done");
        assert_eq!(s["status"]["code"], 2);
        assert_eq!(body["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"], "keel");
    }
}
