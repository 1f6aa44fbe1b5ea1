//! Key/value entries in namespaces: the plugin-visible memory of the
//! runtime core. Access control happens before this, in `kernel::gate`.

use redb::{ReadableDatabase, TableDefinition, WriteTransaction};

use super::audit::{self, AuditEntry};
use super::{Store, StoreError};

const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("memory_kv");

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

impl Store {
    /// Reads `key` in `namespace`.
    pub fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(KV)?;
        Ok(table.get((namespace, key))?.map(|v| v.value().to_vec()))
    }

    /// Writes `key` in `namespace` and its audit entry in one commit.
    pub fn kv_put(&self, namespace: &str, key: &str, value: &[u8], entry: AuditEntry) -> Result<(), StoreError> {
        let txn = self.db().begin_write()?;
        {
            let mut table = txn.open_table(KV)?;
            table.insert((namespace, key), value)?;
        }
        audit::append(&txn, entry)?;
        txn.commit()?;
        Ok(())
    }

    /// Deletes `key` in `namespace` and records the audit entry in one
    /// commit; returns whether the key existed.
    pub fn kv_delete(&self, namespace: &str, key: &str, entry: AuditEntry) -> Result<bool, StoreError> {
        let txn = self.db().begin_write()?;
        let existed = {
            let mut table = txn.open_table(KV)?;
            table.remove((namespace, key))?.is_some()
        };
        audit::append(&txn, entry)?;
        txn.commit()?;
        Ok(existed)
    }

    /// Lists up to `limit` keys of `namespace` that start with `prefix`.
    pub fn kv_list_keys(&self, namespace: &str, prefix: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(KV)?;
        let mut keys = Vec::new();
        for item in table.range((namespace, prefix)..)? {
            let (k, _) = item?;
            let (ns, key) = k.value();
            if ns != namespace || !key.starts_with(prefix) || keys.len() >= limit as usize {
                break;
            }
            keys.push(key.to_owned());
        }
        Ok(keys)
    }

    /// Every entry of `namespace` (for `keel memory` and tests).
    pub fn kv_entries(&self, namespace: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(KV)?;
        let mut out = Vec::new();
        for item in table.range((namespace, "")..)? {
            let (k, v) = item?;
            let (ns, key) = k.value();
            if ns != namespace {
                break;
            }
            out.push((key.to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }
}
