//! `GET /metrics`: the operator's signals in Prometheus text format
//! (exposition format 0.0.4), behind the API token like every other
//! route. Every metric and how it is computed: `docs/metrics.md`.
//!
//! States (intents, runs, approvals, the kill switch) are read from the
//! database at each scrape, from the state indexes. Events (proposals,
//! decisions, connector attempts, finished runs and their recalls) are
//! counted from the audit log, which is append-only and numbered: each
//! scrape folds in only the entries written since the last one
//! ([`tally`]). Model spend is read per day, and days before yesterday are
//! added up once. A scrape's text is reused for [`CACHE_FOR`], so a busy
//! poller costs one computation per interval.

pub mod exposition;
pub mod relevance;
pub mod tally;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use self::exposition::{Exposition, Kind};
use self::tally::Tally;
use super::api::Shared;
use crate::kernel::ledger::utc_day;
use crate::kernel::outbox::IntentState;
use crate::memory::{StoreError, now_ms};
use crate::model::costs::{Totals, WORKSPACE};
use crate::runtime::Runtime;

/// How long a computed exposition is served again before it is
/// recomputed.
pub const CACHE_FOR: Duration = Duration::from_secs(1);

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Prometheus exposition of the workspace's signals.
pub async fn metrics(State(state): State<Shared>) -> Response {
    let mut guard = state.metrics.clone().lock_owned().await;
    if let Some((at, text)) = &guard.cached
        && at.elapsed() < CACHE_FOR
    {
        return ([("content-type", CONTENT_TYPE)], text.clone()).into_response();
    }
    let runtime = state.runtime.clone();
    let computed = tokio::task::spawn_blocking(move || {
        let text = guard.scrape(&runtime)?;
        guard.cached = Some((Instant::now(), text.clone()));
        Ok::<_, StoreError>(text)
    })
    .await;
    match computed {
        Ok(Ok(text)) => ([("content-type", CONTENT_TYPE)], text).into_response(),
        Ok(Err(e)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("reading the workspace failed: {e}\n")).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("computing the metrics failed: {e}\n")).into_response(),
    }
}

/// Model spend: days before yesterday added up once, recent days re-read.
#[derive(Debug, Default)]
struct Spend {
    /// Days before this one are in `closed`.
    open_from: String,
    closed: Totals,
    closed_by_model: BTreeMap<String, Totals>,
}

impl Spend {
    /// Totals for the workspace and per model, up to now.
    fn read(&mut self, store: &crate::memory::Store) -> Result<(Totals, BTreeMap<String, Totals>), StoreError> {
        let yesterday = utc_day(now_ms().saturating_sub(86_400_000));
        let (mut total, mut by_model) = (self.closed, self.closed_by_model.clone());
        for (day, scope, t) in store.model_costs_since(&self.open_from)? {
            let closes = day < yesterday;
            if scope == WORKSPACE {
                total.add(&t);
                if closes {
                    self.closed.add(&t);
                }
            } else if let Some(model) = scope.strip_prefix("model:") {
                by_model.entry(model.to_owned()).or_default().add(&t);
                if closes {
                    self.closed_by_model.entry(model.to_owned()).or_default().add(&t);
                }
            }
        }
        self.open_from = yesterday;
        Ok((total, by_model))
    }
}

/// What is kept between scrapes.
#[derive(Debug, Default)]
pub struct Scraper {
    tally: Tally,
    spend: Spend,
    cached: Option<(Instant, String)>,
}

impl Scraper {
    /// Reads the workspace and writes the exposition.
    pub fn scrape(&mut self, runtime: &Runtime) -> Result<String, StoreError> {
        let store = runtime.store();
        let head = store.audit_tail(1)?.first().map_or(0, |e| e.seq);
        if head < self.tally.cursor {
            // Another database at the same path: start over.
            (self.tally, self.spend) = (Tally::default(), Spend::default());
        }
        self.tally.catch_up(store, &runtime.kernel().registry(), head)?;
        let intents = store.intent_counts()?;
        let runs = store.run_counts()?;
        let pending = store.approvals(Some(crate::kernel::approvals::ApprovalStatus::Pending))?.len();
        let switch = store.kill_switch()?.is_some_and(|s| s.engaged);
        let (spend, by_model) = self.spend.read(store)?;
        let currency = runtime.kernel().models().currency().to_owned();

        let mut e = Exposition::default();
        let t = &self.tally;

        // States.
        e.family("keel_kill_switch_engaged", Kind::Gauge, "1 while the kill switch stops every action, else 0.");
        e.sample("keel_kill_switch_engaged", &[], f64::from(u8::from(switch)));
        e.family("keel_intents", Kind::Gauge, "Intents in the outbox, by state.");
        for (state, n) in &intents {
            e.sample("keel_intents", &[("state", state.as_str())], *n as f64);
        }
        e.family("keel_approvals_pending", Kind::Gauge, "Approvals waiting for the operator.");
        e.sample("keel_approvals_pending", &[], pending as f64);
        e.family("keel_runs", Kind::Gauge, "Workflow runs, by state.");
        for (state, n) in &runs {
            e.sample("keel_runs", &[("state", state.as_str())], *n as f64);
        }
        e.family("keel_audit_entries", Kind::Gauge, "Entries in the audit log.");
        e.sample("keel_audit_entries", &[], head as f64);
        e.family(
            "keel_metrics_audit_folded",
            Kind::Gauge,
            "The last audit entry the event counters include (below keel_audit_entries while a long log is caught up).",
        );
        e.sample("keel_metrics_audit_folded", &[], t.cursor as f64);

        // Manual intervention.
        e.family(
            "keel_proposals_total",
            Kind::Counter,
            "Proposed actions by the gate's decision: queued, parked for a human, rejected.",
        );
        for (decision, n) in &t.proposals {
            e.sample("keel_proposals_total", &[("decision", decision)], *n as f64);
        }
        let proposed: u64 = t.proposals.values().sum();
        let parked = t.proposals.get("parked").copied().unwrap_or(0);
        e.family(
            "keel_manual_intervention_ratio",
            Kind::Gauge,
            "Share of all proposals that went to a human (parked / proposed); absent before the first proposal.",
        );
        if proposed > 0 {
            e.sample("keel_manual_intervention_ratio", &[], parked as f64 / proposed as f64);
        }
        e.family("keel_approval_decisions_total", Kind::Counter, "Approvals decided: approved, rejected, expired.");
        for (decision, n) in &t.decisions {
            e.sample("keel_approval_decisions_total", &[("decision", decision)], *n as f64);
        }

        // Model spend and what it bought.
        e.family("keel_currency_info", Kind::Gauge, "The workspace currency that micro-unit amounts are in.");
        e.sample("keel_currency_info", &[("currency", &currency)], 1.0);
        e.family(
            "keel_model_spend_micros_total",
            Kind::Counter,
            "Model spend, in micro-units of the workspace currency.",
        );
        e.sample("keel_model_spend_micros_total", &[], spend.micros as f64);
        e.family("keel_model_calls_total", Kind::Counter, "Model calls, cache hits included.");
        e.sample("keel_model_calls_total", &[], spend.calls as f64);
        e.family("keel_model_cache_hits_total", Kind::Counter, "Model calls answered from the cache (free).");
        e.sample("keel_model_cache_hits_total", &[], spend.cached as f64);
        e.family("keel_model_tokens_total", Kind::Counter, "Model tokens, by direction.");
        e.sample("keel_model_tokens_total", &[("direction", "input")], spend.input_tokens as f64);
        e.sample("keel_model_tokens_total", &[("direction", "output")], spend.output_tokens as f64);
        e.family("keel_model_spend_by_model_micros_total", Kind::Counter, "Model spend per model, in micro-units.");
        for (model, t) in &by_model {
            e.sample("keel_model_spend_by_model_micros_total", &[("model", model)], t.micros as f64);
        }
        e.family("keel_model_calls_by_model_total", Kind::Counter, "Model calls per model that answered.");
        for (model, t) in &by_model {
            e.sample("keel_model_calls_by_model_total", &[("model", model)], t.calls as f64);
        }
        let useful = intents.iter().find(|(s, _)| *s == IntentState::Executed).map_or(0, |(_, n)| *n);
        e.family("keel_useful_actions", Kind::Gauge, "Executed actions (intents in state executed).");
        e.sample("keel_useful_actions", &[], useful as f64);
        e.family(
            "keel_cost_per_useful_action_micros",
            Kind::Gauge,
            "Model spend divided by executed actions, in micro-units; absent before the first executed action.",
        );
        if useful > 0 {
            e.sample("keel_cost_per_useful_action_micros", &[], spend.micros as f64 / useful as f64);
        }

        // Workflows.
        e.family(
            "keel_workflow_run_duration_seconds",
            Kind::Histogram,
            "End-to-end duration of finished runs (created to finished, approvals included), by workflow.",
        );
        for (workflow, h) in &t.durations {
            e.histogram("keel_workflow_run_duration_seconds", &[("workflow", workflow)], h);
        }
        e.family("keel_workflow_runs_finished_total", Kind::Counter, "Runs finished, by workflow and final state.");
        for ((workflow, state), n) in &t.finished {
            e.sample("keel_workflow_runs_finished_total", &[("workflow", workflow), ("state", state)], *n as f64);
        }

        // Retrieval relevance.
        e.family(
            "keel_recall_hits_total",
            Kind::Counter,
            "Notes recalled by workflow steps of finished runs, by namespace.",
        );
        for (namespace, r) in &t.recall {
            e.sample("keel_recall_hits_total", &[("namespace", namespace)], r.hits as f64);
        }
        e.family(
            "keel_recall_hits_unused_total",
            Kind::Counter,
            "Recalled notes whose id or opening text the run never used afterwards, by namespace.",
        );
        for (namespace, r) in &t.recall {
            e.sample("keel_recall_hits_unused_total", &[("namespace", namespace)], r.unused as f64);
        }
        let (hits, unused) = t.recall.values().fold((0, 0), |(h, u), r| (h + r.hits, u + r.unused));
        e.family(
            "keel_recall_unused_ratio",
            Kind::Gauge,
            "Retrieval relevance drift proxy: unused / recalled hits over all finished runs; absent before the first recall.",
        );
        if hits > 0 {
            e.sample("keel_recall_unused_ratio", &[], unused as f64 / hits as f64);
        }

        // Connectors.
        e.family(
            "keel_connector_successes_total",
            Kind::Counter,
            "Connector attempts that succeeded (actions and compensations).",
        );
        for (connector, c) in &t.connectors {
            e.sample("keel_connector_successes_total", &[("connector", connector)], c.successes as f64);
        }
        e.family(
            "keel_connector_failures_total",
            Kind::Counter,
            "Failed connector attempts, by connector, action kind and what the intent became (ready: retried later, failed, needs-reconcile).",
        );
        for (connector, c) in &t.connectors {
            for ((kind, outcome), n) in &c.failures {
                let labels =
                    [("connector", connector.as_str()), ("kind", kind.as_str()), ("outcome", outcome.as_str())];
                e.sample("keel_connector_failures_total", &labels, *n as f64);
            }
        }
        e.family("keel_connector_failing", Kind::Gauge, "1 while a connector's last attempt failed, else 0.");
        for (connector, c) in &t.connectors {
            e.sample(
                "keel_connector_failing",
                &[("connector", connector)],
                f64::from(u8::from(c.failing_since_ms.is_some())),
            );
        }
        e.family(
            "keel_connector_recovery_seconds",
            Kind::Summary,
            "Time from a connector's first failed attempt to its next success, per recovery.",
        );
        for (connector, c) in &t.connectors {
            e.summary(
                "keel_connector_recovery_seconds",
                &[("connector", connector)],
                c.recovery_ms as f64 / 1000.0,
                c.recoveries,
            );
        }
        e.family(
            "keel_connector_mean_time_to_recover_seconds",
            Kind::Gauge,
            "Mean time to recover per connector (recovery seconds / recoveries); absent before the first recovery.",
        );
        for (connector, c) in t.connectors.iter().filter(|(_, c)| c.recoveries > 0) {
            let mean = c.recovery_ms as f64 / 1000.0 / c.recoveries as f64;
            e.sample("keel_connector_mean_time_to_recover_seconds", &[("connector", connector)], mean);
        }

        // This process.
        let otlp = crate::telemetry::counters();
        e.family("keel_otlp_spans_exported_total", Kind::Counter, "Spans this process exported over OTLP.");
        e.sample("keel_otlp_spans_exported_total", &[], otlp.exported as f64);
        e.family(
            "keel_otlp_spans_dropped_total",
            Kind::Counter,
            "Spans this process dropped: the export queue was full or the collector did not take them.",
        );
        e.sample("keel_otlp_spans_dropped_total", &[], otlp.dropped as f64);
        Ok(e.finish())
    }
}
