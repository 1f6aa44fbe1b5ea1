//! Webhook triggers: `POST /api/v1/hooks/PATH` starts a run of the
//! workflow whose trigger is `webhook` with that path, with the request's
//! JSON body as its input. A sender that retries with the same
//! `Idempotency-Key` header gets the first run back instead of a second
//! one.

use std::sync::Arc;

use redb::{ReadableDatabase, TableDefinition, WriteTransaction};
use serde_json::Value;

use crate::memory::committer::{Batch, CustomMutation, Mutation};
use crate::memory::{Store, StoreError};
use crate::runtime::Runtime;
use crate::workflow::WorkflowError;
use crate::workflow::definition::{Trigger, WorkflowDef};
use crate::workflow::runs::Run;

/// (workflow, idempotency key) -> run id.
const KEYS: TableDefinition<(&str, &str), &str> = TableDefinition::new("webhook_keys");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(KEYS)?;
    Ok(())
}

/// What a webhook request started.
#[derive(Debug, Clone, PartialEq)]
pub enum Started {
    New(Box<Run>),
    /// The same idempotency key came before: this run.
    Again(String),
}

/// The workflow whose webhook trigger has `path`.
pub fn find<'d>(defs: &'d [(WorkflowDef, String)], path: &str) -> Option<&'d (WorkflowDef, String)> {
    defs.iter().find(|(d, _)| matches!(&d.trigger, Trigger::Webhook { path: p } if p == path))
}

fn known(store: &Store, workflow: &str, key: &str) -> Result<Option<String>, StoreError> {
    let txn = store.db().begin_read()?;
    Ok(txn.open_table(KEYS)?.get((workflow, key))?.map(|v| v.value().to_owned()))
}

/// Starts a run of `def` with `input`, once per idempotency `key`.
pub async fn start(
    runtime: &Runtime,
    def: &WorkflowDef,
    text: &str,
    input: Value,
    key: Option<&str>,
) -> Result<Started, WorkflowError> {
    if let Some(run) = key.map(|k| known(runtime.store(), &def.name, k)).transpose()?.flatten() {
        return Ok(Started::Again(run));
    }
    let run = runtime.start_run(def, text, input, "webhook", "webhook").await?;
    if let Some(key) = key {
        let (workflow, key, id) = (def.name.clone(), key.to_owned(), run.id.clone());
        let apply = Arc::new(move |txn: &WriteTransaction| {
            txn.open_table(KEYS)?.insert((workflow.as_str(), key.as_str()), id.as_str())?;
            Ok(())
        });
        let mutation = Mutation::Custom(CustomMutation { label: "webhook.key", apply });
        runtime.store().commit(Batch { mutations: vec![mutation], audit: vec![] }).await?;
    }
    Ok(Started::New(Box::new(run)))
}
