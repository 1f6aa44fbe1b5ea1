//! Notes and their vectors in redb: the semantic store's source of truth.
//!
//! Writes are free functions on a `WriteTransaction`, so the committer can
//! put many callers' notes, and their audit entries, into one commit; after
//! the commit, hand each note to [`SemanticIndex::note_committed`]
//! (`super::SemanticIndex`). Both tables are keyed by (namespace, note id).
//! Reads treat missing tables as empty, so a workspace created before these
//! tables existed needs no migration to be read. A note's owner (the
//! plugin that remembered it) is an optional member of its row, absent for
//! notes of the operator and for notes written before owners were
//! recorded, so older rows read as unowned, shared notes.

use std::hash::{BuildHasher, Hasher};
use std::ops::ControlFlow;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{
    Key, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, Value, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::memory::{Store, StoreError};

/// Note rows: compact JSON of everything but the vector.
const NOTES: TableDefinition<(&str, &str), &str> = TableDefinition::new("semantic_notes");
/// Vectors: little-endian f32s, kept apart so reading notes stays cheap.
const VECTORS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("semantic_vectors");

/// One remembered note as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredNote {
    /// Unique within the namespace; see [`new_note_id`].
    pub id: String,
    pub text: String,
    /// Sorted and without duplicates.
    pub tags: Vec<String>,
    /// Anything the writer wants back with the note.
    pub metadata: serde_json::Value,
    /// Unix time in milliseconds; drives time decay.
    pub created_at_ms: u64,
    /// [`Embedder::id`](super::Embedder::id) of the model that made the vector.
    pub embedder: String,
    /// The plugin that remembered the note; `None`: unowned (the operator's,
    /// or written before keel recorded owners), readable by every plugin
    /// granted the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The stored row: a note without its id, which is the key.
#[derive(Serialize)]
struct RowRef<'a> {
    text: &'a str,
    tags: &'a [String],
    metadata: &'a serde_json::Value,
    created_at_ms: u64,
    embedder: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    text: String,
    tags: Vec<String>,
    metadata: serde_json::Value,
    created_at_ms: u64,
    embedder: String,
    #[serde(default)]
    owner: Option<String>,
}

/// Creates both tables; called when the workspace database is migrated.
/// Writing a note creates them too.
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(NOTES)?;
    txn.open_table(VECTORS)?;
    Ok(())
}

/// Writes `note` and its `vector` in `namespace`; visible when `txn`
/// commits. A note with the same id is replaced. The caller has validated
/// the note ([`SemanticIndex::prepare`](super::SemanticIndex::prepare)
/// does).
pub fn insert_note(
    txn: &WriteTransaction,
    namespace: &str,
    note: &StoredNote,
    vector: &[f32],
) -> Result<(), StoreError> {
    let row = RowRef {
        text: &note.text,
        tags: &note.tags,
        metadata: &note.metadata,
        created_at_ms: note.created_at_ms,
        embedder: &note.embedder,
        owner: note.owner.as_deref(),
    };
    let json = serde_json::to_string(&row).expect("note rows always serialize");
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    txn.open_table(NOTES)?.insert((namespace, note.id.as_str()), json.as_str())?;
    txn.open_table(VECTORS)?.insert((namespace, note.id.as_str()), bytes.as_slice())?;
    Ok(())
}

/// Deletes note `id` of `namespace` and its vector; returns whether the
/// note existed.
pub fn delete_note(txn: &WriteTransaction, namespace: &str, id: &str) -> Result<bool, StoreError> {
    let existed = txn.open_table(NOTES)?.remove((namespace, id))?.is_some();
    txn.open_table(VECTORS)?.remove((namespace, id))?;
    Ok(existed)
}

/// Reads note `id` of `namespace`.
pub fn get_note(store: &Store, namespace: &str, id: &str) -> Result<Option<StoredNote>, StoreError> {
    let txn = store.db().begin_read()?;
    let Some(notes) = open_read(&txn, NOTES)? else { return Ok(None) };
    notes.get((namespace, id))?.map(|row| parse_note(namespace, id, row.value())).transpose()
}

/// Reads the vector of note `id` of `namespace`.
pub fn get_vector(store: &Store, namespace: &str, id: &str) -> Result<Option<Vec<f32>>, StoreError> {
    let txn = store.db().begin_read()?;
    let Some(vectors) = open_read(&txn, VECTORS)? else { return Ok(None) };
    vectors.get((namespace, id))?.map(|bytes| parse_vector(namespace, id, bytes.value())).transpose()
}

/// Calls `f` with every note and its vector, namespace by namespace and in
/// id order (which is creation order for ids from [`new_note_id`]), all
/// from one read snapshot.
pub(crate) fn for_each_note(store: &Store, mut f: impl FnMut(&str, StoredNote, Vec<f32>)) -> Result<(), StoreError> {
    let txn = store.db().begin_read()?;
    let (Some(notes), Some(vectors)) = (open_read(&txn, NOTES)?, open_read(&txn, VECTORS)?) else { return Ok(()) };
    for item in notes.iter()? {
        let (key, row) = item?;
        let (namespace, id) = key.value();
        let note = parse_note(namespace, id, row.value())?;
        let bytes = vectors
            .get((namespace, id))?
            .ok_or_else(|| corrupt(namespace, id, "vector of".into(), "the vector is missing".into()))?;
        f(namespace, note, parse_vector(namespace, id, bytes.value())?);
    }
    Ok(())
}

/// A note whose vector another embedder made (or that is malformed), as
/// [`notes_to_reembed`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleNote {
    pub namespace: String,
    pub id: String,
    pub text: String,
    /// The embedder that made the stored vector.
    pub embedder: String,
}

/// Every note whose vector was not made by embedder `embedder_id` with
/// `dim` numbers, from one read snapshot, in key order.
pub fn notes_to_reembed(store: &Store, embedder_id: &str, dim: usize) -> Result<Vec<StaleNote>, StoreError> {
    let txn = store.db().begin_read()?;
    let (Some(notes), Some(vectors)) = (open_read(&txn, NOTES)?, open_read(&txn, VECTORS)?) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in notes.iter()? {
        let (key, row) = item?;
        let (namespace, id) = key.value();
        let note = parse_note(namespace, id, row.value())?;
        let fits =
            note.embedder == embedder_id && vectors.get((namespace, id))?.is_some_and(|v| v.value().len() == dim * 4);
        if !fits {
            out.push(StaleNote {
                namespace: namespace.to_owned(),
                id: id.to_owned(),
                text: note.text,
                embedder: note.embedder,
            });
        }
    }
    Ok(out)
}

/// Replaces the vector of `stale` and names `embedder_id` as its maker, if
/// the note is still stored with the same text and embedder (a note
/// forgotten or rewritten meanwhile is left alone); returns the note as
/// now stored.
pub fn reembed_note(
    txn: &WriteTransaction,
    stale: &StaleNote,
    embedder_id: &str,
    vector: &[f32],
) -> Result<Option<StoredNote>, StoreError> {
    let (namespace, id) = (stale.namespace.as_str(), stale.id.as_str());
    let current = match txn.open_table(NOTES)?.get((namespace, id))? {
        Some(row) => parse_note(namespace, id, row.value())?,
        None => return Ok(None),
    };
    if current.text != stale.text || current.embedder != stale.embedder {
        return Ok(None);
    }
    let note = StoredNote { embedder: embedder_id.to_owned(), ..current };
    insert_note(txn, namespace, &note, vector)?;
    Ok(Some(note))
}

/// Up to `limit` ids of notes in `namespace` created before `cutoff_ms`,
/// oldest first, for retention. Ids sort by creation time, so the walk
/// stops at the first younger note.
pub fn notes_created_before(
    store: &Store,
    namespace: &str,
    cutoff_ms: u64,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    walk_namespace(store, namespace, |id, note| {
        if note.created_at_ms >= cutoff_ms {
            return ControlFlow::Break(());
        }
        out.push(id.to_owned());
        if out.len() < limit { ControlFlow::Continue(()) } else { ControlFlow::Break(()) }
    })?;
    Ok(out)
}

/// Ids of the notes of `namespace` that plugin `owner` remembered, for
/// `keel remove --purge`.
pub fn notes_owned_by(store: &Store, namespace: &str, owner: &str) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    walk_namespace(store, namespace, |id, note| {
        if note.owner.as_deref() == Some(owner) {
            out.push(id.to_owned());
        }
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// Calls `visit` with the notes of `namespace` in id (that is, creation)
/// order, until it breaks or the namespace ends.
fn walk_namespace(
    store: &Store,
    namespace: &str,
    mut visit: impl FnMut(&str, StoredNote) -> ControlFlow<()>,
) -> Result<(), StoreError> {
    let txn = store.db().begin_read()?;
    let Some(notes) = open_read(&txn, NOTES)? else { return Ok(()) };
    for item in notes.range((namespace, "")..)? {
        let (key, row) = item?;
        let (ns, id) = key.value();
        if ns != namespace || visit(id, parse_note(ns, id, row.value())?).is_break() {
            break;
        }
    }
    Ok(())
}

/// Notes per namespace (a scan of the keys), for `keel memory stats`.
pub fn note_counts(store: &Store) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
    let txn = store.db().begin_read()?;
    let mut out = std::collections::BTreeMap::<String, u64>::new();
    if let Some(notes) = open_read(&txn, NOTES)? {
        for item in notes.iter()? {
            *out.entry(item?.0.value().0.to_owned()).or_default() += 1;
        }
    }
    Ok(out)
}

/// A new note id: 12 hex digits of `created_at_ms`, so ids sort by time,
/// then 16 hex digits unique to this process and call.
pub fn new_note_id(created_at_ms: u64) -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS once per process: a new seed per
    // run keeps ids unique across restarts within the same millisecond.
    let seed = *SEED.get_or_init(|| std::collections::hash_map::RandomState::new().build_hasher().finish());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{created_at_ms:012x}{:016x}", splitmix64(seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

/// The splitmix64 output function: a bijection that mixes every bit.
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Opens a table for reading; `None` if no note was ever written.
fn open_read<K: Key + 'static, V: Value + 'static>(
    txn: &ReadTransaction,
    table: TableDefinition<K, V>,
) -> Result<Option<ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(table) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn parse_note(namespace: &str, id: &str, json: &str) -> Result<StoredNote, StoreError> {
    let row: Row = serde_json::from_str(json).map_err(|e| corrupt(namespace, id, String::new(), e.to_string()))?;
    Ok(StoredNote {
        id: id.to_owned(),
        text: row.text,
        tags: row.tags,
        metadata: row.metadata,
        created_at_ms: row.created_at_ms,
        embedder: row.embedder,
        owner: row.owner,
    })
}

fn parse_vector(namespace: &str, id: &str, bytes: &[u8]) -> Result<Vec<f32>, StoreError> {
    if !bytes.len().is_multiple_of(4) {
        let detail = format!("{} bytes is not a whole number of f32s", bytes.len());
        return Err(corrupt(namespace, id, "vector of".into(), detail));
    }
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

fn corrupt(namespace: &str, id: &str, prefix: String, detail: String) -> StoreError {
    let what = format!("{prefix} semantic note {namespace}/{id}").trim_start().to_owned();
    StoreError::Corrupt { what, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(id: &str, text: &str) -> StoredNote {
        StoredNote {
            id: id.into(),
            text: text.into(),
            tags: vec!["a".into(), "b".into()],
            metadata: serde_json::json!({"source": "test"}),
            created_at_ms: 42,
            embedder: "e1".into(),
            owner: None,
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("keel.redb")).unwrap();
        (dir, store)
    }

    fn all(store: &Store) -> Vec<(String, StoredNote, Vec<f32>)> {
        let mut out = Vec::new();
        for_each_note(store, |ns, n, v| out.push((ns.to_owned(), n, v))).unwrap();
        out
    }

    #[test]
    fn reading_before_any_note_was_written_finds_nothing() {
        let (_dir, store) = store();
        assert!(all(&store).is_empty());
        assert_eq!(get_note(&store, "ns", "x").unwrap(), None);
        assert_eq!(get_vector(&store, "ns", "x").unwrap(), None);
    }

    #[test]
    fn notes_and_vectors_round_trip_and_delete() {
        let (_dir, store) = store();
        let txn = store.db().begin_write().unwrap();
        create_tables(&txn).unwrap();
        insert_note(&txn, "ns", &note("01", "first"), &[0.5, -0.25]).unwrap();
        insert_note(&txn, "ns", &note("02", "second"), &[1.0, 0.0]).unwrap();
        insert_note(&txn, "other", &note("01", "elsewhere"), &[0.0, 1.0]).unwrap();
        txn.commit().unwrap();

        assert_eq!(get_note(&store, "ns", "01").unwrap(), Some(note("01", "first")));
        assert_eq!(get_vector(&store, "ns", "01").unwrap(), Some(vec![0.5, -0.25]));
        let listed: Vec<(String, String)> = all(&store).into_iter().map(|(ns, n, _)| (ns, n.text)).collect();
        assert_eq!(
            listed,
            [("ns", "first"), ("ns", "second"), ("other", "elsewhere")].map(|(a, b)| (a.into(), b.into()))
        );

        let txn = store.db().begin_write().unwrap();
        assert!(delete_note(&txn, "ns", "01").unwrap());
        assert!(!delete_note(&txn, "ns", "01").unwrap());
        txn.commit().unwrap();
        assert_eq!(get_note(&store, "ns", "01").unwrap(), None);
        assert_eq!(get_vector(&store, "ns", "01").unwrap(), None);
        assert_eq!(all(&store).len(), 2);
    }

    #[test]
    fn a_damaged_vector_is_reported_as_corrupt() {
        let (_dir, store) = store();
        let txn = store.db().begin_write().unwrap();
        insert_note(&txn, "ns", &note("01", "first"), &[1.0]).unwrap();
        txn.open_table(VECTORS).unwrap().insert(("ns", "01"), [1u8, 2, 3].as_slice()).unwrap();
        txn.commit().unwrap();
        let err = for_each_note(&store, |_, _, _| {}).unwrap_err();
        assert!(matches!(&err, StoreError::Corrupt { what, .. } if what == "vector of semantic note ns/01"), "{err}");
        assert!(err.to_string().contains("restore the workspace"), "{err}");
    }

    #[test]
    fn stale_notes_are_found_and_reembedded_unless_changed_meanwhile() {
        let (_dir, store) = store();
        let txn = store.db().begin_write().unwrap();
        insert_note(&txn, "ns", &note("01", "first"), &[0.5, -0.25]).unwrap();
        insert_note(&txn, "ns", &StoredNote { embedder: "e2".into(), ..note("02", "second") }, &[1.0, 0.0]).unwrap();
        insert_note(&txn, "ns", &StoredNote { embedder: "e2".into(), ..note("03", "short") }, &[1.0]).unwrap();
        insert_note(&txn, "ns", &note("04", "gone"), &[0.1, 0.2]).unwrap();
        txn.commit().unwrap();
        let stale = notes_to_reembed(&store, "e2", 2).unwrap();
        let ids: Vec<&str> = stale.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["01", "03", "04"]);
        assert_eq!((stale[0].text.as_str(), stale[0].embedder.as_str()), ("first", "e1"));

        let txn = store.db().begin_write().unwrap();
        let updated = reembed_note(&txn, &stale[0], "e2", &[0.0, 1.0]).unwrap().unwrap();
        assert_eq!(updated, StoredNote { embedder: "e2".into(), ..note("01", "first") });
        delete_note(&txn, "ns", "04").unwrap();
        assert_eq!(reembed_note(&txn, &stale[2], "e2", &[0.0, 1.0]).unwrap(), None, "forgotten meanwhile");
        let changed = StaleNote { text: "other".into(), ..stale[1].clone() };
        assert_eq!(reembed_note(&txn, &changed, "e2", &[0.0, 1.0]).unwrap(), None, "rewritten meanwhile");
        txn.commit().unwrap();
        assert_eq!(get_vector(&store, "ns", "01").unwrap(), Some(vec![0.0, 1.0]));
        assert_eq!(notes_to_reembed(&store, "e2", 2).unwrap().len(), 1);
    }

    #[test]
    fn note_ids_sort_by_time_and_are_unique() {
        let (a, b, c) = (new_note_id(5), new_note_id(5), new_note_id(6));
        assert_ne!(a, b);
        assert!(a < c && b < c, "{a} {b} {c}");
        assert_eq!(a.len(), 28);
    }
}
