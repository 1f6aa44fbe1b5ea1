//! Key/value entries in namespaces, with an optional expiry: the
//! plugin-visible short-term memory. Access control happens before this,
//! in `kernel::gate`; writes arrive through the committer.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, StoreError, now_ms};

/// Value layout: 8 bytes little-endian expiry (Unix ms, 0 = never), then
/// the plugin's bytes.
const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("memory_kv");
const EXPIRY_BYTES: usize = 8;

/// Longest key a plugin may use, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value a plugin may store under one key, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most keys one `list-keys` call returns.
pub const MAX_LIST_KEYS: u32 = 1000;

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(KV)?;
    Ok(())
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

pub(crate) fn apply_put(
    txn: &WriteTransaction,
    namespace: &str,
    key: &str,
    value: &[u8],
    expires_at_ms: Option<u64>,
) -> Result<(), StoreError> {
    txn.open_table(KV)?.insert((namespace, key), encode(value, expires_at_ms).as_slice())?;
    Ok(())
}

pub(crate) fn apply_delete(txn: &WriteTransaction, namespace: &str, key: &str) -> Result<(), StoreError> {
    txn.open_table(KV)?.remove((namespace, key))?;
    Ok(())
}

/// Live entries and their bytes in one namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NamespaceStats {
    pub entries: u64,
    pub bytes: u64,
}

impl Store {
    /// Live entries per namespace (a full scan; for `keel memory stats`).
    pub fn kv_stats(&self) -> Result<std::collections::BTreeMap<String, NamespaceStats>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(KV)?;
        let now = now_ms();
        let mut out = std::collections::BTreeMap::<String, NamespaceStats>::new();
        for item in table.iter()? {
            let (k, v) = item?;
            if let Some(value) = decode(v.value(), now) {
                let s = out.entry(k.value().0.to_owned()).or_default();
                s.entries += 1;
                s.bytes += value.len() as u64;
            }
        }
        Ok(out)
    }

    /// Reads `key` in `namespace`; expired entries read as absent.
    pub fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(KV)?;
        let now = now_ms();
        Ok(table.get((namespace, key))?.and_then(|v| decode(v.value(), now).map(<[u8]>::to_vec)))
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
