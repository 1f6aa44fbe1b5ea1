//! The audit log: one entry per gate decision and per state-changing host
//! call, append-only, numbered in commit order.
//!
//! Entries are written in the same redb transaction as the change they
//! describe, so a change without its entry is never visible.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, now_ms};

const AUDIT: TableDefinition<u64, &str> = TableDefinition::new("audit");

/// What the gate decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    Allowed,
    Denied,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1; assigned on append.
    #[serde(default)]
    pub seq: u64,
    /// Unix time in milliseconds; assigned on append.
    #[serde(default)]
    pub at_ms: u64,
    /// Who acted: a plugin name, or `operator`.
    pub actor: String,
    /// What was attempted, e.g. `memory.put`, `plugin.install`.
    pub operation: String,
    /// What it was applied to, e.g. `hello/alice`.
    pub target: String,
    pub decision: Decision,
    /// Why, for denials and notable approvals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AuditEntry {
    pub fn allowed(actor: &str, operation: &str, target: impl Into<String>) -> AuditEntry {
        AuditEntry {
            seq: 0,
            at_ms: 0,
            actor: actor.to_owned(),
            operation: operation.to_owned(),
            target: target.into(),
            decision: Decision::Allowed,
            reason: None,
        }
    }

    pub fn denied(actor: &str, operation: &str, target: impl Into<String>, reason: impl Into<String>) -> AuditEntry {
        AuditEntry {
            decision: Decision::Denied,
            reason: Some(reason.into()),
            ..AuditEntry::allowed(actor, operation, target)
        }
    }
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(AUDIT)?;
    Ok(())
}

/// Appends `entry` inside `txn`; it becomes visible when `txn` commits.
pub(crate) fn append(txn: &WriteTransaction, mut entry: AuditEntry) -> Result<u64, StoreError> {
    let mut table = txn.open_table(AUDIT)?;
    let seq = table.last()?.map_or(0, |(k, _)| k.value()) + 1;
    entry.seq = seq;
    entry.at_ms = now_ms();
    let json = serde_json::to_string(&entry).expect("audit entries always serialize");
    table.insert(seq, json.as_str())?;
    Ok(seq)
}

impl Store {
    /// Appends one entry in its own commit.
    pub fn audit_append(&self, entry: AuditEntry) -> Result<u64, StoreError> {
        let txn = self.db().begin_write()?;
        let seq = append(&txn, entry)?;
        txn.commit()?;
        Ok(seq)
    }

    /// The last `n` entries, oldest first.
    pub fn audit_tail(&self, n: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let mut out = Vec::with_capacity(n);
        for item in table.iter()?.rev().take(n) {
            let (k, v) = item?;
            out.push(parse_entry(k.value(), v.value())?);
        }
        out.reverse();
        Ok(out)
    }
}

fn parse_entry(seq: u64, json: &str) -> Result<AuditEntry, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt { what: format!("audit entry {seq}"), detail: e.to_string() })
}
