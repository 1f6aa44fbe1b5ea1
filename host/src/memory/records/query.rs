//! The read side: one record by id, and queries that walk an index or
//! scan the collection, a bounded page at a time.

use std::cmp::Ordering;

use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde_json::Value;

use super::key::{Cursor, compare, index_key};
use super::spec::{Collections, FieldPath};
use super::write::{INDEX, INDEX_READY, INDEX_STATE, RECORDS, decode_stored, parse_json};
use super::{
    MAX_QUERY_CONDITIONS, MAX_QUERY_EXAMINED, MAX_QUERY_LIMIT, Op, Page, Query, RecordEntry, RecordError, Visible,
    validate_collection_name, validate_id,
};
use crate::memory::{Store, StoreError};

/// Opens a table for reading; a table no write has created yet is empty.
fn open<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The stored record, if `visible` shows its owner (its JSON is parsed
/// only then).
fn entry(collection: &str, id: &str, bytes: &[u8], visible: Visible<'_>) -> Result<Option<RecordEntry>, StoreError> {
    let stored = decode_stored(collection, id, bytes)?;
    if !visible.shows(stored.owner) {
        return Ok(None);
    }
    Ok(Some(RecordEntry {
        id: id.to_owned(),
        version: stored.version,
        data: parse_json(collection, id, stored.json)?,
        updated_at_ms: stored.updated_at_ms,
        owner: stored.owner.map(str::to_owned),
    }))
}

/// The record `id` of `collection`, if it exists.
pub fn get(store: &Store, collection: &str, id: &str) -> Result<Option<RecordEntry>, RecordError> {
    get_visible(store, collection, id, Visible::All)
}

/// The record `id` of `collection`, if it exists and `visible` shows it.
pub fn get_visible(
    store: &Store,
    collection: &str,
    id: &str,
    visible: Visible<'_>,
) -> Result<Option<RecordEntry>, RecordError> {
    validate_collection_name(collection)?;
    validate_id(id)?;
    let txn = store.db().begin_read()?;
    let Some(records) = open(&txn, RECORDS)? else { return Ok(None) };
    match records.get((collection, id))? {
        None => Ok(None),
        Some(v) => Ok(entry(collection, id, v.value(), visible)?),
    }
}

/// A condition with its path parsed.
struct Filter {
    path: FieldPath,
    op: Op,
    value: Value,
}

impl Filter {
    fn matches(&self, data: &Value) -> bool {
        let Some(found) = self.path.lookup(data) else { return false };
        let Some(ord) = compare(found, &self.value) else { return false };
        match self.op {
            Op::Eq => ord == Ordering::Equal,
            Op::Lt => ord == Ordering::Less,
            Op::Le => ord != Ordering::Greater,
            Op::Gt => ord == Ordering::Greater,
            Op::Ge => ord != Ordering::Less,
        }
    }
}

/// The slice of one index that can hold matches: keys from `low` up to
/// `high` (inclusive; `None`: the end of the `tag` range).
struct KeyRange {
    tag: u8,
    low: Vec<u8>,
    high: Option<Vec<u8>>,
}

impl KeyRange {
    /// The keys that can satisfy every condition on `field`, or `None` if
    /// none can (e.g. a number and a string condition on one field).
    fn for_field(field: &str, filters: &[Filter]) -> Option<KeyRange> {
        let mut range: Option<KeyRange> = None;
        for f in filters.iter().filter(|f| f.path.as_str() == field) {
            let key = index_key(&f.value).expect("conditions hold numbers or strings");
            let r = range.get_or_insert_with(|| KeyRange { tag: key[0], low: vec![key[0]], high: None });
            if r.tag != key[0] {
                return None;
            }
            if matches!(f.op, Op::Eq | Op::Gt | Op::Ge) && key > r.low {
                r.low = key.clone();
            }
            if matches!(f.op, Op::Eq | Op::Lt | Op::Le) && r.high.as_ref().is_none_or(|h| &key < h) {
                r.high = Some(key);
            }
        }
        range
    }

    fn holds(&self, key: &[u8]) -> bool {
        key.first() == Some(&self.tag) && self.high.as_deref().is_none_or(|h| key <= h)
    }
}

/// Checks `q` and parses its conditions.
fn filters(q: &Query) -> Result<Vec<Filter>, RecordError> {
    validate_collection_name(&q.collection)?;
    let invalid = |reason: String| RecordError::InvalidQuery { collection: q.collection.clone(), reason };
    if q.limit == 0 || q.limit > MAX_QUERY_LIMIT {
        return Err(invalid(format!("limit {} is out of range: ask for 1 to {MAX_QUERY_LIMIT} records", q.limit)));
    }
    if q.conditions.len() > MAX_QUERY_CONDITIONS {
        return Err(invalid(format!("{} conditions, at most {MAX_QUERY_CONDITIONS} are allowed", q.conditions.len())));
    }
    q.conditions
        .iter()
        .map(|c| {
            let path = FieldPath::parse(&c.field).map_err(&invalid)?;
            if !matches!(c.value, Value::Number(_) | Value::String(_)) {
                return Err(invalid(format!(
                    "the condition on `{}` compares with {}: conditions compare numbers or strings",
                    c.field, c.value
                )));
            }
            Ok(Filter { path, op: c.op, value: c.value.clone() })
        })
        .collect()
}

/// One page of the records of `q.collection` that meet every condition.
///
/// The first condition whose field has a ready index picks the index: its
/// key range (narrowed by every condition on that field) is walked in
/// (key, id) order and each candidate re-checked against all conditions.
/// Otherwise the collection is scanned in id order. Either way at most
/// [`MAX_QUERY_EXAMINED`] entries are examined per call.
pub fn query(store: &Store, reg: &Collections, q: &Query) -> Result<Page, RecordError> {
    query_visible(store, reg, q, Visible::All)
}

/// [`query`] over the records `visible` shows; the others count as
/// examined but never match.
pub fn query_visible(store: &Store, reg: &Collections, q: &Query, visible: Visible<'_>) -> Result<Page, RecordError> {
    let filters = filters(q)?;
    let cursor = q.cursor.as_deref().map(Cursor::decode).transpose()?;
    let txn = store.db().begin_read()?;
    let Some(records) = open(&txn, RECORDS)? else { return Ok(Page { records: vec![], next_cursor: None }) };
    let c = q.collection.as_str();

    let mut indexed = None;
    if let Some(state) = open(&txn, INDEX_STATE)? {
        for f in &filters {
            let field = f.path.as_str();
            if reg.is_indexed(c, field) && state.get((c, field))?.is_some_and(|s| s.value() == INDEX_READY) {
                indexed = Some(field);
                break;
            }
        }
    }
    let mut page = Page { records: Vec::new(), next_cursor: None };
    let limit = q.limit as usize;
    let mut examined = 0;

    match indexed {
        Some(field) => {
            let Some(range) = KeyRange::for_field(field, &filters) else { return Ok(page) };
            let Some(index) = open(&txn, INDEX)? else { return Ok(page) };
            let low: (&str, &str, &[u8], &str) = (c, field, &range.low, "");
            let from = match &cursor {
                None => low,
                // Tuples order like redb keys: resume at the cursor unless
                // the range starts later.
                Some(Cursor::Index { field: f, key, id }) if f == field => low.max((c, field, key, id)),
                Some(_) => return Err(RecordError::InvalidCursor),
            };
            for item in index.range(from..)? {
                let (k, _) = item?;
                let (kc, kf, key, id) = k.value();
                if kc != c || kf != field || !range.holds(key) {
                    break;
                }
                if page.records.len() == limit || examined == MAX_QUERY_EXAMINED {
                    let next = Cursor::Index { field: field.to_owned(), key: key.to_vec(), id: id.to_owned() };
                    page.next_cursor = Some(next.encode());
                    break;
                }
                examined += 1;
                let Some(bytes) = records.get((c, id))? else {
                    debug_assert!(false, "index entry {c}/{field} without record {id}");
                    tracing::warn!(collection = c, field, id, "index entry without its record, skipped");
                    continue;
                };
                let record = entry(c, id, bytes.value(), visible)?;
                if let Some(record) = record.filter(|r| filters.iter().all(|f| f.matches(&r.data))) {
                    page.records.push(record);
                }
            }
        }
        None => {
            let from = match &cursor {
                None => (c, ""),
                Some(Cursor::Scan { id }) => (c, id.as_str()),
                Some(_) => return Err(RecordError::InvalidCursor),
            };
            for item in records.range(from..)? {
                let (k, v) = item?;
                let (kc, id) = k.value();
                if kc != c {
                    break;
                }
                if page.records.len() == limit || examined == MAX_QUERY_EXAMINED {
                    page.next_cursor = Some(Cursor::Scan { id: id.to_owned() }.encode());
                    break;
                }
                examined += 1;
                let record = entry(c, id, v.value(), visible)?;
                if let Some(record) = record.filter(|r| filters.iter().all(|f| f.matches(&r.data))) {
                    page.records.push(record);
                }
            }
        }
    }
    tracing::debug!(collection = c, index = indexed, examined, found = page.records.len(), "records query");
    Ok(page)
}

/// Records and indexes of one collection, for `keel memory stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectionStats {
    pub records: u64,
    /// Indexed fields and whether each is ready to serve queries.
    pub indexes: Vec<(String, bool)>,
}

/// Every collection that holds records or indexes (a full scan of the keys).
pub fn stats(store: &Store) -> Result<std::collections::BTreeMap<String, CollectionStats>, RecordError> {
    let txn = store.db().begin_read()?;
    let mut out = std::collections::BTreeMap::<String, CollectionStats>::new();
    if let Some(records) = open(&txn, RECORDS)? {
        for item in records.iter()? {
            let (k, _) = item?;
            out.entry(k.value().0.to_owned()).or_default().records += 1;
        }
    }
    if let Some(state) = open(&txn, INDEX_STATE)? {
        for item in state.iter()? {
            let (k, v) = item?;
            let (collection, field) = k.value();
            out.entry(collection.to_owned()).or_default().indexes.push((field.to_owned(), v.value() == INDEX_READY));
        }
    }
    Ok(out)
}

/// Up to `limit` records of `collection` last written before `cutoff_ms`,
/// with their versions, for retention.
pub fn written_before(
    store: &Store,
    collection: &str,
    cutoff_ms: u64,
    limit: usize,
) -> Result<Vec<(String, u64)>, RecordError> {
    let txn = store.db().begin_read()?;
    let Some(records) = open(&txn, RECORDS)? else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for item in records.range((collection, "")..)? {
        let (k, v) = item?;
        let (c, id) = k.value();
        if c != collection || out.len() >= limit {
            break;
        }
        let stored = decode_stored(c, id, v.value())?;
        if stored.updated_at_ms < cutoff_ms {
            out.push((id.to_owned(), stored.version));
        }
    }
    Ok(out)
}
