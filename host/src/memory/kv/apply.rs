//! Key/value writes inside the committer's transaction. A value, its
//! recency, its expiry and its namespace's usage always change together,
//! so bounds are checked against exact counts and eviction and reclaim
//! find their victims by index instead of by scanning.

use std::collections::{BTreeMap, HashMap};

use redb::{ReadableTable, Table, WriteTransaction};

use super::{ACCESS, CLOCK, CLOCK_KEY, EXPIRY, EXPIRY_BYTES, KV, LRU, USAGE, encode, stored_expiry};
use crate::memory::StoreError;

/// How much one namespace may hold; a put beyond it evicts the least
/// recently used entries of that namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvBound {
    pub max_entries: u64,
    /// Keys plus values, in bytes.
    pub max_bytes: u64,
}

impl KvBound {
    pub const UNBOUNDED: KvBound = KvBound { max_entries: u64::MAX, max_bytes: u64::MAX };
}

/// Bytes an entry counts against its namespace's bound.
pub fn entry_bytes(key: &str, value_len: usize) -> u64 {
    (key.len() + value_len) as u64
}

/// The tables one write touches, opened together.
struct Tables<'t> {
    kv: Table<'t, (&'static str, &'static str), &'static [u8]>,
    access: Table<'t, (&'static str, &'static str), u64>,
    lru: Table<'t, (&'static str, u64, &'static str), ()>,
    expiry: Table<'t, (u64, &'static str, &'static str), ()>,
    usage: Table<'t, &'static str, (u64, u64)>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Tables<'t>, StoreError> {
        Ok(Tables {
            kv: txn.open_table(KV)?,
            access: txn.open_table(ACCESS)?,
            lru: txn.open_table(LRU)?,
            expiry: txn.open_table(EXPIRY)?,
            usage: txn.open_table(USAGE)?,
        })
    }

    fn usage(&self, namespace: &str) -> Result<(u64, u64), StoreError> {
        Ok(self.usage.get(namespace)?.map_or((0, 0), |v| v.value()))
    }

    fn set_usage(&mut self, namespace: &str, (entries, bytes): (u64, u64)) -> Result<(), StoreError> {
        if entries == 0 {
            self.usage.remove(namespace)?;
        } else {
            self.usage.insert(namespace, (entries, bytes))?;
        }
        Ok(())
    }

    /// Removes `key` and its bookkeeping; false if it was not stored.
    fn remove(&mut self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        let Some((expiry, value_len)) = self.kv.remove((namespace, key))?.map(|old| {
            let stored = old.value();
            (stored_expiry(stored), stored.len().saturating_sub(EXPIRY_BYTES))
        }) else {
            return Ok(false);
        };
        if let Some(tick) = self.access.remove((namespace, key))?.map(|t| t.value()) {
            self.lru.remove((namespace, tick, key))?;
        }
        if expiry != 0 {
            self.expiry.remove((expiry, namespace, key))?;
        }
        let (entries, bytes) = self.usage(namespace)?;
        self.set_usage(namespace, (entries.saturating_sub(1), bytes.saturating_sub(entry_bytes(key, value_len))))?;
        Ok(true)
    }

    fn insert(
        &mut self,
        namespace: &str,
        key: &str,
        value: &[u8],
        expires_at_ms: Option<u64>,
        tick: u64,
    ) -> Result<(), StoreError> {
        self.kv.insert((namespace, key), encode(value, expires_at_ms).as_slice())?;
        self.access.insert((namespace, key), tick)?;
        self.lru.insert((namespace, tick, key), ())?;
        if let Some(at) = expires_at_ms.filter(|at| *at != 0) {
            self.expiry.insert((at, namespace, key), ())?;
        }
        let (entries, bytes) = self.usage(namespace)?;
        self.set_usage(namespace, (entries + 1, bytes + entry_bytes(key, value.len())))
    }

    /// The least recently used key of `namespace` other than `keep`.
    fn coldest(&self, namespace: &str, keep: &str) -> Result<Option<String>, StoreError> {
        for item in self.lru.range((namespace, 0u64, "")..)? {
            let (k, _) = item?;
            let (ns, _, key) = k.value();
            if ns != namespace {
                break;
            }
            if key != keep {
                return Ok(Some(key.to_owned()));
            }
        }
        Ok(None)
    }

    /// Evicts the coldest entries until `namespace` fits `bound`; `keep`
    /// (the entry just written) goes last, never.
    fn evict(&mut self, namespace: &str, keep: &str, bound: KvBound) -> Result<Vec<String>, StoreError> {
        let mut evicted = Vec::new();
        loop {
            let (entries, bytes) = self.usage(namespace)?;
            if entries <= bound.max_entries && bytes <= bound.max_bytes {
                return Ok(evicted);
            }
            let Some(victim) = self.coldest(namespace, keep)? else { return Ok(evicted) };
            self.remove(namespace, &victim)?;
            evicted.push(victim);
        }
    }
}

/// Stores `value`, then evicts what no longer fits `bound`. Returns the
/// evicted keys, coldest first.
pub(crate) fn apply_put(
    txn: &WriteTransaction,
    namespace: &str,
    key: &str,
    value: &[u8],
    expires_at_ms: Option<u64>,
    bound: KvBound,
    tick: u64,
) -> Result<Vec<String>, StoreError> {
    let mut tables = Tables::open(txn)?;
    tables.remove(namespace, key)?;
    tables.insert(namespace, key, value, expires_at_ms, tick)?;
    tables.evict(namespace, key, bound)
}

pub(crate) fn apply_delete(txn: &WriteTransaction, namespace: &str, key: &str) -> Result<bool, StoreError> {
    Tables::open(txn)?.remove(namespace, key)
}

/// Applies reads recorded since the last commit: each read entry becomes
/// the most recently used, unless it was written again after the read.
pub(crate) fn apply_touches(txn: &WriteTransaction, touches: HashMap<(String, String), u64>) -> Result<(), StoreError> {
    if touches.is_empty() {
        return Ok(());
    }
    let mut access = txn.open_table(ACCESS)?;
    let mut lru = txn.open_table(LRU)?;
    for ((namespace, key), tick) in touches {
        let Some(old) = access.get((namespace.as_str(), key.as_str()))?.map(|t| t.value()) else { continue };
        if old < tick {
            access.insert((namespace.as_str(), key.as_str()), tick)?;
            lru.remove((namespace.as_str(), old, key.as_str()))?;
            lru.insert((namespace.as_str(), tick, key.as_str()), ())?;
        }
    }
    Ok(())
}

pub(crate) fn save_clock(txn: &WriteTransaction, value: u64) -> Result<(), StoreError> {
    txn.open_table(CLOCK)?.insert(CLOCK_KEY, value)?;
    Ok(())
}

/// Deletes the entries of `due` (expiry, namespace, key) that are still
/// due: an entry written again since it was listed has a new expiry and
/// stays. Returns how many went, per namespace.
pub(crate) fn reclaim_entries(
    txn: &WriteTransaction,
    due: &[(u64, String, String)],
) -> Result<BTreeMap<String, u64>, StoreError> {
    let mut tables = Tables::open(txn)?;
    let mut reclaimed = BTreeMap::<String, u64>::new();
    for (expiry, namespace, key) in due {
        if tables.expiry.get((*expiry, namespace.as_str(), key.as_str()))?.is_some() && tables.remove(namespace, key)? {
            *reclaimed.entry(namespace.clone()).or_default() += 1;
        }
    }
    Ok(reclaimed)
}

/// Builds recency, expiry and usage for entries stored before they were
/// tracked (schema v2). Recency follows key order. Returns the clock.
pub(crate) fn track_existing_entries(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let mut tables = Tables::open(txn)?;
    let mut existing = Vec::new();
    for item in tables.kv.iter()? {
        let (k, v) = item?;
        let (namespace, key) = k.value();
        let stored = v.value();
        existing.push((
            namespace.to_owned(),
            key.to_owned(),
            stored_expiry(stored),
            stored.len().saturating_sub(EXPIRY_BYTES),
        ));
    }
    let mut tick = 0;
    for (namespace, key, expiry, value_len) in existing {
        tick += 1;
        tables.access.insert((namespace.as_str(), key.as_str()), tick)?;
        tables.lru.insert((namespace.as_str(), tick, key.as_str()), ())?;
        if expiry != 0 {
            tables.expiry.insert((expiry, namespace.as_str(), key.as_str()), ())?;
        }
        let (entries, bytes) = tables.usage(&namespace)?;
        tables.set_usage(&namespace, (entries + 1, bytes + entry_bytes(&key, value_len)))?;
    }
    drop(tables);
    save_clock(txn, tick)?;
    Ok(tick)
}
