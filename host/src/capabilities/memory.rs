//! `keel:plugin/memory`: namespaced key/value entries, each access checked
//! by the gate, each write audited in the same commit.

use wasmtime::component::{HasData, Linker};

use crate::bindings::GuestError;
use crate::bindings::keel::plugin::memory;
use crate::kernel::{Caller, Gate, Request};
use crate::memory::StoreError;
use crate::memory::audit::AuditEntry;
use crate::memory::kv::{MAX_KEY_BYTES, MAX_LIST_KEYS, MAX_VALUE_BYTES};
use crate::runtime::HostState;

/// The memory capability as one call sees it.
pub struct MemoryView<'a> {
    pub caller: &'a Caller,
    pub gate: &'a Gate,
}

struct MemoryCapability;

impl HasData for MemoryCapability {
    type Data<'a> = MemoryView<'a>;
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    memory::add_to_linker::<HostState, MemoryCapability>(linker, |s| MemoryView { caller: &s.caller, gate: &s.gate })
}

type GuestResult<T> = wasmtime::Result<Result<T, GuestError>>;

fn check_key(key: &str) -> Result<(), GuestError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(GuestError::InvalidInput(format!("key must be 1 to {MAX_KEY_BYTES} bytes, got {}", key.len())));
    }
    Ok(())
}

fn unavailable(e: StoreError) -> GuestError {
    tracing::error!(error = %e, "memory backend failed");
    GuestError::Unavailable(format!("memory backend failed: {e}"))
}

impl memory::Host for MemoryView<'_> {
    fn get(&mut self, namespace: String, key: String) -> GuestResult<Option<Vec<u8>>> {
        let _span = tracing::debug_span!("keel.memory.get", plugin = %self.caller.plugin, %namespace).entered();
        Ok((|| {
            self.gate.check(self.caller, Request::MemoryRead { namespace: &namespace })?;
            check_key(&key)?;
            self.gate.store().kv_get(&namespace, &key).map_err(unavailable)
        })())
    }

    fn put(&mut self, namespace: String, key: String, value: Vec<u8>) -> GuestResult<()> {
        let _span = tracing::debug_span!("keel.memory.put", plugin = %self.caller.plugin, %namespace).entered();
        Ok((|| {
            self.gate.check(self.caller, Request::MemoryWrite { namespace: &namespace })?;
            check_key(&key)?;
            if value.len() > MAX_VALUE_BYTES {
                return Err(GuestError::InvalidInput(format!(
                    "value for `{key}` is {} bytes, over the {MAX_VALUE_BYTES}-byte limit",
                    value.len()
                )));
            }
            let entry = AuditEntry::allowed(&self.caller.plugin, "memory.put", format!("{namespace}/{key}"));
            self.gate.store().kv_put(&namespace, &key, &value, entry).map_err(unavailable)
        })())
    }

    fn delete(&mut self, namespace: String, key: String) -> GuestResult<bool> {
        let _span = tracing::debug_span!("keel.memory.delete", plugin = %self.caller.plugin, %namespace).entered();
        Ok((|| {
            self.gate.check(self.caller, Request::MemoryWrite { namespace: &namespace })?;
            check_key(&key)?;
            let entry = AuditEntry::allowed(&self.caller.plugin, "memory.delete", format!("{namespace}/{key}"));
            self.gate.store().kv_delete(&namespace, &key, entry).map_err(unavailable)
        })())
    }

    fn list_keys(&mut self, namespace: String, prefix: String, limit: u32) -> GuestResult<Vec<String>> {
        let _span = tracing::debug_span!("keel.memory.list_keys", plugin = %self.caller.plugin, %namespace).entered();
        Ok((|| {
            self.gate.check(self.caller, Request::MemoryRead { namespace: &namespace })?;
            if limit > MAX_LIST_KEYS {
                return Err(GuestError::InvalidInput(format!("limit {limit} is over the maximum of {MAX_LIST_KEYS}")));
            }
            self.gate.store().kv_list_keys(&namespace, &prefix, limit).map_err(unavailable)
        })())
    }
}
