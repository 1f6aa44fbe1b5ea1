//! The single writer of the workspace database, with group commit.
//!
//! Every state change (memory writes of a finished call, plugin installs,
//! audit entries) is a [`Batch`] sent to one thread. While a durable commit
//! is under way, more batches queue up; the next commit takes all of them
//! at once, so many writers share one fsync. Each batch is checked before
//! any of it is applied and either lands whole, with its audit entries, or
//! not at all.
//!
//! The thread is the bottleneck under load, so work that needs no database
//! state happens before a batch reaches it: the submitter serializes its
//! audit entries (`audit::PreparedEntry`), leaving the writer to number,
//! chain and store them. A commit's time is mostly the flush, so a group
//! waits briefly for writers that are about to come back (see `Intake`);
//! numbers in `docs/perf.md`.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, WriteTransaction};

use super::StoreError;
use super::audit::{self, AuditEntry, PreparedEntry};
use super::kv::{self, AccessLog, KvBound};
use super::records::{self, Collections, RecordError, RecordWrite, RecordWriter};

/// Most batches one commit takes; with a time budget, bounds the latency of
/// a single commit.
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
    /// Record writes, checked (schema, compare-and-set, ownership) before
    /// any part of the batch is applied.
    Records {
        collections: Arc<Collections>,
        writes: Vec<RecordWrite>,
        /// The plugin the writes are made for; `None`: the operator or the
        /// host.
        writer: Option<RecordWriter>,
    },
    /// Work done by code that owns its own tables (plugin records).
    Custom(CustomMutation),
    /// A [`CustomMutation`] that decides inside the commit which audit
    /// entries it makes (a workflow run finishing with its last step only
    /// if nobody paused or cancelled it meanwhile).
    Audited(AuditedMutation),
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

/// What an [`AuditedMutation`] runs inside the commit: its audit entries
/// follow the batch's own.
pub type AuditedApplyFn = dyn Fn(&WriteTransaction) -> Result<Vec<AuditEntry>, StoreError> + Send + Sync;

/// A mutation whose audit entries depend on what it finds in the database.
#[derive(Clone)]
pub struct AuditedMutation {
    pub label: &'static str,
    pub apply: Arc<AuditedApplyFn>,
}

impl std::fmt::Debug for AuditedMutation {
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

/// Where a batch's outcome goes.
enum Reply {
    Blocking(mpsc::SyncSender<Result<Receipt, StoreError>>),
    Async(tokio::sync::oneshot::Sender<Result<Receipt, StoreError>>),
    /// Nobody waits: failures are logged.
    Queued,
}

impl Reply {
    fn send(self, outcome: Result<Receipt, StoreError>) {
        match self {
            Reply::Blocking(tx) => drop(tx.send(outcome)),
            Reply::Async(tx) => drop(tx.send(outcome)),
            Reply::Queued => {
                if let Err(e) = outcome {
                    tracing::error!(error = %e, "a queued change could not be committed");
                }
            }
        }
    }
}

/// A batch on its way to the writer thread. Its audit entries were
/// serialized by the submitter, off the writer's critical path.
struct Submission {
    /// The batch, without its audit entries.
    batch: Batch,
    audit: Vec<PreparedEntry>,
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

    fn submit(&self, mut batch: Batch, reply: Reply) {
        let audit = std::mem::take(&mut batch.audit).iter().map(PreparedEntry::new).collect();
        let tx = self.tx.as_ref().expect("committer is running until dropped");
        if let Err(mpsc::SendError(s)) = tx.send(Submission { batch, audit, reply }) {
            s.reply.send(Err(StoreError::Commit("the committer thread has stopped".into())));
        }
    }

    /// Commits `batch` durably and waits for it, blocking this thread.
    pub fn commit_blocking(&self, batch: Batch) -> Result<Receipt, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(batch, Reply::Blocking(tx));
        rx.recv().unwrap_or_else(|_| Err(StoreError::Commit("the committer thread has stopped".into())))
    }

    /// Commits `batch` durably; the future resolves when it is on disk.
    pub async fn commit(&self, batch: Batch) -> Result<Receipt, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(batch, Reply::Async(tx));
        rx.await.unwrap_or_else(|_| Err(StoreError::Commit("the committer thread has stopped".into())))
    }

    /// Queues `batch` without waiting. It is durable once any later
    /// waited-for commit returns, or when the store is dropped.
    pub fn enqueue(&self, batch: Batch) {
        self.submit(batch, Reply::Queued);
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
    let mut group = Vec::with_capacity(MAX_BATCHES_PER_COMMIT);
    let (mut last_len, mut last_took) = (0, Duration::ZERO);
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(3600)) {
            Ok(s) => s,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let started = Instant::now();
        group.push(first);
        if answered_without_commit(access, rx, &mut group) {
            continue;
        }
        let linger_until = (last_len >= LINGER_AFTER_GROUP).then(|| started + LINGER_MAX.min(last_took / 2));
        last_len = commit_group(db, access, &mut group, &Intake { rx, started, linger_until });
        last_took = started.elapsed();
    }
}

/// Answers a group made only of empty batches (a caller waiting until
/// everything before it is durable, as `Gate::flush` does) without a write
/// transaction: the committer applies groups in order, so everything queued
/// before them is on disk already. Takes what is queued now into `group`
/// first; returns false (leaving `group` to commit) if any of it writes, or
/// if reads' recency or the clock must be saved.
fn answered_without_commit(access: &AccessLog, rx: &Receiver<Submission>, group: &mut Vec<Submission>) -> bool {
    while group.len() < MAX_BATCHES_PER_COMMIT {
        match rx.try_recv() {
            Ok(s) => group.push(s),
            Err(_) => break,
        }
    }
    let empty = group.iter().all(|s| s.batch.is_empty() && s.audit.is_empty());
    if !empty || access.has_touches() || access.unsaved().is_some() {
        return false;
    }
    for s in group.drain(..) {
        s.reply.send(Ok(Receipt { audit_seqs: Vec::new() }));
    }
    true
}

/// A group stops growing after this long, so one commit's duration stays
/// bounded whatever the batches hold; the rest wait for the next commit.
const GROUP_BUDGET: Duration = Duration::from_millis(2);
/// Only after a commit shared by at least this many batches does the next
/// one wait for more (see [`Intake`]): below it, waiting costs more than it
/// saves.
const LINGER_AFTER_GROUP: usize = 16;
/// How long an empty queue is waited on before the group is committed (the
/// OS timer slack adds up to 50 µs).
const LINGER_QUIET: Duration = Duration::from_micros(10);
/// The oldest a group may be and still wait for more; also at most half the
/// last commit's time.
const LINGER_MAX: Duration = Duration::from_micros(500);

/// Where the batches of the group being applied come from.
///
/// Batches that arrive while a group is applied join it, up to
/// [`MAX_BATCHES_PER_COMMIT`] and [`GROUP_BUDGET`]. With many writers that
/// each wait for their commit and then write again, the ones just answered
/// come back over the next few hundred microseconds; if the group were
/// committed the moment the queue ran dry, it would hold the batches that
/// arrived during the last commit and few of the rest, which would wait
/// for the commit after: writers settle into two alternating groups and
/// each waits for two flushes. So after a commit shared by many batches,
/// an empty queue is waited on while batches keep coming (until none came
/// for [`LINGER_QUIET`], or the group is `linger_until` old), and one flush
/// serves them all. The waiting overlaps with applying what has come.
struct Intake<'a> {
    rx: &'a Receiver<Submission>,
    started: Instant,
    linger_until: Option<Instant>,
}

impl Intake<'_> {
    /// Moves the next batches into `group`; false when it is complete.
    fn more(&self, group: &mut Vec<Submission>) -> bool {
        if group.len() >= MAX_BATCHES_PER_COMMIT || self.started.elapsed() >= GROUP_BUDGET {
            return false;
        }
        let before = group.len();
        while group.len() < MAX_BATCHES_PER_COMMIT {
            match self.rx.try_recv() {
                Ok(s) => group.push(s),
                Err(_) => break,
            }
        }
        if group.len() > before {
            return true;
        }
        let left = self.linger_until.map_or(Duration::ZERO, |t| t.saturating_duration_since(Instant::now()));
        if left.is_zero() {
            return false;
        }
        match self.rx.recv_timeout(LINGER_QUIET.min(left)) {
            Ok(s) => {
                group.push(s);
                true
            }
            // Quiet, or every sender is gone: commit what is here.
            Err(_) => false,
        }
    }
}

/// Applies the batches of `group`, and those `intake` adds, in one write
/// transaction and one durable commit, then answers each submitter. Leaves
/// `group` empty for reuse and returns how many batches the commit took.
/// Reads recorded in `access` since the last commit ride along.
fn commit_group(db: &Database, access: &AccessLog, group: &mut Vec<Submission>, intake: &Intake<'_>) -> usize {
    let result = (|| -> Result<Vec<Result<Receipt, StoreError>>, StoreError> {
        let txn = db.begin_write()?;
        kv::apply_touches(&txn, access.take_touches())?;
        let mut audit = audit::Appender::open(&txn)?;
        let mut outcomes = Vec::with_capacity(MAX_BATCHES_PER_COMMIT);
        loop {
            for s in &group[outcomes.len()..] {
                outcomes.push(match check_batch(&txn, &s.batch) {
                    Ok(()) => Ok(apply_batch(&txn, access, &mut audit, &s.batch, &s.audit)?),
                    Err(refused) => Err(refused),
                });
            }
            if !intake.more(group) {
                break;
            }
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
    let taken = group.len();
    match result {
        Ok(outcomes) => {
            for (s, outcome) in group.drain(..).zip(outcomes) {
                s.reply.send(outcome);
            }
        }
        Err(e) => {
            let message = e.to_string();
            for s in group.drain(..) {
                s.reply.send(Err(StoreError::Commit(message.clone())));
            }
        }
    }
    taken
}

/// Refuses a batch whose checked writes would fail (a version conflict, a
/// schema violation), before any of it is applied. Other batches of the
/// same commit are unaffected.
fn check_batch(txn: &WriteTransaction, batch: &Batch) -> Result<(), StoreError> {
    for m in &batch.mutations {
        if let Mutation::Records { collections, writes, writer } = m {
            records::check(txn, collections, writes, writer.as_ref()).map_err(|e| match e {
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
    entries: &[PreparedEntry],
) -> Result<Receipt, StoreError> {
    let (mut evictions, mut decided) = (Vec::new(), Vec::new());
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
            Mutation::Records { collections, writes, writer } => {
                records::apply(txn, collections, writes, writer.as_ref()).map_err(|e| match e {
                    RecordError::Store(e) => e,
                    other => StoreError::Commit(format!("a checked record write failed: {other}")),
                })?;
            }
            Mutation::Custom(c) => (c.apply)(txn)?,
            Mutation::Audited(c) => decided.extend((c.apply)(txn)?),
        }
    }
    let mut audit_seqs = Vec::with_capacity(entries.len());
    for entry in entries {
        audit_seqs.push(audit.append_prepared(entry)?);
    }
    for entry in decided {
        audit_seqs.push(audit.append(entry)?);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Store;

    /// Many writers at once: every batch lands whole (its entries are
    /// consecutive in the chain), no sequence number is given twice, and
    /// the chain verifies.
    #[test]
    fn concurrent_writers_share_commits_and_keep_batches_whole() {
        const WRITERS: usize = 32;
        const BATCHES: usize = 40;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("keel.redb")).unwrap());
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..BATCHES)
                        .map(|b| {
                            let entry = |i| AuditEntry::allowed("test", "memory.put", format!("w{w}/b{b}/{i}"));
                            let batch = Batch { mutations: Vec::new(), audit: vec![entry(0), entry(1), entry(2)] };
                            store.commit_blocking(batch).unwrap().audit_seqs
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for w in writers {
            for batch in w.join().unwrap() {
                assert_eq!(batch.len(), 3);
                assert!(batch.windows(2).all(|p| p[1] == p[0] + 1), "{batch:?}");
                seqs.extend(batch);
            }
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=(WRITERS * BATCHES * 3) as u64).collect::<Vec<_>>());
        let v = store.audit_verify().unwrap();
        assert_eq!((v.entries, v.broken), ((WRITERS * BATCHES * 3) as u64, None));
    }
}
