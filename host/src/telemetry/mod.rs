//! Telemetry beyond the log lines on stderr: with the `otlp` cargo
//! feature (on by default), spans can be exported to an OpenTelemetry
//! collector over OTLP/HTTP with JSON bodies, switched on at run time by
//! `OTEL_EXPORTER_OTLP_ENDPOINT`. Without the variable nothing is
//! installed and nothing is sent. See `docs/metrics.md`.
//!
//! The export never blocks the host: spans go into a bounded queue that a
//! thread of its own drains in batches; a full queue or a collector that
//! is down drops spans, counted ([`counters`], `keel_otlp_spans_dropped_total`
//! at `GET /metrics`) and warned about at most every
//! [`WARN_EVERY`](otlp::WARN_EVERY).

#[cfg(feature = "otlp")]
pub mod otlp;

use std::sync::atomic::{AtomicU64, Ordering};

static EXPORTED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Spans this process exported and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub exported: u64,
    pub dropped: u64,
}

pub fn counters() -> Counters {
    Counters { exported: EXPORTED.load(Ordering::Relaxed), dropped: DROPPED.load(Ordering::Relaxed) }
}

#[cfg_attr(not(feature = "otlp"), expect(dead_code, reason = "only the exporter counts"))]
fn count_exported(n: usize) {
    EXPORTED.fetch_add(n as u64, Ordering::Relaxed);
}

#[cfg_attr(not(feature = "otlp"), expect(dead_code, reason = "only the exporter counts"))]
fn count_dropped(n: usize) {
    DROPPED.fetch_add(n as u64, Ordering::Relaxed);
}

/// The layer that exports spans, if the feature is built and
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
/// is set; and the handle that flushes it at exit.
pub fn otlp_layer<S>() -> (Option<Box<dyn tracing_subscriber::Layer<S> + Send + Sync>>, Telemetry)
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    #[cfg(feature = "otlp")]
    if let Some(config) = otlp::ExportConfig::from_env() {
        let (layer, exporter) = otlp::install(config);
        return (Some(layer), Telemetry { exporter: Some(exporter) });
    }
    (None, Telemetry::default())
}

/// Flushes exported spans when the process ends.
#[derive(Debug, Default)]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    exporter: Option<otlp::Exporter>,
}

impl Telemetry {
    /// Sends the spans still queued, waiting at most a few seconds.
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(exporter) = self.exporter {
            exporter.flush();
        }
    }
}
