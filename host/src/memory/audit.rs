//! The audit log: one entry per gate decision and per state-changing host
//! call, append-only and hash-chained.
//!
//! Threat: someone with access to the workspace file editing, removing or
//! reordering entries to hide what a plugin or the operator did. Each entry
//! carries the sha256 of the previous entry and its own content, and the
//! database keeps the head (last sequence number and hash) beside the log;
//! `keel audit verify` recomputes the chain and names the first entry that
//! does not fit. Not stopped: an attacker who rewrites the whole chain and
//! the head consistently. Copy the head hash somewhere else (`keel audit
//! verify` prints it) to detect that too.
//!
//! Entries are written by the committer in the same transaction as the
//! change they describe, so a change without its entry is never visible.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::committer::Batch;
use super::{Store, StoreError, now_ms};

const AUDIT: TableDefinition<u64, &str> = TableDefinition::new("audit");
/// Last sequence number and hash, written with every append.
const AUDIT_HEAD: TableDefinition<&str, &str> = TableDefinition::new("audit_head");
const HEAD_KEY: &str = "head";
/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the gate decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    Allowed,
    Denied,
    /// Held for the operator (an action awaiting approval).
    Parked,
}

/// One audit record. Field order is the hashed serialization order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the log, from 1; assigned on append.
    #[serde(default)]
    pub seq: u64,
    /// Unix time in milliseconds; assigned on append.
    #[serde(default)]
    pub at_ms: u64,
    /// Who acted: a plugin name, or `operator`.
    pub actor: String,
    /// The version of the plugin that acted, for entries written on behalf
    /// of a plugin call. Absent in entries of the operator and the host,
    /// and in every entry written before keel recorded it: skipped when
    /// absent, so those entries serialize, and hash, as they always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What was attempted, e.g. `memory.put`, `plugin.install`.
    pub operation: String,
    /// What it was applied to, e.g. `hello/alice`.
    pub target: String,
    pub decision: Decision,
    /// Why, for denials and notable approvals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Hash of the previous entry (hex); assigned on append.
    #[serde(default)]
    pub prev_hash: String,
    /// sha256 over `prev_hash` and this entry without `hash` (hex).
    #[serde(default)]
    pub hash: String,
}

impl AuditEntry {
    pub fn allowed(actor: &str, operation: &str, target: impl Into<String>) -> AuditEntry {
        AuditEntry {
            seq: 0,
            at_ms: 0,
            actor: actor.to_owned(),
            version: None,
            operation: operation.to_owned(),
            target: target.into(),
            decision: Decision::Allowed,
            reason: None,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    pub fn denied(actor: &str, operation: &str, target: impl Into<String>, reason: impl Into<String>) -> AuditEntry {
        AuditEntry {
            decision: Decision::Denied,
            reason: Some(reason.into()),
            ..AuditEntry::allowed(actor, operation, target)
        }
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> AuditEntry {
        self.reason = Some(reason.into());
        self
    }

    /// Names the version of the plugin that acted.
    pub fn with_version(mut self, version: impl Into<String>) -> AuditEntry {
        self.version = Some(version.into());
        self
    }

    /// `actor@version` for entries of a plugin call, else the actor.
    pub fn actor_with_version(&self) -> String {
        match &self.version {
            Some(version) => format!("{}@{version}", self.actor),
            None => self.actor.clone(),
        }
    }

    /// The hash this entry should carry, given its other fields.
    pub fn compute_hash(&self) -> String {
        let unhashed = AuditEntry { hash: String::new(), ..self.clone() };
        let body = serde_json::to_vec(&unhashed).expect("audit entries always serialize");
        hash_body(&self.prev_hash, &body)
    }
}

/// The head of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: String,
}

impl Default for AuditHead {
    fn default() -> Self {
        AuditHead { seq: 0, hash: GENESIS_HASH.to_owned() }
    }
}

/// Where and how the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditBreak {
    #[error("audit entry #{seq} was changed after it was written (its hash does not match its content)")]
    Edited { seq: u64 },
    #[error("audit entry #{expected} is missing (the next entry is #{found})")]
    Missing { expected: u64, found: u64 },
    #[error("audit entry #{seq} does not follow entry #{prev} (an entry was removed, inserted or reordered before it)")]
    Unlinked { seq: u64, prev: u64 },
    #[error(
        "the audit log ends at entry #{last}, but entries up to #{head} were written: entries were removed from the end"
    )]
    Truncated { last: u64, head: u64 },
    #[error("audit entry #{seq} is unreadable ({detail})")]
    Unreadable { seq: u64, detail: String },
}

/// The result of a full check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub entries: u64,
    pub head: AuditHead,
    pub broken: Option<AuditBreak>,
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(AUDIT)?;
    txn.open_table(AUDIT_HEAD)?;
    Ok(())
}

fn read_head(table: &impl ReadableTable<&'static str, &'static str>) -> Result<AuditHead, StoreError> {
    match table.get(HEAD_KEY)? {
        None => Ok(AuditHead::default()),
        Some(v) => serde_json::from_str(v.value())
            .map_err(|e| StoreError::Corrupt { what: "the audit head".into(), detail: e.to_string() }),
    }
}

/// An entry's own fields (actor, operation, target, decision, reason),
/// serialized ahead of its commit by whoever submits it, so the committer
/// only numbers, stamps, chains and stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreparedEntry {
    /// A JSON object of those fields; its members go between `at_ms` and
    /// `prev_hash`.
    content: String,
}

/// The fields of [`AuditEntry`] its submitter knows, in the same order and
/// with the same attributes, so they serialize to the same bytes.
#[derive(Serialize)]
struct Content<'a> {
    actor: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
    operation: &'a str,
    target: &'a str,
    decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl PreparedEntry {
    pub(crate) fn new(entry: &AuditEntry) -> PreparedEntry {
        let content = Content {
            actor: &entry.actor,
            version: entry.version.as_deref(),
            operation: &entry.operation,
            target: &entry.target,
            decision: entry.decision,
            reason: entry.reason.as_deref(),
        };
        PreparedEntry { content: serde_json::to_string(&content).expect("audit entries always serialize") }
    }

    /// The members, without the object's braces.
    fn members(&self) -> &str {
        &self.content[1..self.content.len() - 1]
    }
}

/// Appends entries inside one write transaction, chaining each to the
/// last. The head is read once and written once per transaction, so a
/// group commit of many entries costs one head update.
pub(crate) struct Appender<'txn> {
    log: redb::Table<'txn, u64, &'static str>,
    heads: redb::Table<'txn, &'static str, &'static str>,
    head: AuditHead,
    changed: bool,
    /// The stored JSON of the entry being appended, reused across appends.
    json: String,
}

impl<'txn> Appender<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let heads = txn.open_table(AUDIT_HEAD)?;
        let head = read_head(&heads)?;
        Ok(Appender { log: txn.open_table(AUDIT)?, heads, head, changed: false, json: String::with_capacity(512) })
    }

    /// Appends `entry` stamped with the current time.
    pub(crate) fn append(&mut self, entry: AuditEntry) -> Result<u64, StoreError> {
        self.append_prepared(&PreparedEntry::new(&entry))
    }

    /// Appends `entry` with its own `at_ms` (schema migrations).
    pub(crate) fn append_keeping_time(&mut self, entry: AuditEntry) -> Result<u64, StoreError> {
        self.append_at(&PreparedEntry::new(&entry), entry.at_ms)
    }

    /// Appends a prepared entry stamped with the current time.
    pub(crate) fn append_prepared(&mut self, entry: &PreparedEntry) -> Result<u64, StoreError> {
        self.append_at(entry, now_ms())
    }

    /// Writes exactly what `serde_json` writes for the whole [`AuditEntry`]
    /// (field order is fixed, `hash` is last), hashing it with an empty
    /// `hash` as [`AuditEntry::compute_hash`] does, then filling it in.
    fn append_at(&mut self, entry: &PreparedEntry, at_ms: u64) -> Result<u64, StoreError> {
        use std::fmt::Write as _;
        let seq = self.head.seq + 1;
        let json = &mut self.json;
        json.clear();
        write!(json, r#"{{"seq":{seq},"at_ms":{at_ms},"#).expect("writing to a String");
        json.push_str(entry.members());
        json.push_str(r#","prev_hash":""#);
        json.push_str(&self.head.hash);
        json.push_str(r#"","hash":""#);
        let mut h = Sha256::new();
        h.update(self.head.hash.as_bytes());
        h.update(b"\n");
        h.update(json.as_bytes());
        h.update(b"\"}");
        let mut hash = [0u8; 64];
        hex::encode_to_slice(h.finalize(), &mut hash).expect("64 hex digits for 32 bytes");
        let hash = std::str::from_utf8(&hash).expect("hex is ASCII");
        json.push_str(hash);
        json.push_str("\"}");
        self.log.insert(seq, json.as_str())?;
        self.head.seq = seq;
        self.head.hash.clear();
        self.head.hash.push_str(hash);
        self.changed = true;
        Ok(seq)
    }

    /// Writes the new head; call before the transaction commits.
    pub(crate) fn finish(mut self) -> Result<(), StoreError> {
        if self.changed {
            let head = serde_json::to_string(&self.head).expect("heads serialize");
            self.heads.insert(HEAD_KEY, head.as_str())?;
        }
        Ok(())
    }
}

fn hash_body(prev_hash: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

fn parse_entry(seq: u64, json: &str) -> Result<AuditEntry, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt { what: format!("audit entry #{seq}"), detail: e.to_string() })
}

impl Store {
    /// Appends one entry durably, in its own batch.
    pub fn audit_append(&self, entry: AuditEntry) -> Result<u64, StoreError> {
        let receipt = self.commit_blocking(Batch::audit_only(entry))?;
        Ok(receipt.audit_seqs[0])
    }

    /// The last `n` entries, oldest first.
    pub fn audit_tail(&self, n: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let mut out = Vec::with_capacity(n.min(10_000));
        for item in table.iter()?.rev().take(n) {
            let (k, v) = item?;
            out.push(parse_entry(k.value(), v.value())?);
        }
        out.reverse();
        Ok(out)
    }

    /// Entry number `seq`, if it exists.
    pub fn audit_get(&self, seq: u64) -> Result<Option<AuditEntry>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(AUDIT)?;
        table.get(seq)?.map(|v| parse_entry(seq, v.value())).transpose()
    }

    /// A page of the log, newest first: up to `limit` entries numbered
    /// below `before` (from the end when `None`) that `keep` accepts,
    /// reading at most `scan` entries so a rare filter stays cheap. The
    /// second value is where the next page starts, `None` at the start of
    /// the log.
    pub fn audit_page(
        &self,
        before: Option<u64>,
        limit: usize,
        scan: usize,
        keep: impl Fn(&AuditEntry) -> bool,
    ) -> Result<(Vec<AuditEntry>, Option<u64>), StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        let mut next = None;
        for item in table.range(..before.unwrap_or(u64::MAX))?.rev().take(scan) {
            let (k, v) = item?;
            let seq = k.value();
            next = (seq > 1).then_some(seq);
            let entry = parse_entry(seq, v.value())?;
            if keep(&entry) {
                out.push(entry);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok((out, next))
    }

    /// Calls `f` with every entry in order (for export).
    pub fn audit_for_each(&self, mut f: impl FnMut(&AuditEntry) -> std::io::Result<()>) -> Result<u64, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let mut n = 0;
        for item in table.iter()? {
            let (k, v) = item?;
            f(&parse_entry(k.value(), v.value())?)
                .map_err(|e| StoreError::Corrupt { what: "the export output".into(), detail: e.to_string() })?;
            n += 1;
        }
        Ok(n)
    }

    /// Recomputes the whole chain and reports the first break.
    pub fn audit_verify(&self) -> Result<Verification, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let head = read_head(&txn.open_table(AUDIT_HEAD)?)?;
        let mut prev = AuditHead::default();
        let mut entries = 0;
        for item in table.iter()? {
            let (k, v) = item?;
            let seq = k.value();
            entries += 1;
            let entry = match serde_json::from_str::<AuditEntry>(v.value()) {
                Ok(e) => e,
                Err(e) => {
                    let broken = AuditBreak::Unreadable { seq, detail: e.to_string() };
                    return Ok(Verification { entries, head, broken: Some(broken) });
                }
            };
            let broken = if seq != prev.seq + 1 {
                Some(AuditBreak::Missing { expected: prev.seq + 1, found: seq })
            } else if entry.seq != seq || entry.hash != entry.compute_hash() {
                Some(AuditBreak::Edited { seq })
            } else if entry.prev_hash != prev.hash {
                Some(AuditBreak::Unlinked { seq, prev: prev.seq })
            } else {
                None
            };
            if broken.is_some() {
                return Ok(Verification { entries, head, broken });
            }
            prev = AuditHead { seq, hash: entry.hash };
        }
        let broken = (prev != head).then_some(if prev.seq < head.seq {
            AuditBreak::Truncated { last: prev.seq, head: head.seq }
        } else {
            AuditBreak::Edited { seq: prev.seq }
        });
        Ok(Verification { entries, head, broken })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    fn odd_entries() -> Vec<AuditEntry> {
        vec![
            AuditEntry::allowed("hello", "memory.put", "hello/alice"),
            AuditEntry::denied("plug\"in", "net.fetch", "https://x/\\y?q=\u{1}\t", "grant \"net\" missing\n"),
            AuditEntry::allowed("operator", "plugin.install", "ünïcödé/🦀").with_reason(""),
            AuditEntry::allowed("", "", ""),
            AuditEntry::allowed("extractor", "records.put", "leads/a").with_version("0.2.0-rc.1+\"odd\""),
        ]
    }

    #[test]
    fn prepared_entries_are_stored_exactly_as_serde_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("keel.redb")).unwrap();
        store.commit_blocking(Batch { mutations: Vec::new(), audit: odd_entries() }).unwrap();
        for e in odd_entries() {
            store.audit_append(e).unwrap();
        }

        let txn = store.db().begin_read().unwrap();
        let table = txn.open_table(AUDIT).unwrap();
        let mut expected = odd_entries().into_iter().cycle();
        for item in table.iter().unwrap() {
            let (seq, stored) = item.unwrap();
            let entry = parse_entry(seq.value(), stored.value()).unwrap();
            assert_eq!(serde_json::to_string(&entry).unwrap(), stored.value());
            assert_eq!(entry.hash, entry.compute_hash());
            let want = expected.next().unwrap();
            assert_eq!((&entry.actor, &entry.target, &entry.reason), (&want.actor, &want.target, &want.reason));
        }
        let v = store.audit_verify().unwrap();
        assert_eq!((v.entries, v.broken), (10, None));
    }

    #[test]
    fn pages_walk_the_log_newest_first_with_a_filter() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("keel.redb")).unwrap();
        for i in 0..25 {
            let op = if i % 5 == 0 { "approvals.approve" } else { "memory.put" };
            store.audit_append(AuditEntry::allowed("a", op, format!("t{i}"))).unwrap();
        }
        let (page, next) = store.audit_page(None, 10, 1000, |_| true).unwrap();
        let seqs: Vec<u64> = page.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (16..=25).rev().collect::<Vec<_>>());
        assert_eq!(next, Some(16));
        let (page, next) = store.audit_page(next, 100, 1000, |_| true).unwrap();
        assert_eq!((page.len(), page[0].seq, next), (15, 15, None));

        let approvals = |e: &AuditEntry| e.operation.starts_with("approvals.");
        let (page, _) = store.audit_page(None, 10, 1000, approvals).unwrap();
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![21, 16, 11, 6, 1]);
        // The scan bound stops a rare filter early and says where to go on.
        let (page, next) = store.audit_page(None, 10, 5, approvals).unwrap();
        assert_eq!((page.iter().map(|e| e.seq).collect::<Vec<_>>(), next), (vec![21], Some(21)));
    }
}
