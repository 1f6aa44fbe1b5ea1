//! The kill switch: one durable flag. From the commit that sets it, no
//! outbound action starts (the executor's start-of-attempt commit checks it
//! in the same transaction) and new proposals are parked for the operator.
//! Only the operator flips it (`keel stop`, `keel resume`); both are audited.

use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::memory::audit::AuditEntry;
use crate::memory::committer::{Batch, CustomMutation, Mutation};
use crate::memory::{Store, StoreError, now_ms};

const KERNEL_STATE: TableDefinition<&str, &str> = TableDefinition::new("kernel_state");
const SWITCH_KEY: &str = "kill_switch";

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(KERNEL_STATE)?;
    Ok(())
}

/// The switch as last set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillSwitch {
    pub engaged: bool,
    pub since_ms: u64,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn parse(json: &str) -> Result<KillSwitch, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt { what: "the kill switch".into(), detail: e.to_string() })
}

/// Whether the switch is engaged, as seen inside a write transaction.
pub(crate) fn engaged_in(txn: &WriteTransaction) -> Result<bool, StoreError> {
    let table = txn.open_table(KERNEL_STATE)?;
    let Some(json) = table.get(SWITCH_KEY)? else { return Ok(false) };
    Ok(parse(json.value())?.engaged)
}

impl Store {
    /// The kill switch, if it was ever set.
    pub fn kill_switch(&self) -> Result<Option<KillSwitch>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(KERNEL_STATE)?;
        table.get(SWITCH_KEY)?.map(|json| parse(json.value())).transpose()
    }

    /// Engages or lifts the switch as `by`, audited, durably.
    pub fn set_kill_switch(&self, engaged: bool, by: &str, reason: Option<String>) -> Result<(), StoreError> {
        let state = KillSwitch { engaged, since_ms: now_ms(), by: by.to_owned(), reason: reason.clone() };
        let json = serde_json::to_string(&state).expect("the switch serializes");
        let apply = Arc::new(move |txn: &WriteTransaction| {
            txn.open_table(KERNEL_STATE)?.insert(SWITCH_KEY, json.as_str())?;
            Ok(())
        });
        let operation = if engaged { "kernel.stop" } else { "kernel.resume" };
        let mut entry = AuditEntry::allowed(by, operation, "kill-switch");
        entry.reason = reason;
        let mutation = Mutation::Custom(CustomMutation { label: "kernel.kill_switch", apply });
        self.commit_blocking(Batch { mutations: vec![mutation], audit: vec![entry] }).map(drop)
    }
}
