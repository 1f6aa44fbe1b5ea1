//! Key/value entries in namespaces, with an optional expiry: the
//! plugin-visible short-term cache. Each namespace is bounded (entries and
//! bytes) and evicts its least recently used entries; expired entries read
//! as absent at once and are deleted later by the reclaimer. Access
//! control happens before this, in `kernel::gate`; writes arrive through
//! the committer.

mod access;
mod apply;

use std::collections::BTreeMap;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

pub use access::AccessLog;
pub use apply::{KvBound, entry_bytes};
pub(crate) use apply::{apply_delete, apply_put, apply_touches, reclaim_entries, save_clock, track_existing_entries};

use super::{Store, StoreError, now_ms};

/// Value layout: 8 bytes little-endian expiry (Unix ms, 0 = never), then
/// the plugin's bytes.
const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("memory_kv");
const EXPIRY_BYTES: usize = 8;
/// Last access tick of each entry.
const ACCESS: TableDefinition<(&str, &str), u64> = TableDefinition::new("memory_kv_access");
/// (namespace, tick, key): entries in least-recently-used order.
const LRU: TableDefinition<(&str, u64, &str), ()> = TableDefinition::new("memory_kv_lru");
/// (expiry, namespace, key): entries that expire, soonest first.
const EXPIRY: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("memory_kv_expiry");
/// Stored entries and bytes per namespace, expired ones included.
const USAGE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("memory_kv_usage");
/// The access clock, so recency survives a restart.
const CLOCK: TableDefinition<&str, u64> = TableDefinition::new("memory_kv_clock");
const CLOCK_KEY: &str = "clock";

/// Longest key a plugin may use, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value a plugin may store under one key, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most keys one `list-keys` call returns.
pub const MAX_LIST_KEYS: u32 = 1000;

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(KV)?;
    txn.open_table(ACCESS)?;
    txn.open_table(LRU)?;
    txn.open_table(EXPIRY)?;
    txn.open_table(USAGE)?;
    txn.open_table(CLOCK)?;
    Ok(())
}

/// The access clock as last saved.
pub(crate) fn load_clock(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read()?;
    let clock = txn.open_table(CLOCK)?;
    Ok(clock.get(CLOCK_KEY)?.map_or(0, |v| v.value()))
}

fn stored_expiry(stored: &[u8]) -> u64 {
    stored.get(..EXPIRY_BYTES).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

fn encode(value: &[u8], expires_at_ms: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(EXPIRY_BYTES + value.len());
    out.extend_from_slice(&expires_at_ms.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// The live value of a stored entry, or `None` if it has expired.
fn decode(stored: &[u8], now: u64) -> Option<&[u8]> {
    let (expiry, value) = stored.split_at_checked(EXPIRY_BYTES)?;
    let expiry = u64::from_le_bytes(expiry.try_into().expect("8 bytes"));
    (expiry == 0 || expiry > now).then_some(value)
}

/// What one namespace holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NamespaceStats {
    /// Stored entries, expired ones not yet reclaimed included.
    pub entries: u64,
    /// Keys plus values of the stored entries; this counts against the bound.
    pub bytes: u64,
    /// Entries that have expired and wait for the reclaimer.
    pub expired: u64,
}

impl Store {
    /// Usage per namespace, from the counters the committer keeps.
    pub fn kv_stats(&self) -> Result<BTreeMap<String, NamespaceStats>, StoreError> {
        let txn = self.db().begin_read()?;
        let mut out = BTreeMap::<String, NamespaceStats>::new();
        for item in txn.open_table(USAGE)?.iter()? {
            let (ns, usage) = item?;
            let (entries, bytes) = usage.value();
            out.insert(ns.value().to_owned(), NamespaceStats { entries, bytes, expired: 0 });
        }
        for item in txn.open_table(EXPIRY)?.range(..(now_ms().saturating_add(1), "", ""))? {
            let (k, _) = item?;
            out.entry(k.value().1.to_owned()).or_default().expired += 1;
        }
        Ok(out)
    }

    /// Reads `key` in `namespace`; expired entries read as absent. A hit
    /// counts as a use for least-recently-used eviction.
    pub fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(KV)?;
        let now = now_ms();
        let value = table.get((namespace, key))?.and_then(|v| decode(v.value(), now).map(<[u8]>::to_vec));
        if value.is_some() {
            self.access().touch(namespace, key);
        }
        Ok(value)
    }

    /// Up to `limit` entries that expired at or before `now_ms`, soonest
    /// first, as (expiry, namespace, key).
    pub fn kv_expired(&self, now_ms: u64, limit: usize) -> Result<Vec<(u64, String, String)>, StoreError> {
        let txn = self.db().begin_read()?;
        let mut out = Vec::new();
        for item in txn.open_table(EXPIRY)?.range(..(now_ms.saturating_add(1), "", ""))?.take(limit) {
            let (k, _) = item?;
            let (at, ns, key) = k.value();
            out.push((at, ns.to_owned(), key.to_owned()));
        }
        Ok(out)
    }

    /// Lists up to `limit` live keys of `namespace` that start with `prefix`.
    pub fn kv_list_keys(&self, namespace: &str, prefix: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        Ok(self.kv_scan(namespace, prefix, limit as usize)?.into_iter().map(|(k, _)| k).collect())
    }

    /// Up to `limit` live entries of `namespace` whose key starts with
    /// `prefix`, in key order.
    pub fn kv_scan(&self, namespace: &str, prefix: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(KV)?;
        let now = now_ms();
        let mut out = Vec::new();
        for item in table.range((namespace, prefix)..)? {
            let (k, v) = item?;
            let (ns, key) = k.value();
            if ns != namespace || !key.starts_with(prefix) || out.len() >= limit {
                break;
            }
            if let Some(value) = decode(v.value(), now) {
                out.push((key.to_owned(), value.to_vec()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_values_read_as_absent() {
        assert_eq!(decode(&encode(b"v", None), 10), Some(&b"v"[..]));
        assert_eq!(decode(&encode(b"v", Some(11)), 10), Some(&b"v"[..]));
        assert_eq!(decode(&encode(b"v", Some(10)), 10), None);
    }
}
