//! The recency clock behind least-recently-used eviction.
//!
//! Every put and every successful read gets a tick from one counter. Reads
//! do not write: their ticks wait here and the committer applies them at
//! the start of its next commit, so a read costs a map insert, not a disk
//! write. Ticks still waiting when the process dies are lost, which only
//! makes eviction slightly less exact; they never change what is stored.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Reads remembered between commits; beyond this, further reads of keys
/// not already waiting are not counted until the next commit.
const MAX_PENDING_TOUCHES: usize = 65_536;

/// Logical time of key/value accesses, shared by readers and the committer.
#[derive(Debug)]
pub struct AccessLog {
    clock: AtomicU64,
    /// The clock value last written to the database.
    saved: AtomicU64,
    pending: Mutex<HashMap<(String, String), u64>>,
}

impl AccessLog {
    /// Continues from `saved`, the value last persisted.
    pub(crate) fn resume(saved: u64) -> AccessLog {
        AccessLog { clock: AtomicU64::new(saved), saved: AtomicU64::new(saved), pending: Mutex::default() }
    }

    /// A tick later than every tick handed out before.
    pub(crate) fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records a read of `key` in `namespace`.
    pub(crate) fn touch(&self, namespace: &str, key: &str) {
        let tick = self.tick();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() < MAX_PENDING_TOUCHES || pending.contains_key(&(namespace.to_owned(), key.to_owned())) {
            pending.insert((namespace.to_owned(), key.to_owned()), tick);
        }
    }

    /// The reads waiting to be applied, emptying the log.
    pub(crate) fn take_touches(&self) -> HashMap<(String, String), u64> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn has_touches(&self) -> bool {
        !self.pending.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// The clock value to persist, if it moved since the last save.
    pub(crate) fn unsaved(&self) -> Option<u64> {
        let now = self.clock.load(Ordering::Relaxed);
        (now != self.saved.load(Ordering::Relaxed)).then_some(now)
    }

    /// Notes that `value` is on disk.
    pub(crate) fn mark_saved(&self, value: u64) {
        self.saved.fetch_max(value, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_increase_and_touches_keep_the_latest() {
        let log = AccessLog::resume(41);
        assert_eq!(log.tick(), 42);
        log.touch("ns", "a");
        log.touch("ns", "a");
        let touches = log.take_touches();
        assert_eq!(touches.get(&("ns".to_owned(), "a".to_owned())), Some(&44));
        assert!(!log.has_touches());
        assert_eq!(log.unsaved(), Some(44));
        log.mark_saved(44);
        assert_eq!(log.unsaved(), None);
    }
}
