//! The writes of one call, held back until the call succeeds.
//!
//! A plugin's memory writes (key/value entries, records, notes) land
//! together, with their audit entries, when its `handle` returns an
//! outcome, or not at all when it traps, times out or returns an error.
//! Reads inside the call see the call's own key/value and record writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use redb::WriteTransaction;
use serde_json::Value;

use super::audit::AuditEntry;
use super::committer::{Batch, CustomMutation, Mutation};
use super::plane::MemoryPlane;
use super::records::{RecordWrite, RecordWriter};
use super::semantic::{self, PreparedNote};

/// A pending key/value change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvWrite {
    Put { value: Vec<u8>, expires_at_ms: Option<u64> },
    Delete,
}

/// What a record will be once the call's writes land.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRecord {
    pub version: u64,
    /// `None` once deleted.
    pub data: Option<Value>,
}

/// Everything one call wants to write.
#[derive(Debug, Default)]
pub struct WriteSet {
    kv: BTreeMap<(String, String), KvWrite>,
    records: Vec<RecordWrite>,
    /// Who the record writes are for (one plugin per call).
    record_writer: Option<RecordWriter>,
    record_state: BTreeMap<(String, String), PendingRecord>,
    notes: Vec<(String, PreparedNote)>,
    forgotten: Vec<(String, String)>,
    /// Writes of other parts of the host (the kernel's outbox and
    /// approvals), landing with the memory writes.
    effects: Vec<Mutation>,
    audit: Vec<AuditEntry>,
}

/// What the semantic index must learn once the batch has committed.
#[derive(Debug, Default)]
pub struct IndexFeed {
    notes: Vec<(String, PreparedNote)>,
    forgotten: Vec<(String, String)>,
}

impl IndexFeed {
    /// Tells the index about the committed notes and deletions, in the
    /// order the batch applied them (inserts, then deletes).
    pub fn apply(self, plane: &MemoryPlane) {
        for (namespace, p) in self.notes {
            plane.semantic.note_committed(&namespace, p.note, &p.vector);
        }
        for (namespace, id) in &self.forgotten {
            plane.semantic.note_forgotten(namespace, id);
        }
    }
}

impl WriteSet {
    /// The call's own pending write for `key`, if any.
    pub fn kv(&self, namespace: &str, key: &str) -> Option<&KvWrite> {
        self.kv.get(&(namespace.to_owned(), key.to_owned()))
    }

    pub fn put(&mut self, namespace: &str, key: &str, value: Vec<u8>, expires_at_ms: Option<u64>, entry: AuditEntry) {
        self.kv.insert((namespace.to_owned(), key.to_owned()), KvWrite::Put { value, expires_at_ms });
        self.audit.push(entry);
    }

    pub fn delete(&mut self, namespace: &str, key: &str, entry: AuditEntry) {
        self.kv.insert((namespace.to_owned(), key.to_owned()), KvWrite::Delete);
        self.audit.push(entry);
    }

    /// Pending writes of `namespace` whose key starts with `prefix`.
    pub fn kv_prefixed<'a>(
        &'a self,
        namespace: &'a str,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a KvWrite)> {
        self.kv
            .range((namespace.to_owned(), prefix.to_owned())..)
            .take_while(move |((ns, key), _)| ns == namespace && key.starts_with(prefix))
            .map(|((_, key), w)| (key.as_str(), w))
    }

    /// The record as the call's own writes left it, if it wrote it.
    pub fn record(&self, collection: &str, id: &str) -> Option<&PendingRecord> {
        self.record_state.get(&(collection.to_owned(), id.to_owned()))
    }

    /// Queues a checked record write for `writer` that leaves the record
    /// at `version`; the commit checks ownership again.
    pub fn record_write(&mut self, write: RecordWrite, writer: &RecordWriter, version: u64, entry: AuditEntry) {
        if self.record_writer.is_none() {
            self.record_writer = Some(writer.clone());
        }
        let data = match &write {
            RecordWrite::Put { data, .. } => Some(data.clone()),
            RecordWrite::Delete { .. } => None,
        };
        let key = (write.collection().to_owned(), write.id().to_owned());
        self.record_state.insert(key, PendingRecord { version, data });
        self.records.push(write);
        self.audit.push(entry);
    }

    pub fn remember(&mut self, namespace: &str, note: PreparedNote, entry: AuditEntry) {
        self.notes.push((namespace.to_owned(), note));
        self.audit.push(entry);
    }

    pub fn has_pending_note(&self, namespace: &str, id: &str) -> bool {
        self.notes.iter().any(|(ns, n)| ns == namespace && n.note.id == id)
    }

    pub fn forget(&mut self, namespace: &str, id: &str, entry: AuditEntry) {
        self.notes.retain(|(ns, n)| !(ns == namespace && n.note.id == id));
        self.forgotten.push((namespace.to_owned(), id.to_owned()));
        self.audit.push(entry);
    }

    /// Adds writes owned by another part of the host, with their entry.
    pub fn effect(&mut self, mutations: Vec<Mutation>, entry: AuditEntry) {
        self.effects.extend(mutations);
        self.audit.push(entry);
    }

    pub fn is_empty(&self) -> bool {
        self.effects.is_empty()
            && self.kv.is_empty()
            && self.records.is_empty()
            && self.notes.is_empty()
            && self.forgotten.is_empty()
            && self.audit.is_empty()
    }

    /// The batch to hand to the committer, and what to tell the semantic
    /// index once it has committed.
    pub fn into_batch(self, plane: &MemoryPlane) -> (Batch, IndexFeed) {
        let mut mutations: Vec<Mutation> = self
            .kv
            .into_iter()
            .map(|((namespace, key), w)| match w {
                KvWrite::Put { value, expires_at_ms } => {
                    let bound = plane.rules.kv_bound(&namespace);
                    Mutation::KvPut { namespace, key, value, expires_at_ms, bound }
                }
                KvWrite::Delete => Mutation::KvDelete { namespace, key },
            })
            .collect();
        if !self.records.is_empty() {
            mutations.push(Mutation::Records {
                collections: plane.collections.clone(),
                writes: self.records,
                writer: self.record_writer,
            });
        }
        let mut by_namespace: BTreeMap<String, Vec<PreparedNote>> = BTreeMap::new();
        for (ns, note) in &self.notes {
            by_namespace.entry(ns.clone()).or_default().push(note.clone());
        }
        for (ns, notes) in by_namespace {
            mutations.push(semantic::insert_mutation(&ns, Arc::new(notes)));
        }
        if !self.forgotten.is_empty() {
            let forgotten = self.forgotten.clone();
            let apply = Arc::new(move |txn: &WriteTransaction| {
                forgotten.iter().try_for_each(|(ns, id)| semantic::delete_note(txn, ns, id).map(drop))
            });
            mutations.push(Mutation::Custom(CustomMutation { label: "semantic.forget", apply }));
        }
        mutations.extend(self.effects);
        let feed = IndexFeed { notes: self.notes, forgotten: self.forgotten };
        (Batch { mutations, audit: self.audit }, feed)
    }
}
