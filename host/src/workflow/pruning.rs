//! Pausing background workflows whose model spend buys too little.
//!
//! After each run of a workflow that is not started by hand, its model cost
//! over the window (the `workflow:NAME` cost rows) is divided by the actions
//! its runs executed in that window. Above `[model.pruning]
//! max_cost_per_action` (after `min_runs` runs), the workflow is paused: its
//! triggers start no runs and its unfinished runs are paused, until the
//! operator resumes it (`keel workflows resume NAME`). Both are audited.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::WorkflowError;
use super::engine::update_run;
use super::runs::RunState;
use crate::kernel::ledger::utc_day;
use crate::kernel::outbox::IntentState;
use crate::memory::audit::AuditEntry;
use crate::memory::committer::{Batch, CustomMutation, Mutation};
use crate::memory::{Store, StoreError, now_ms};
use crate::model::costs::micros_text;
use crate::runtime::Runtime;

/// Workflow name -> why it is paused (JSON).
const PAUSED: TableDefinition<&str, &str> = TableDefinition::new("workflow_paused");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(PAUSED)?;
    Ok(())
}

/// A paused workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PausedWorkflow {
    pub reason: String,
    pub by: String,
    pub at_ms: u64,
}

/// A workflow's spend and what it bought over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Yield {
    pub micros: u64,
    pub useful_actions: u64,
    pub runs: u32,
}

impl Store {
    /// Workflows paused by pruning, with why.
    pub fn paused_workflows(&self) -> Result<BTreeMap<String, PausedWorkflow>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(PAUSED)?;
        let mut out = BTreeMap::new();
        for item in table.iter()? {
            let (k, v) = item?;
            let paused = serde_json::from_str(v.value()).map_err(|e| StoreError::Corrupt {
                what: format!("pause record of workflow `{}`", k.value()),
                detail: e.to_string(),
            })?;
            out.insert(k.value().to_owned(), paused);
        }
        Ok(out)
    }

    /// What workflow `name` spent on models and the actions its runs
    /// executed, over the last `days` UTC days.
    pub fn workflow_yield(&self, name: &str, days: u64) -> Result<Yield, StoreError> {
        let since_ms = now_ms().saturating_sub((days - 1) * 86_400_000);
        let since = utc_day(since_ms);
        let scope = format!("workflow:{name}");
        let micros =
            self.model_costs_since(&since)?.into_iter().filter(|(_, s, _)| *s == scope).map(|(_, _, t)| t.micros).sum();
        let since_ms = since_ms - since_ms % 86_400_000;
        let mut useful_actions = 0;
        let mut runs = 0;
        for state in [RunState::Succeeded, RunState::Failed, RunState::Compensated, RunState::Cancelled] {
            for run in self.runs_in(state, usize::MAX)? {
                if run.workflow != name || run.finished_at_ms.unwrap_or(0) < since_ms {
                    continue;
                }
                runs += 1;
                let intents = self.intents_with_prefix(&format!("{}/", run.id))?;
                useful_actions += intents.iter().filter(|i| i.state == IntentState::Executed).count() as u64;
            }
        }
        Ok(Yield { micros, useful_actions, runs })
    }
}

fn set_paused(name: &str, paused: Option<PausedWorkflow>) -> Mutation {
    let name = name.to_owned();
    let apply = std::sync::Arc::new(move |txn: &WriteTransaction| {
        let mut table = txn.open_table(PAUSED)?;
        match &paused {
            Some(p) => drop(table.insert(name.as_str(), serde_json::to_string(p).expect("serializes").as_str())?),
            None => drop(table.remove(name.as_str())?),
        }
        Ok(())
    });
    Mutation::Custom(CustomMutation { label: "workflow.paused", apply })
}

impl Runtime {
    /// Judges background workflow `name` after a run of it finished, and
    /// pauses it if its spend buys too little.
    pub(super) async fn prune_if_costly(&self, name: &str) -> Result<(), WorkflowError> {
        let models = self.kernel().models().clone();
        let Some(policy) = models.config().pruning else { return Ok(()) };
        if self.store().paused_workflows()?.contains_key(name) {
            return Ok(());
        }
        let y = self.store().workflow_yield(name, policy.window_days)?;
        let limit = crate::model::config::to_micros(policy.max_cost_per_action).unwrap_or(u64::MAX);
        if y.runs < policy.min_runs || y.micros == 0 {
            return Ok(());
        }
        let per_action = y.micros.checked_div(y.useful_actions);
        if per_action.is_some_and(|p| p <= limit) {
            return Ok(());
        }
        let currency = models.currency();
        let spent = match per_action {
            Some(p) => format!("{} {currency} per useful action", micros_text(p)),
            None => format!("{} {currency} and no executed action", micros_text(y.micros)),
        };
        let reason = format!(
            "over the last {} days its {} runs spent {spent}, above the limit of {} {currency} (model.pruning)",
            policy.window_days,
            y.runs,
            micros_text(limit)
        );
        self.pause_workflow(name, "host", &reason).await
    }

    /// Pauses workflow `name`: no trigger starts it and its unfinished runs
    /// are paused. Audited.
    pub async fn pause_workflow(&self, name: &str, by: &str, reason: &str) -> Result<(), WorkflowError> {
        tracing::warn!(workflow = name, %reason, "workflow paused");
        let paused = PausedWorkflow { reason: reason.to_owned(), by: by.to_owned(), at_ms: now_ms() };
        let mut mutations = vec![set_paused(name, Some(paused))];
        for state in [RunState::Running, RunState::WaitingApproval] {
            for run in self.store().runs_in(state, usize::MAX)?.into_iter().filter(|r| r.workflow == name) {
                mutations.push(update_run("workflow.pause", &run.id, |run| {
                    if matches!(run.state, RunState::Running | RunState::WaitingApproval) {
                        run.paused_from = Some(run.state);
                        run.state = RunState::Paused;
                    }
                }));
            }
        }
        let entry = AuditEntry::allowed(by, "workflow.prune", name).with_reason(reason);
        self.store().commit(Batch { mutations, audit: vec![entry] }).await?;
        Ok(())
    }

    /// Lifts a workflow's pause and resumes its paused runs. Audited.
    pub async fn resume_workflow(&self, name: &str) -> Result<Vec<super::runs::Run>, WorkflowError> {
        if !self.store().paused_workflows()?.contains_key(name) {
            return Err(WorkflowError::Definition(format!("workflow `{name}` is not paused: nothing to resume")));
        }
        let entry = AuditEntry::allowed("operator", "workflow.unpause", name);
        self.store().commit(Batch { mutations: vec![set_paused(name, None)], audit: vec![entry] }).await?;
        let mut resumed = Vec::new();
        for run in self.store().runs_in(RunState::Paused, usize::MAX)?.into_iter().filter(|r| r.workflow == name) {
            resumed.push(self.resume_run(&run.id).await?);
        }
        Ok(resumed)
    }
}
