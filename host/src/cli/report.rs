//! `keel report`: what the workspace has done, in one screen: runs by
//! state, records per collection, actions by state, model calls and what
//! they cost, and what to look at next.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::kernel::approvals::ApprovalStatus;
use crate::kernel::outbox::IntentState;
use crate::model::costs::micros_text;
use crate::workspace::Workspace;

/// Days of model spend the report covers (all of it, in practice).
const COST_DAYS: u64 = 3650;

#[derive(Debug, Serialize)]
pub struct Report {
    /// Runs by state (only states that occur).
    pub runs: BTreeMap<&'static str, u64>,
    /// Records per collection.
    pub records: BTreeMap<String, u64>,
    /// Proposed actions by state (only states that occur).
    pub actions: BTreeMap<&'static str, u64>,
    pub approvals_pending: u64,
    pub model_calls: u64,
    pub model_cached: u64,
    /// Model spend in micro-units of `currency`.
    pub model_micros: u64,
    pub currency: String,
}

/// Reads the report from the store.
pub fn build(ws: &Workspace) -> anyhow::Result<Report> {
    let store = ws.store();
    let runs = store.run_counts()?.into_iter().filter(|(_, n)| *n > 0).map(|(s, n)| (s.as_str(), n)).collect();
    let records = crate::memory::records::stats(store)?.into_iter().map(|(c, s)| (c, s.records)).collect();
    let actions = store
        .intent_counts()?
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n): (IntentState, u64)| (s.as_str(), n))
        .collect();
    let approvals_pending = store.approvals(Some(ApprovalStatus::Pending))?.len() as u64;
    let currency = ws.config().policy.currency.clone();
    let costs = crate::model::report::cost_report(store, &currency, COST_DAYS)?;
    Ok(Report {
        runs,
        records,
        actions,
        approvals_pending,
        model_calls: costs.total.calls,
        model_cached: costs.total.cached,
        model_micros: costs.total.micros,
        currency,
    })
}

fn counts(map: &BTreeMap<&'static str, u64>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter().map(|(state, n)| format!("{n} {state}")).collect::<Vec<_>>().join(", ")
}

/// `keel report`.
pub fn report(ws: &Workspace, json: bool) -> anyhow::Result<()> {
    let r = build(ws)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let total_runs: u64 = r.runs.values().sum();
    println!("runs:      {total_runs} ({})", counts(&r.runs));
    let records: Vec<String> = r.records.iter().map(|(c, n)| format!("{n} {c}")).collect();
    println!("records:   {}", if records.is_empty() { "none".to_owned() } else { records.join(", ") });
    println!("actions:   {}", counts(&r.actions));
    println!("approvals: {} waiting for you", r.approvals_pending);
    println!(
        "model:     {} calls ({} from the cache), {} {}",
        r.model_calls,
        r.model_cached,
        micros_text(r.model_micros),
        r.currency
    );
    if r.approvals_pending > 0 {
        println!("next:      `keel approvals list`, then `keel approve N` or `keel reject N --reason ...`");
    }
    Ok(())
}
