//! Workflow runs in the workspace database: one record per run with the
//! state of each step, kept in step with an index by state so unfinished
//! runs are found at start without a scan.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::memory::committer::{CustomMutation, Mutation};
use crate::memory::{Store, StoreError, now_ms};

/// Run id -> run (JSON).
const RUNS: TableDefinition<&str, &str> = TableDefinition::new("workflow_runs");
/// (state, run id): runs by state.
const BY_STATE: TableDefinition<(&str, &str), ()> = TableDefinition::new("workflow_runs_by_state");
/// sha256 of a definition's text -> the text: runs name theirs by hash, so
/// a step's update does not rewrite it and many runs share one copy.
const DEFINITIONS: TableDefinition<&str, &str> = TableDefinition::new("workflow_definitions");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(RUNS)?;
    txn.open_table(BY_STATE)?;
    txn.open_table(DEFINITIONS)?;
    Ok(())
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Steps are being run (or will be, after a restart).
    Running,
    /// A step's proposals wait for the operator; the run goes on once all
    /// are decided.
    WaitingApproval,
    /// Stopped by the operator; `keel runs resume` continues it.
    Paused,
    Succeeded,
    /// A step failed for good; executed actions were compensated where
    /// their kinds declare how.
    Failed,
    /// Failed or cancelled, and undoing its executed actions.
    Compensating,
    /// Failed, and every executed action that declares a compensation was
    /// undone.
    Compensated,
    /// Cancelled by the operator.
    Cancelled,
}

impl RunState {
    pub const ALL: [RunState; 8] = [
        RunState::Running,
        RunState::WaitingApproval,
        RunState::Paused,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Compensating,
        RunState::Compensated,
        RunState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::WaitingApproval => "waiting-approval",
            RunState::Paused => "paused",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Compensating => "compensating",
            RunState::Compensated => "compensated",
            RunState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<RunState> {
        RunState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// True once nothing more will happen to the run.
    pub fn is_finished(self) -> bool {
        matches!(self, RunState::Succeeded | RunState::Failed | RunState::Compensated | RunState::Cancelled)
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    Running,
    Succeeded,
    Failed,
}

/// One step of a run as it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRun {
    pub status: StepStatus,
    /// The agent and the version that ran it.
    pub agent: String,
    pub version: String,
    /// Attempts made, recorded as they end (for a fan-out step, the most
    /// any of its items needed).
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// For a fan-out step: each item's output, by index, as they finish.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub items: BTreeMap<u32, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub started_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
}

/// One run of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    pub id: String,
    pub workflow: String,
    /// The definition file's text when the run started, for runs recorded
    /// before definitions were stored apart (empty since): editing the
    /// file does not change runs already going.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub definition: String,
    /// The sha256 of that text in the definitions table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition_sha256: Option<String>,
    /// Where that file was, for error messages.
    pub source: String,
    /// What started it: `manual`, `schedule`, `webhook`, `inbox`, `record`.
    pub trigger: String,
    pub input: Value,
    pub state: RunState,
    /// The step to run next, while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Steps in the order their first attempt ended.
    #[serde(default)]
    pub order: Vec<String>,
    #[serde(default)]
    pub steps: BTreeMap<String, StepRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The state to return to when a paused run is resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_from: Option<RunState>,
    /// While compensating: the state it ends in (failed or cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finishing_as: Option<RunState>,
    /// While waiting for approval: the intents it waits on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_on: Vec<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
}

impl Run {
    /// What the run's output is: the last finished step's output.
    pub fn output(&self) -> Option<&Value> {
        self.order.iter().rev().filter_map(|id| self.steps.get(id)).find_map(|s| s.output.as_ref())
    }
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A run id: time-ordered, unique within the process, unlikely to repeat
/// across processes.
pub fn new_run_id() -> String {
    let n = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("r{:011x}{:04x}{n:x}", now_ms(), std::process::id() & 0xffff)
}

fn corrupt(id: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { what: format!("workflow run `{id}`"), detail: e.to_string() }
}

/// Reads run `id` inside a write transaction.
pub(crate) fn get_in(txn: &WriteTransaction, id: &str) -> Result<Option<Run>, StoreError> {
    let table = txn.open_table(RUNS)?;
    let Some(json) = table.get(id)? else { return Ok(None) };
    serde_json::from_str(json.value()).map(Some).map_err(|e| corrupt(id, e))
}

/// Writes `run`, keeping the state index in step.
pub(crate) fn put_in(txn: &WriteTransaction, run: &Run) -> Result<(), StoreError> {
    let old = get_in(txn, &run.id)?.map(|r| r.state);
    replace_in(txn, run, old)
}

/// Reads run `id`, lets `change` change it and writes it back, keeping
/// the state index in step; false if there is no such run.
pub(crate) fn update_in(txn: &WriteTransaction, id: &str, change: impl FnOnce(&mut Run)) -> Result<bool, StoreError> {
    let mut table = txn.open_table(RUNS)?;
    let mut run: Run = match table.get(id)? {
        Some(json) => serde_json::from_str(json.value()).map_err(|e| corrupt(id, e))?,
        None => return Ok(false),
    };
    let old = run.state;
    change(&mut run);
    if old != run.state {
        let mut by_state = txn.open_table(BY_STATE)?;
        by_state.remove((old.as_str(), run.id.as_str()))?;
        by_state.insert((run.state.as_str(), run.id.as_str()), ())?;
    }
    let json = serde_json::to_string(&run).expect("runs always serialize");
    table.insert(run.id.as_str(), json.as_str())?;
    Ok(true)
}

/// Writes `run` over the stored run whose state was `old` (`None`: new),
/// keeping the state index in step; for callers that just read it.
pub(crate) fn replace_in(txn: &WriteTransaction, run: &Run, old: Option<RunState>) -> Result<(), StoreError> {
    if old != Some(run.state) {
        let mut by_state = txn.open_table(BY_STATE)?;
        if let Some(old) = old {
            by_state.remove((old.as_str(), run.id.as_str()))?;
        }
        by_state.insert((run.state.as_str(), run.id.as_str()), ())?;
    }
    let json = serde_json::to_string(run).expect("runs always serialize");
    txn.open_table(RUNS)?.insert(run.id.as_str(), json.as_str())?;
    Ok(())
}

/// A mutation that stores definition `text` under its `sha256` (once).
pub fn put_definition(sha256: String, text: String) -> Mutation {
    let apply = Arc::new(move |txn: &WriteTransaction| {
        let mut table = txn.open_table(DEFINITIONS)?;
        if table.get(sha256.as_str())?.is_none() {
            table.insert(sha256.as_str(), text.as_str())?;
        }
        Ok(())
    });
    Mutation::Custom(CustomMutation { label: "workflow.definition", apply })
}

/// A mutation that writes `run` as it is.
pub fn put(run: Run) -> Mutation {
    let apply = Arc::new(move |txn: &WriteTransaction| put_in(txn, &run));
    Mutation::Custom(CustomMutation { label: "workflow.run", apply })
}

impl Store {
    /// The definition text run `run` started with.
    pub fn run_definition(&self, run: &Run) -> Result<String, StoreError> {
        let Some(sha256) = &run.definition_sha256 else { return Ok(run.definition.clone()) };
        let txn = self.db().begin_read()?;
        let table = txn.open_table(DEFINITIONS)?;
        match table.get(sha256.as_str())? {
            Some(text) => Ok(text.value().to_owned()),
            None => Err(StoreError::Corrupt {
                what: format!("workflow run {}", run.id),
                detail: format!("its definition {sha256} is missing"),
            }),
        }
    }

    pub fn run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(RUNS)?;
        let Some(json) = table.get(id)? else { return Ok(None) };
        serde_json::from_str(json.value()).map(Some).map_err(|e| corrupt(id, e))
    }

    /// Up to `limit` runs in `state`, oldest first.
    pub fn runs_in(&self, state: RunState, limit: usize) -> Result<Vec<Run>, StoreError> {
        let txn = self.db().begin_read()?;
        let by_state = txn.open_table(BY_STATE)?;
        let runs = txn.open_table(RUNS)?;
        let mut out = Vec::new();
        for item in by_state.range((state.as_str(), "")..)?.take(limit) {
            let (k, _) = item?;
            let (s, id) = k.value();
            if s != state.as_str() {
                break;
            }
            if let Some(json) = runs.get(id)? {
                out.push(serde_json::from_str(json.value()).map_err(|e| corrupt(id, e))?);
            }
        }
        Ok(out)
    }

    /// How many runs are in each state (the state index's keys, no run is
    /// read).
    pub fn run_counts(&self) -> Result<Vec<(RunState, u64)>, StoreError> {
        let txn = self.db().begin_read()?;
        let by_state = txn.open_table(BY_STATE)?;
        let mut out = Vec::new();
        for state in RunState::ALL {
            out.push((state, crate::memory::count_in_state(&by_state, state.as_str())?));
        }
        Ok(out)
    }

    /// The newest `limit` runs (ids are time-ordered), newest first.
    pub fn recent_runs(&self, limit: usize) -> Result<Vec<Run>, StoreError> {
        let txn = self.db().begin_read()?;
        let runs = txn.open_table(RUNS)?;
        let mut out = Vec::new();
        for item in runs.iter()?.rev().take(limit) {
            let (k, v) = item?;
            out.push(serde_json::from_str(v.value()).map_err(|e| corrupt(k.value(), e))?);
        }
        Ok(out)
    }
}
