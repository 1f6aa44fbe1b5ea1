//! Durable workflows: definitions in `workflows/NAME.toml`, runs recorded
//! step by step in the workspace database, compensation of executed
//! actions when a run fails or is cancelled. See docs/workflows.md.

pub mod definition;
pub mod engine;
pub mod journal;
pub mod pruning;
pub mod replay;
pub mod runs;
pub mod saga;
pub mod schedule;
pub mod triggers;

use redb::WriteTransaction;

use crate::memory::StoreError;
use runs::RunState;

/// Creates the workflow tables; called when the database is opened.
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    runs::create_tables(txn)?;
    pruning::create_tables(txn)?;
    triggers::create_tables(txn)?;
    journal::create_tables(txn)
}

/// Why a workflow or run request failed; messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("no workflow named `{name}` in {dir}: {available}")]
    NoSuchWorkflow { name: String, dir: String, available: String },
    #[error("no run `{0}`: `keel runs list` shows the recent ones")]
    NoSuchRun(String),
    #[error("{0}")]
    Definition(String),
    #[error("run {id} already finished ({}); nothing changed", state.as_str())]
    Finished { id: String, state: RunState },
    #[error("run {id} is {}: only running or waiting runs can be paused", state.as_str())]
    NotPausable { id: String, state: RunState },
    #[error("run {id} is {}, not paused: `keel runs pause {id}` first", state.as_str())]
    NotPaused { id: String, state: RunState },
    #[error("workflow `{name}` is paused ({reason}): `keel workflows resume {name}` lifts it")]
    Paused { name: String, reason: String },
    #[error("invalid run input: {0}")]
    Input(String),
    #[error(transparent)]
    Call(#[from] crate::runtime::CallError),
    #[error(transparent)]
    Store(#[from] StoreError),
}
