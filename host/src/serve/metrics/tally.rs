//! Counters derived from the audit log, folded in incrementally: the log is
//! append-only and numbered, so each scrape reads only the entries written
//! since the last one (at most [`MAX_ENTRIES_PER_SCRAPE`]; a long log is
//! caught up over several scrapes). What the entries name is looked up as
//! it is met: a finished run (for its duration and its recalls), the
//! connector of an executed action.

use std::collections::BTreeMap;

use super::exposition::Histogram;
use super::relevance;
use crate::kernel::registry::Registry;
use crate::memory::audit::{AuditEntry, Decision};
use crate::memory::{Store, StoreError};

/// Most audit entries one scrape folds in: bounds the work of a scrape of
/// a long log that was never scraped (the rest waits for the next one).
pub const MAX_ENTRIES_PER_SCRAPE: u64 = 20_000;

/// Upper bounds (seconds) of the run duration buckets: from a step that
/// takes a fraction of a second to a run that waited a day for approval.
pub const DURATION_BUCKETS: &[f64] =
    &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0];

/// One connector's attempts, from `actions.execute` and
/// `actions.compensate` entries.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ConnectorTally {
    pub successes: u64,
    /// (action kind, outcome) -> failed attempts. The outcome is what the
    /// intent became: `ready` (retried later), `failed`, `needs-reconcile`.
    pub failures: BTreeMap<(String, String), u64>,
    /// When the current run of failures began (no success since).
    pub failing_since_ms: Option<u64>,
    /// Failure runs that ended in a success, and their total length.
    pub recoveries: u64,
    pub recovery_ms: u64,
}

/// Recalled hits of one namespace, from the journals of finished runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecallTally {
    pub hits: u64,
    pub unused: u64,
}

/// Everything counted from the log so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    /// The last entry folded in.
    pub cursor: u64,
    /// `queued`, `parked`, `rejected` -> `actions.propose` entries.
    pub proposals: BTreeMap<&'static str, u64>,
    /// `approved`, `rejected`, `expired` -> decisions on approvals.
    pub decisions: BTreeMap<&'static str, u64>,
    pub connectors: BTreeMap<String, ConnectorTally>,
    /// (workflow, final state) -> runs finished.
    pub finished: BTreeMap<(String, String), u64>,
    /// Workflow -> created-to-finished durations of its finished runs.
    pub durations: BTreeMap<String, Histogram>,
    pub recall: BTreeMap<String, RecallTally>,
}

impl Default for Tally {
    fn default() -> Self {
        let zero = |names: &[&'static str]| names.iter().map(|n| (*n, 0)).collect();
        Tally {
            cursor: 0,
            proposals: zero(&["queued", "parked", "rejected"]),
            decisions: zero(&["approved", "rejected", "expired"]),
            connectors: BTreeMap::new(),
            finished: BTreeMap::new(),
            durations: BTreeMap::new(),
            recall: BTreeMap::new(),
        }
    }
}

impl Tally {
    /// Folds in the entries written since the last call, at most
    /// [`MAX_ENTRIES_PER_SCRAPE`]; `head` is the last entry's number.
    pub fn catch_up(&mut self, store: &Store, registry: &Registry, head: u64) -> Result<(), StoreError> {
        let backlog = head.saturating_sub(self.cursor);
        if backlog == 0 {
            return Ok(());
        }
        let entries = if backlog <= MAX_ENTRIES_PER_SCRAPE {
            store.audit_tail(backlog as usize)?
        } else {
            let mut out = Vec::new();
            for seq in self.cursor + 1..=self.cursor + MAX_ENTRIES_PER_SCRAPE {
                out.extend(store.audit_get(seq)?);
            }
            out
        };
        let start = self.cursor;
        for entry in entries.iter().filter(|e| e.seq > start) {
            self.fold(store, registry, entry)?;
            self.cursor = entry.seq;
        }
        Ok(())
    }

    fn fold(&mut self, store: &Store, registry: &Registry, e: &AuditEntry) -> Result<(), StoreError> {
        match e.operation.as_str() {
            "actions.propose" => {
                let decision = match e.decision {
                    Decision::Allowed => "queued",
                    Decision::Parked => "parked",
                    Decision::Denied => "rejected",
                };
                *self.proposals.entry(decision).or_default() += 1;
            }
            "approvals.approve" => *self.decisions.entry("approved").or_default() += 1,
            "approvals.reject" => *self.decisions.entry("rejected").or_default() += 1,
            "approvals.expire" => *self.decisions.entry("expired").or_default() += 1,
            "actions.execute" | "actions.compensate" => self.attempt(store, registry, e)?,
            "workflow.finish" => self.finished_run(store, e)?,
            _ => {}
        }
        Ok(())
    }

    /// An attempt's outcome: target `KIND KEY`, denied when it failed
    /// with a reason that names what the intent became.
    fn attempt(&mut self, store: &Store, registry: &Registry, e: &AuditEntry) -> Result<(), StoreError> {
        let (kind, key) = e.target.split_once(' ').unwrap_or((e.target.as_str(), ""));
        let connector = match registry.get(kind) {
            Some(k) => k.served.connector.clone(),
            None => store.intent(key.trim_end_matches("/undo"))?.map_or_else(|| "unknown".to_owned(), |i| i.connector),
        };
        let tally = self.connectors.entry(connector).or_default();
        if e.decision == Decision::Denied {
            let outcome = outcome_of(e.reason.as_deref().unwrap_or_default());
            *tally.failures.entry((kind.to_owned(), outcome)).or_default() += 1;
            tally.failing_since_ms.get_or_insert(e.at_ms);
        } else {
            tally.successes += 1;
            if let Some(since) = tally.failing_since_ms.take() {
                tally.recoveries += 1;
                tally.recovery_ms += e.at_ms.saturating_sub(since);
            }
        }
        Ok(())
    }

    /// A run finished: target `WORKFLOW RUN`.
    fn finished_run(&mut self, store: &Store, e: &AuditEntry) -> Result<(), StoreError> {
        let Some((_, id)) = e.target.rsplit_once(' ') else { return Ok(()) };
        let Some(run) = store.run(id)? else { return Ok(()) };
        if !run.state.is_finished() {
            return Ok(());
        }
        *self.finished.entry((run.workflow.clone(), run.state.as_str().to_owned())).or_default() += 1;
        let end = run.finished_at_ms.unwrap_or(run.updated_at_ms);
        let seconds = end.saturating_sub(run.created_at_ms) as f64 / 1000.0;
        self.durations.entry(run.workflow.clone()).or_insert_with(|| Histogram::new(DURATION_BUCKETS)).observe(seconds);
        for (namespace, used) in relevance::recalled(store, &run)? {
            let tally = self.recall.entry(namespace).or_default();
            tally.hits += 1;
            tally.unused += u64::from(!used);
        }
        Ok(())
    }
}

/// What a failed attempt's intent became, from its audit reason
/// (`attempt N: STATE (why)` for executions, `STATE: why` for
/// compensations).
fn outcome_of(reason: &str) -> String {
    let rest = match reason.strip_prefix("attempt ") {
        Some(r) => r.split_once(": ").map_or("", |(_, r)| r),
        None => reason,
    };
    let state = rest.split([' ', ':']).next().unwrap_or_default();
    match state {
        "ready" | "failed" | "needs-reconcile" => state.to_owned(),
        _ => "other".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_come_from_the_reasons_the_executor_writes() {
        assert_eq!(outcome_of("attempt 1: ready (the service answered 503)"), "ready");
        assert_eq!(outcome_of("attempt 8: failed (gave up after 8 attempts: x)"), "failed");
        assert_eq!(outcome_of("attempt 2: needs-reconcile (timeout)"), "needs-reconcile");
        assert_eq!(outcome_of("failed: refund refused"), "failed");
        assert_eq!(outcome_of("something else"), "other");
    }
}
