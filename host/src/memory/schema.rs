//! Schema migrations. Each step rewrites the tables it changed, inside the
//! one transaction that also records the new version, so a crash leaves
//! either the old file or the new one.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::audit::{self, AuditEntry};
use super::{StoreError, kv};

/// The schema this keel writes.
pub const CURRENT: u64 = 4;

/// Runs every step from `from` up to [`CURRENT`].
pub(super) fn migrate(txn: &WriteTransaction, from: u64) -> Result<(), StoreError> {
    if from < 2 {
        v1_to_v2(txn)?;
    }
    if from < 3 {
        v2_to_v3(txn)?;
    }
    // v4 (owners on records and notes) rewrites nothing: see the note below.
    Ok(())
}

/// v2 put an expiry header before every key/value value and chained the
/// audit log with hashes.
fn v1_to_v2(txn: &WriteTransaction) -> Result<(), StoreError> {
    const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("memory_kv");
    const AUDIT: TableDefinition<u64, &str> = TableDefinition::new("audit");

    let mut kv = txn.open_table(KV)?;
    let mut rewritten = Vec::new();
    for item in kv.iter()? {
        let (k, v) = item?;
        let (ns, key) = k.value();
        let mut value = 0u64.to_le_bytes().to_vec();
        value.extend_from_slice(v.value());
        rewritten.push((ns.to_owned(), key.to_owned(), value));
    }
    for (ns, key, value) in &rewritten {
        kv.insert((ns.as_str(), key.as_str()), value.as_slice())?;
    }

    // Re-append the old entries in order: they get their hashes and the head.
    let mut log = txn.open_table(AUDIT)?;
    let mut old = Vec::new();
    for item in log.iter()? {
        let (k, v) = item?;
        let entry: AuditEntry = serde_json::from_str(v.value()).map_err(|e| StoreError::Corrupt {
            what: format!("audit entry #{} (schema v1)", k.value()),
            detail: e.to_string(),
        })?;
        old.push(entry);
    }
    log.retain(|_, _| false)?;
    drop(log);
    let mut appender = audit::Appender::open(txn)?;
    for entry in old {
        appender.append_keeping_time(entry)?;
    }
    appender.finish()
}

/// v3 tracks key/value recency, expiry and usage per namespace in tables
/// of their own (for bounds, eviction and background reclaim).
fn v2_to_v3(txn: &WriteTransaction) -> Result<(), StoreError> {
    kv::track_existing_entries(txn).map(drop)
}

// v4 stores each record's owner in a new record layout (format byte 2)
// and each note's owner in its row. Nothing is rewritten: records of
// format 1 and notes without an owner still read, as unowned data that
// every plugin granted the collection or namespace may read. The version
// is bumped so that an older keel, which cannot read format 2, refuses the
// file with its "newer than this keel" message instead of calling records
// corrupt.
