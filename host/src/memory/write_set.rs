//! The writes of one call, held back until the call succeeds.
//!
//! A plugin's memory writes land together, with their audit entries, when
//! its `handle` returns an outcome, or not at all when it traps, times out
//! or returns an error. Reads inside the call see the call's own writes.

use std::collections::BTreeMap;

use super::audit::AuditEntry;
use super::committer::{Batch, Mutation};

/// A pending key/value change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvWrite {
    Put { value: Vec<u8>, expires_at_ms: Option<u64> },
    Delete,
}

/// Everything one call wants to write.
#[derive(Debug, Default)]
pub struct WriteSet {
    kv: BTreeMap<(String, String), KvWrite>,
    audit: Vec<AuditEntry>,
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

    pub fn is_empty(&self) -> bool {
        self.kv.is_empty() && self.audit.is_empty()
    }

    /// The batch to hand to the committer.
    pub fn into_batch(self) -> Batch {
        let mutations = self
            .kv
            .into_iter()
            .map(|((namespace, key), w)| match w {
                KvWrite::Put { value, expires_at_ms } => Mutation::KvPut { namespace, key, value, expires_at_ms },
                KvWrite::Delete => Mutation::KvDelete { namespace, key },
            })
            .collect();
        Batch { mutations, audit: self.audit }
    }
}
