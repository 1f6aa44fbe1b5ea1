//! `keel:plugin/memory`: key/value entries, structured records and
//! semantic notes, all in namespaces. Each access is checked by the gate;
//! writes collect in the call's [`WriteSet`] and are committed, with their
//! audit entries, when the call succeeds.

mod notes;
mod records;

use wasmtime::component::{HasData, Linker};

use super::journaled;
use crate::bindings::GuestError;
use crate::bindings::keel::plugin::memory::{
    self, Hit, Note, RecallRequest, RecordEntry, RecordPage, RecordQuery, WriteResult,
};
use crate::kernel::{Caller, Gate, Request};
use crate::memory::StoreError;
use crate::memory::kv::{MAX_KEY_BYTES, MAX_LIST_KEYS, MAX_VALUE_BYTES, entry_bytes};
use crate::memory::now_ms;
use crate::memory::plane::MemoryPlane;
use crate::memory::write_set::{KvWrite, WriteSet};
use crate::runtime::HostState;
use crate::workflow::journal::SharedJournal;

/// The memory capability as one call sees it.
pub struct MemoryView<'a> {
    pub caller: &'a Caller,
    pub gate: &'a Gate,
    pub writes: &'a mut WriteSet,
    pub plane: &'a MemoryPlane,
    pub journal: Option<&'a SharedJournal>,
}

struct MemoryCapability;

impl HasData for MemoryCapability {
    type Data<'a> = MemoryView<'a>;
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    memory::add_to_linker::<HostState, MemoryCapability>(linker, |s| MemoryView {
        caller: &s.caller,
        gate: &s.gate,
        writes: &mut s.writes,
        plane: &s.plane,
        journal: s.journal.as_ref(),
    })
}

type GuestResult<T> = wasmtime::Result<Result<T, GuestError>>;

fn check_key(key: &str) -> Result<(), GuestError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(GuestError::InvalidInput(format!("key must be 1 to {MAX_KEY_BYTES} bytes, got {}", key.len())));
    }
    Ok(())
}

fn check_value(key: &str, value: &[u8]) -> Result<(), GuestError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(GuestError::InvalidInput(format!(
            "value for `{key}` is {} bytes, over the {MAX_VALUE_BYTES}-byte limit",
            value.len()
        )));
    }
    Ok(())
}

pub(super) fn unavailable(e: StoreError) -> GuestError {
    tracing::error!(error = %e, "memory backend failed");
    GuestError::Unavailable(format!("memory backend failed: {e}"))
}

impl MemoryView<'_> {
    fn read(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, GuestError> {
        match self.writes.kv(namespace, key) {
            Some(KvWrite::Put { value, expires_at_ms }) if expires_at_ms.is_none_or(|t| t > now_ms()) => {
                Ok(Some(value.clone()))
            }
            Some(_) => Ok(None),
            None => self.gate.store().kv_get(namespace, key).map_err(unavailable),
        }
    }

    /// Keys in `namespace` starting with `prefix`, this call's own writes
    /// applied.
    fn keys(&self, namespace: &str, prefix: &str, limit: u32) -> Result<Vec<String>, GuestError> {
        self.gate.check(self.caller, Request::MemoryRead { namespace })?;
        if limit > MAX_LIST_KEYS {
            return Err(GuestError::InvalidInput(format!("limit {limit} is over the maximum of {MAX_LIST_KEYS}")));
        }
        // Stored keys, with this call's own puts and deletes applied.
        let pending: Vec<(&str, &KvWrite)> = self.writes.kv_prefixed(namespace, prefix).collect();
        let fetch = limit as usize + pending.len();
        let mut keys: std::collections::BTreeSet<String> =
            self.gate.store().kv_list_keys(namespace, prefix, fetch as u32).map_err(unavailable)?.into_iter().collect();
        let now = now_ms();
        for (key, write) in pending {
            match write {
                KvWrite::Put { expires_at_ms, .. } if expires_at_ms.is_none_or(|t| t > now) => {
                    keys.insert(key.to_owned())
                }
                _ => keys.remove(key),
            };
        }
        Ok(keys.into_iter().take(limit as usize).collect())
    }

    fn write(
        &mut self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        expires_at_ms: Option<u64>,
    ) -> Result<(), GuestError> {
        self.gate.check(self.caller, Request::MemoryWrite { namespace })?;
        check_key(key)?;
        check_value(key, &value)?;
        let bound = self.plane.rules.kv_bound(namespace);
        if entry_bytes(key, value.len()) > bound.max_bytes {
            return Err(GuestError::InvalidInput(format!(
                "`{key}` and its value take {} bytes, more than namespace `{namespace}` may hold ({} bytes): \
                 store less, or ask the operator to raise `max_kib` for it",
                entry_bytes(key, value.len()),
                bound.max_bytes
            )));
        }
        let expires_at_ms = self.plane.rules.kv_expiry(namespace, now_ms(), expires_at_ms);
        let entry = self.caller.allowed("memory.put", format!("{namespace}/{key}"));
        self.writes.put(namespace, key, value, expires_at_ms, entry);
        Ok(())
    }
}

/// Journals the call (for a workflow step) and answers the guest.
macro_rules! journal {
    ($view:ident, $op:literal, ($($arg:expr),*), $call:expr) => {{
        let journal = $view.journal;
        let request = journal.map(|_| serde_json::to_value(($(&$arg),*)).unwrap_or_default());
        Ok(journaled(journal, $op, request, || $call))
    }};
}

impl memory::Host for MemoryView<'_> {
    fn get(&mut self, namespace: String, key: String) -> GuestResult<Option<Vec<u8>>> {
        let _span = tracing::debug_span!("keel.memory.get", plugin = %self.caller.plugin, %namespace).entered();
        journal!(self, "memory.get", (namespace, key), {
            self.gate.check(self.caller, Request::MemoryRead { namespace: &namespace })?;
            check_key(&key)?;
            self.read(&namespace, &key)
        })
    }

    fn put(&mut self, namespace: String, key: String, value: Vec<u8>) -> GuestResult<()> {
        let _span = tracing::debug_span!("keel.memory.put", plugin = %self.caller.plugin, %namespace).entered();
        journal!(self, "memory.put", (namespace, key, value), self.write(&namespace, &key, value, None))
    }

    fn put_expiring(&mut self, namespace: String, key: String, value: Vec<u8>, ttl_ms: u64) -> GuestResult<()> {
        let _span =
            tracing::debug_span!("keel.memory.put_expiring", plugin = %self.caller.plugin, %namespace).entered();
        journal!(self, "memory.put-expiring", (namespace, key, value, ttl_ms), {
            if ttl_ms == 0 {
                return Err(GuestError::InvalidInput("ttl-ms must be at least 1".into()));
            }
            self.write(&namespace, &key, value, Some(now_ms().saturating_add(ttl_ms)))
        })
    }

    fn delete(&mut self, namespace: String, key: String) -> GuestResult<bool> {
        let _span = tracing::debug_span!("keel.memory.delete", plugin = %self.caller.plugin, %namespace).entered();
        journal!(self, "memory.delete", (namespace, key), {
            self.gate.check(self.caller, Request::MemoryWrite { namespace: &namespace })?;
            check_key(&key)?;
            let existed = self.read(&namespace, &key)?.is_some();
            let entry = self.caller.allowed("memory.delete", format!("{namespace}/{key}"));
            self.writes.delete(&namespace, &key, entry);
            Ok(existed)
        })
    }

    fn list_keys(&mut self, namespace: String, prefix: String, limit: u32) -> GuestResult<Vec<String>> {
        let _span = tracing::debug_span!("keel.memory.list_keys", plugin = %self.caller.plugin, %namespace).entered();
        journal!(self, "memory.list-keys", (namespace, prefix, limit), self.keys(&namespace, &prefix, limit))
    }

    fn get_record(&mut self, collection: String, id: String) -> GuestResult<Option<RecordEntry>> {
        let _span = tracing::debug_span!("keel.memory.get_record", plugin = %self.caller.plugin, %collection).entered();
        journal!(self, "memory.get-record", (collection, id), self.record_get(&collection, &id))
    }

    fn put_record(
        &mut self,
        collection: String,
        id: String,
        data: String,
        expected_version: Option<u64>,
    ) -> GuestResult<WriteResult> {
        let _span = tracing::debug_span!("keel.memory.put_record", plugin = %self.caller.plugin, %collection).entered();
        journal!(self, "memory.put-record", (collection, id, data, expected_version), {
            self.record_put(collection, id, &data, expected_version)
        })
    }

    fn delete_record(
        &mut self,
        collection: String,
        id: String,
        expected_version: Option<u64>,
    ) -> GuestResult<WriteResult> {
        let _span =
            tracing::debug_span!("keel.memory.delete_record", plugin = %self.caller.plugin, %collection).entered();
        journal!(self, "memory.delete-record", (collection, id, expected_version), {
            self.record_delete(collection, id, expected_version)
        })
    }

    fn query_records(&mut self, query: RecordQuery) -> GuestResult<RecordPage> {
        let _span =
            tracing::debug_span!("keel.memory.query_records", plugin = %self.caller.plugin, collection = %query.collection)
                .entered();
        journal!(self, "memory.query-records", (query), self.record_query(query))
    }

    fn remember(&mut self, namespace: String, note: Note) -> GuestResult<String> {
        let _span = tracing::debug_span!("keel.memory.remember", plugin = %self.caller.plugin, %namespace).entered();
        journal!(self, "memory.remember", (namespace, note), self.note_remember(&namespace, note))
    }

    fn remember_many(&mut self, namespace: String, notes: Vec<Note>) -> GuestResult<Vec<String>> {
        let _span =
            tracing::debug_span!("keel.memory.remember_many", plugin = %self.caller.plugin, %namespace, count = notes.len())
                .entered();
        journal!(self, "memory.remember-many", (namespace, notes), self.note_remember_many(&namespace, notes))
    }

    fn recall(&mut self, request: RecallRequest) -> GuestResult<Vec<Hit>> {
        let _span =
            tracing::debug_span!("keel.memory.recall", plugin = %self.caller.plugin, namespace = %request.namespace)
                .entered();
        journal!(self, "memory.recall", (request), {
            self.note_recall(vec![request]).map(|mut all| all.pop().unwrap_or_default())
        })
    }

    fn recall_many(&mut self, requests: Vec<RecallRequest>) -> GuestResult<Vec<Vec<Hit>>> {
        let _span =
            tracing::debug_span!("keel.memory.recall_many", plugin = %self.caller.plugin, count = requests.len())
                .entered();
        journal!(self, "memory.recall-many", (requests), self.note_recall(requests))
    }

    fn forget(&mut self, namespace: String, id: String) -> GuestResult<bool> {
        let _span = tracing::debug_span!("keel.memory.forget", plugin = %self.caller.plugin, %namespace).entered();
        journal!(self, "memory.forget", (namespace, id), self.note_forget(&namespace, &id))
    }
}
