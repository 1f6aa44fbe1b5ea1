//! The single writer of the workspace database, with group commit.
//!
//! Every state change (memory writes of a finished call, plugin installs,
//! audit entries) is a [`Batch`] sent to one thread. While a durable commit
//! is under way, more batches queue up; the next commit takes all of them
//! at once, so many writers share one fsync. Each batch is checked before
//! any of it is applied and either lands whole, with its audit entries, or
//! not at all.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, WriteTransaction};

use super::StoreError;
use super::audit::{self, AuditEntry};
use super::kv::{self, AccessLog, KvBound};
use super::records::{self, Collections, RecordError, RecordWrite};

/// Most batches one commit takes; bounds the latency of a single commit.
pub const MAX_BATCHES_PER_COMMIT: usize = 512;

/// One change to the database, applied inside a commit.
#[derive(Debug, Clone)]
pub enum Mutation {
    KvPut {
        namespace: String,
        key: String,
        value: Vec<u8>,
        expires_at_ms: Option<u64>,
        /// The namespace's bound at the time of the write; what does not
        /// fit is evicted, least recently used first, and audited.
        bound: KvBound,
    },
    KvDelete {
        namespace: String,
        key: String,
    },
    /// Record writes, checked (schema, compare-and-set) before any part of
    /// the batch is applied.
    Records {
        collections: Arc<Collections>,
        writes: Vec<RecordWrite>,
    },
    /// Work done by code that owns its own tables (plugin records).
    Custom(CustomMutation),
}

/// What a [`CustomMutation`] runs inside the commit.
pub type ApplyFn = dyn Fn(&WriteTransaction) -> Result<(), StoreError> + Send + Sync;

/// A mutation whose code lives with the table it changes.
#[derive(Clone)]
pub struct CustomMutation {
    pub label: &'static str,
    pub apply: Arc<ApplyFn>,
}

impl std::fmt::Debug for CustomMutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label)
    }
}

/// Changes that land together or not at all, with their audit entries.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub mutations: Vec<Mutation>,
    pub audit: Vec<AuditEntry>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.mutations.is_empty() && self.audit.is_empty()
    }

    /// A batch that only records `entry`.
    pub fn audit_only(entry: AuditEntry) -> Batch {
        Batch { mutations: Vec::new(), audit: vec![entry] }
    }
}

/// What a committed batch got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Sequence numbers of the batch's audit entries, in order.
    pub audit_seqs: Vec<u64>,
}

type Reply = Box<dyn FnOnce(Result<Receipt, StoreError>) + Send>;

struct Submission {
    batch: Batch,
    reply: Reply,
}

/// Handle to the writer thread. Dropping it commits what is queued, then
/// stops the thread.
pub struct Committer {
    tx: Option<Sender<Submission>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    pub fn start(db: Arc<Database>, access: Arc<AccessLog>) -> Committer {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("keel-committer".into())
            .spawn(move || run(&db, &access, &rx))
            .expect("spawning the committer thread");
        Committer { tx: Some(tx), thread: Some(thread) }
    }

    fn submit(&self, batch: Batch, reply: Reply) {
        let tx = self.tx.as_ref().expect("committer is running until dropped");
        if let Err(mpsc::SendError(s)) = tx.send(Submission { batch, reply }) {
            (s.reply)(Err(StoreError::Commit("the committer thread has stopped".into())));
        }
    }

    /// Commits `batch` durably and waits for it, blocking this thread.
    pub fn commit_blocking(&self, batch: Batch) -> Result<Receipt, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(batch, Box::new(move |r| drop(tx.send(r))));
        rx.recv().unwrap_or_else(|_| Err(StoreError::Commit("the committer thread has stopped".into())))
    }

    /// Commits `batch` durably; the future resolves when it is on disk.
    pub async fn commit(&self, batch: Batch) -> Result<Receipt, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(batch, Box::new(move |r| drop(tx.send(r))));
        rx.await.unwrap_or_else(|_| Err(StoreError::Commit("the committer thread has stopped".into())))
    }

    /// Queues `batch` without waiting. It is durable once any later
    /// waited-for commit returns, or when the store is dropped.
    pub fn enqueue(&self, batch: Batch) {
        self.submit(
            batch,
            Box::new(|r| {
                if let Err(e) = r {
                    tracing::error!(error = %e, "a queued change could not be committed");
                }
            }),
        );
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(db: &Database, access: &AccessLog, rx: &Receiver<Submission>) {
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(3600)) {
            Ok(s) => s,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut group = vec![first];
        while group.len() < MAX_BATCHES_PER_COMMIT {
            match rx.try_recv() {
                Ok(s) => group.push(s),
                Err(_) => break,
            }
        }
        commit_group(db, access, group);
    }
}

/// Applies every batch of `group` in one write transaction and one durable
/// commit, then answers each submitter.
/// Reads recorded in `access` since the last commit ride along.
fn commit_group(db: &Database, access: &AccessLog, group: Vec<Submission>) {
    let result = (|| -> Result<Vec<Result<Receipt, StoreError>>, StoreError> {
        let txn = db.begin_write()?;
        kv::apply_touches(&txn, access.take_touches())?;
        let mut audit = audit::Appender::open(&txn)?;
        let mut outcomes = Vec::with_capacity(group.len());
        for s in &group {
            outcomes.push(match check_batch(&txn, &s.batch) {
                Ok(()) => Ok(apply_batch(&txn, access, &mut audit, &s.batch)?),
                Err(refused) => Err(refused),
            });
        }
        audit.finish()?;
        let clock = access.unsaved();
        if let Some(clock) = clock {
            kv::save_clock(&txn, clock)?;
        }
        txn.commit()?;
        if let Some(clock) = clock {
            access.mark_saved(clock);
        }
        Ok(outcomes)
    })();
    let outcomes = match result {
        Ok(o) => o,
        Err(e) => {
            let message = e.to_string();
            for s in group {
                (s.reply)(Err(StoreError::Commit(message.clone())));
            }
            return;
        }
    };
    for (s, outcome) in group.into_iter().zip(outcomes) {
        (s.reply)(outcome);
    }
}

/// Refuses a batch whose checked writes would fail (a version conflict, a
/// schema violation), before any of it is applied. Other batches of the
/// same commit are unaffected.
fn check_batch(txn: &WriteTransaction, batch: &Batch) -> Result<(), StoreError> {
    for m in &batch.mutations {
        if let Mutation::Records { collections, writes } = m {
            records::check(txn, collections, writes).map_err(|e| match e {
                RecordError::Store(e) => e,
                refused => StoreError::Refused(refused.to_string()),
            })?;
        }
    }
    Ok(())
}

/// Applies one batch that passed [`check_batch`]. Any failure here aborts
/// the whole commit (the transaction is dropped), so no batch is half
/// applied.
fn apply_batch(
    txn: &WriteTransaction,
    access: &AccessLog,
    audit: &mut audit::Appender,
    batch: &Batch,
) -> Result<Receipt, StoreError> {
    let mut evictions = Vec::new();
    for m in &batch.mutations {
        match m {
            Mutation::KvPut { namespace, key, value, expires_at_ms, bound } => {
                let evicted = kv::apply_put(txn, namespace, key, value, *expires_at_ms, *bound, access.tick())?;
                if !evicted.is_empty() {
                    evictions.push(eviction_entry(namespace, &evicted));
                }
            }
            Mutation::KvDelete { namespace, key } => {
                kv::apply_delete(txn, namespace, key)?;
            }
            Mutation::Records { collections, writes } => {
                records::apply(txn, collections, writes).map_err(|e| match e {
                    RecordError::Store(e) => e,
                    other => StoreError::Commit(format!("a checked record write failed: {other}")),
                })?;
            }
            Mutation::Custom(c) => (c.apply)(txn)?,
        }
    }
    let mut audit_seqs = Vec::with_capacity(batch.audit.len());
    for entry in &batch.audit {
        audit_seqs.push(audit.append(entry.clone())?);
    }
    for entry in evictions {
        audit.append(entry)?;
    }
    Ok(Receipt { audit_seqs })
}

/// Most evicted keys one audit entry names; the count is always exact.
const MAX_EVICTED_KEYS_NAMED: usize = 8;

/// The audit entry for entries a put pushed out of `namespace`.
fn eviction_entry(namespace: &str, evicted: &[String]) -> AuditEntry {
    let mut named = evicted.iter().take(MAX_EVICTED_KEYS_NAMED).cloned().collect::<Vec<_>>().join(", ");
    if evicted.len() > MAX_EVICTED_KEYS_NAMED {
        named.push_str(", ...");
    }
    let mut entry = AuditEntry::allowed("host", "memory.evict", format!("{namespace}/{{{named}}}"));
    entry.reason =
        Some(format!("{} least recently used entries evicted: the namespace was over its cache bound", evicted.len()));
    entry
}
