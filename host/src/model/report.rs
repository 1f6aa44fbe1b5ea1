//! The cost report: model spend per day, plugin, model, workflow and run,
//! and cost per useful action (spend divided by executed actions). Shared
//! by `keel costs` and the HTTP API.

use std::collections::BTreeMap;

use serde::Serialize;

use super::costs::Totals;
use crate::kernel::ledger::utc_day;
use crate::kernel::outbox::IntentState;
use crate::memory::{Store, StoreError, now_ms};

/// Spend of one scope over the window, with what it bought.
#[derive(Debug, Default, Serialize)]
pub struct Line {
    pub name: String,
    #[serde(flatten)]
    pub totals: Totals,
    /// Executed (non-rejected, non-failed) actions, for plugins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub useful_actions: Option<u64>,
    /// Cost divided by useful actions, in micro-units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub micros_per_useful_action: Option<u64>,
}

/// What `keel costs` and `GET /api/v1/costs` show.
#[derive(Debug, Serialize)]
pub struct CostReport {
    pub currency: String,
    pub since_day: String,
    pub total: Totals,
    pub useful_actions: u64,
    pub micros_per_useful_action: Option<u64>,
    pub days: Vec<Line>,
    pub plugins: Vec<Line>,
    pub models: Vec<Line>,
    pub workflows: Vec<Line>,
    pub runs: Vec<Line>,
}

fn per_action(micros: u64, actions: u64) -> Option<u64> {
    (actions > 0).then(|| micros.div_ceil(actions))
}

/// Model spend over the last `days` UTC days (today included), with the
/// executed actions it bought. `currency` is the workspace's.
pub fn cost_report(store: &Store, currency: &str, days: u64) -> Result<CostReport, StoreError> {
    let now = now_ms();
    let since_day = utc_day(now.saturating_sub((days - 1) * 86_400_000));
    let mut by_day: BTreeMap<String, Totals> = BTreeMap::new();
    let mut scoped: BTreeMap<String, Totals> = BTreeMap::new();
    for (day, scope, totals) in store.model_costs_since(&since_day)? {
        if scope == crate::model::costs::WORKSPACE {
            by_day.entry(day).or_default().add(&totals);
        } else {
            scoped.entry(scope).or_default().add(&totals);
        }
    }
    let mut useful: BTreeMap<String, u64> = BTreeMap::new();
    let mut useful_by_workflow: BTreeMap<String, u64> = BTreeMap::new();
    let mut workflow_of: BTreeMap<String, Option<String>> = BTreeMap::new();
    for intent in store.intents_in(IntentState::Executed, usize::MAX)? {
        if utc_day(intent.updated_at_ms) < since_day {
            continue;
        }
        *useful.entry(intent.plugin).or_default() += 1;
        // Keys of workflow steps start with their run id.
        let run = intent.key.split('/').next().unwrap_or_default().to_owned();
        let workflow = match workflow_of.get(&run) {
            Some(w) => w.clone(),
            None => {
                let w = store.run(&run)?.map(|r| r.workflow);
                workflow_of.insert(run, w.clone());
                w
            }
        };
        if let Some(w) = workflow {
            *useful_by_workflow.entry(w).or_default() += 1;
        }
    }
    let mut total = Totals::default();
    by_day.values().for_each(|t| total.add(t));
    let useful_actions = useful.values().sum();
    let lines = |prefix: &str| -> Vec<Line> {
        scoped
            .iter()
            .filter_map(|(scope, t)| scope.strip_prefix(prefix).map(|name| (name, t)))
            .map(|(name, t)| Line { name: name.to_owned(), totals: *t, ..Line::default() })
            .collect()
    };
    let mut plugins = lines("plugin:");
    for line in &mut plugins {
        let actions = useful.get(&line.name).copied().unwrap_or(0);
        line.useful_actions = Some(actions);
        line.micros_per_useful_action = per_action(line.totals.micros, actions);
    }
    let mut workflows = lines("workflow:");
    for line in &mut workflows {
        let actions = useful_by_workflow.get(&line.name).copied().unwrap_or(0);
        line.useful_actions = Some(actions);
        line.micros_per_useful_action = per_action(line.totals.micros, actions);
    }
    Ok(CostReport {
        currency: currency.to_owned(),
        since_day,
        total,
        useful_actions,
        micros_per_useful_action: per_action(total.micros, useful_actions),
        days: by_day.into_iter().map(|(name, totals)| Line { name, totals, ..Line::default() }).collect(),
        plugins,
        models: lines("model:"),
        workflows,
        runs: lines("run:"),
    })
}
