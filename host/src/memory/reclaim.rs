//! The reclaimer: deletes key/value entries that have expired, notes older
//! than their namespace's retention and records not updated within their
//! collection's retention. Expired data never reads as present in the
//! meantime; reclaiming only frees the space. Each pass is bounded
//! (`[memory.reclaim] batch`) and audited with actor `host`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::WriteTransaction;
use serde::Serialize;

use super::audit::AuditEntry;
use super::committer::{Batch, CustomMutation, Mutation};
use super::plane::MemoryPlane;
use super::records::{self, RecordWrite};
use super::semantic::storage;
use super::{Store, StoreError, kv};

/// What one pass deleted, per namespace or collection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReclaimReport {
    pub expired_entries: BTreeMap<String, u64>,
    pub notes: BTreeMap<String, u64>,
    pub records: BTreeMap<String, u64>,
}

impl ReclaimReport {
    pub fn total(&self) -> u64 {
        [&self.expired_entries, &self.notes, &self.records].iter().flat_map(|m| m.values()).sum()
    }
}

fn reclaim_entry(target: &str, reason: String) -> AuditEntry {
    let mut entry = AuditEntry::allowed("host", "memory.reclaim", target);
    entry.reason = Some(reason);
    entry
}

/// One pass at `now_ms`: everything due, up to the configured batch per
/// kind and namespace or collection.
pub fn reclaim_once(store: &Store, plane: &MemoryPlane, now_ms: u64) -> Result<ReclaimReport, StoreError> {
    let limit = plane.rules.reclaim.batch as usize;
    let mut report = ReclaimReport::default();
    let mut batch = Batch::default();

    // Expired entries: listed from a snapshot, deleted only if still due.
    let due = store.kv_expired(now_ms, limit)?;
    for (_, ns, _) in &due {
        *report.expired_entries.entry(ns.clone()).or_default() += 1;
    }
    if !due.is_empty() {
        let apply = Arc::new(move |txn: &WriteTransaction| kv::reclaim_entries(txn, &due).map(drop));
        batch.mutations.push(Mutation::Custom(CustomMutation { label: "kv.reclaim", apply }));
        for (ns, n) in &report.expired_entries {
            batch.audit.push(reclaim_entry(ns, format!("{n} expired key/value entries deleted")));
        }
    }

    // Notes past their namespace's retention.
    let mut forgotten = Vec::new();
    for (ns, retention) in plane.rules.note_retentions() {
        let cutoff = now_ms.saturating_sub(retention.as_millis() as u64);
        let ids = storage::notes_created_before(store, ns, cutoff, limit)?;
        if ids.is_empty() {
            continue;
        }
        report.notes.insert(ns.to_owned(), ids.len() as u64);
        batch.audit.push(reclaim_entry(
            ns,
            format!("{} notes older than the namespace's retention of {} deleted", ids.len(), hours(retention)),
        ));
        forgotten.extend(ids.into_iter().map(|id| (ns.to_owned(), id)));
    }
    if !forgotten.is_empty() {
        let notes = forgotten.clone();
        let apply = Arc::new(move |txn: &WriteTransaction| {
            notes.iter().try_for_each(|(ns, id)| storage::delete_note(txn, ns, id).map(drop))
        });
        batch.mutations.push(Mutation::Custom(CustomMutation { label: "semantic.reclaim", apply }));
    }

    if !batch.is_empty() || store.access().has_touches() {
        // An empty batch still saves the recency of recent reads.
        store.commit_blocking(batch)?;
    }
    for (ns, id) in &forgotten {
        plane.semantic.note_forgotten(ns, id);
    }

    // Records past their collection's retention: compare-and-set deletes,
    // so a record updated since it was listed stays.
    for (collection, retention) in &plane.rules.collections {
        let cutoff = now_ms.saturating_sub(retention.as_millis() as u64);
        let stale = records::written_before(store, collection, cutoff, limit).map_err(record_error)?;
        if stale.is_empty() {
            continue;
        }
        let count = stale.len() as u64;
        let writes = stale
            .into_iter()
            .map(|(id, version)| RecordWrite::Delete {
                collection: collection.clone(),
                id,
                expected_version: Some(version),
            })
            .collect();
        let entry = reclaim_entry(
            collection,
            format!("{count} records not updated within the collection's retention of {} deleted", hours(*retention)),
        );
        let mutation = Mutation::Records { collections: plane.collections.clone(), writes, writer: None };
        match store.commit_blocking(Batch { mutations: vec![mutation], audit: vec![entry] }) {
            Ok(_) => {
                report.records.insert(collection.clone(), count);
            }
            // A record changed after it was listed: try again next pass.
            Err(StoreError::Refused(why)) => tracing::debug!(%collection, %why, "record reclaim deferred"),
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

fn record_error(e: records::RecordError) -> StoreError {
    match e {
        records::RecordError::Store(e) => e,
        other => StoreError::Commit(other.to_string()),
    }
}

fn hours(d: Duration) -> String {
    format!("{}h", d.as_secs_f64() / 3600.0)
}

/// Runs [`reclaim_once`] every `[memory.reclaim] interval_seconds` on a
/// thread of its own until dropped.
pub struct Reclaimer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Reclaimer {
    pub fn start(store: Arc<Store>, plane: Arc<MemoryPlane>) -> Reclaimer {
        let interval = plane.rules.reclaim.interval();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("keel-reclaimer".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    match reclaim_once(&store, &plane, super::now_ms()) {
                        Ok(r) if r.total() > 0 => tracing::info!(deleted = r.total(), "reclaimed memory"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "reclaiming memory failed; retrying next interval"),
                    }
                }
            })
            .expect("spawning the reclaimer thread");
        Reclaimer { stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
