//! The approval inbox: proposals parked for the operator, durable across
//! restarts. Each approval points at its intent in the outbox; deciding it
//! moves the intent to `ready` (then it executes exactly as an allowed
//! proposal would, with the same key and the same kill-switch check) or to
//! `rejected`.

use std::sync::atomic::{AtomicU64, Ordering};

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::memory::{Store, StoreError};

/// Approvals by number, as JSON.
const APPROVALS: TableDefinition<u64, &str> = TableDefinition::new("kernel_approvals");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(APPROVALS)?;
    Ok(())
}

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
    /// Nobody decided in time; the policy's `on_expiry` was applied.
    Expired,
}

impl ApprovalStatus {
    /// The name used in JSON and shown to the operator.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Expired => "expired",
        }
    }
}

/// One question to the operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub id: u64,
    pub intent_key: String,
    pub plugin: String,
    pub kind: String,
    /// Why the gate parked it.
    pub reasons: Vec<String>,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    pub status: ApprovalStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at_ms: Option<u64>,
    /// The operator's reason for a rejection, or a note on an edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn corrupt(id: u64, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { what: format!("approval #{id}"), detail: e.to_string() }
}

pub(crate) fn get_in(txn: &WriteTransaction, id: u64) -> Result<Option<Approval>, StoreError> {
    let table = txn.open_table(APPROVALS)?;
    let Some(json) = table.get(id)? else { return Ok(None) };
    serde_json::from_str(json.value()).map(Some).map_err(|e| corrupt(id, e))
}

pub(crate) fn put_in(txn: &WriteTransaction, approval: &Approval) -> Result<(), StoreError> {
    let json = serde_json::to_string(approval).expect("approvals always serialize");
    txn.open_table(APPROVALS)?.insert(approval.id, json.as_str())?;
    Ok(())
}

/// Hands out approval numbers. One process owns the database at a time,
/// so continuing from the highest stored number keeps them unique; a
/// number given to a call that then failed is simply never used.
#[derive(Debug)]
pub struct ApprovalNumbers(AtomicU64);

impl ApprovalNumbers {
    pub fn load(store: &Store) -> Result<ApprovalNumbers, StoreError> {
        let txn = store.db().begin_read()?;
        let last = txn.open_table(APPROVALS)?.last()?.map_or(0, |(k, _)| k.value());
        Ok(ApprovalNumbers(AtomicU64::new(last)))
    }

    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A mutation that writes `approval` as it is.
pub fn put(approval: Approval) -> crate::memory::committer::Mutation {
    let apply = std::sync::Arc::new(move |txn: &WriteTransaction| put_in(txn, &approval));
    crate::memory::committer::Mutation::Custom(crate::memory::committer::CustomMutation {
        label: "approvals.put",
        apply,
    })
}

impl Store {
    pub fn approval(&self, id: u64) -> Result<Option<Approval>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(APPROVALS)?;
        let Some(json) = table.get(id)? else { return Ok(None) };
        serde_json::from_str(json.value()).map(Some).map_err(|e| corrupt(id, e))
    }

    /// Approvals with `status` (all if `None`), oldest first.
    pub fn approvals(&self, status: Option<ApprovalStatus>) -> Result<Vec<Approval>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(APPROVALS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            let a: Approval = serde_json::from_str(v.value()).map_err(|e| corrupt(k.value(), e))?;
            if status.is_none_or(|s| s == a.status) {
                out.push(a);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_match_their_json() {
        for s in [ApprovalStatus::Pending, ApprovalStatus::Approved, ApprovalStatus::Rejected, ApprovalStatus::Expired]
        {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
