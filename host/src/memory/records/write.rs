//! The write side: tables, batch checks, batch application and index
//! maintenance, all inside a caller's write transaction.

use std::collections::{HashMap, HashSet};
use std::io;

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde_json::Value;

use super::key::index_key;
use super::spec::{Collections, FieldPath};
use super::{MAX_RECORD_BYTES, RecordError, RecordWrite, validate_collection_name, validate_id};
use crate::memory::{Store, StoreError, now_ms};

pub(super) const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
pub(super) const INDEX: TableDefinition<(&str, &str, &[u8], &str), ()> = TableDefinition::new("record_index");
pub(super) const INDEX_STATE: TableDefinition<(&str, &str), u64> = TableDefinition::new("record_index_state");

/// Index state: entries exist for some records only; queries must scan.
pub(super) const INDEX_STALE: u64 = 0;
/// Index state: every record of the collection has its entry.
pub(super) const INDEX_READY: u64 = 1;

/// First byte of a stored record; bump it when the layout changes.
const RECORD_FORMAT: u8 = 1;
/// Format byte, version and update time before the JSON.
const HEADER_BYTES: usize = 1 + 8 + 8;

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(RECORDS)?;
    txn.open_table(INDEX)?;
    txn.open_table(INDEX_STATE)?;
    Ok(())
}

fn encode_stored(version: u64, updated_at_ms: u64, json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + json.len());
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&updated_at_ms.to_be_bytes());
    out.extend_from_slice(json);
    out
}

/// A stored record, borrowed from its table value.
pub(super) struct Stored<'a> {
    pub version: u64,
    pub updated_at_ms: u64,
    pub json: &'a [u8],
}

pub(super) fn decode_stored<'a>(collection: &str, id: &str, bytes: &'a [u8]) -> Result<Stored<'a>, StoreError> {
    match bytes {
        [RECORD_FORMAT, rest @ ..] if rest.len() >= HEADER_BYTES - 1 => {
            let (version, rest) = rest.split_at(8);
            let (at, json) = rest.split_at(8);
            Ok(Stored {
                version: u64::from_be_bytes(version.try_into().expect("8 bytes")),
                updated_at_ms: u64::from_be_bytes(at.try_into().expect("8 bytes")),
                json,
            })
        }
        _ => Err(StoreError::Corrupt {
            what: format!("record `{collection}/{id}`"),
            detail: "unknown record layout".to_owned(),
        }),
    }
}

pub(super) fn parse_json(collection: &str, id: &str, json: &[u8]) -> Result<Value, StoreError> {
    serde_json::from_slice(json)
        .map_err(|e| StoreError::Corrupt { what: format!("record `{collection}/{id}`"), detail: e.to_string() })
}

/// The checks of one write that need no database: names, shape, size and
/// schema. [`check`] and [`apply`] run them too; callers use this to refuse
/// a bad write before queuing it.
pub fn validate_write(reg: &Collections, write: &RecordWrite) -> Result<(), RecordError> {
    validate(reg, write, None)
}

/// Checks names, shape, size and schema of one write; `json_len` is the
/// size of a put's data, if the caller already serialized it.
fn validate(reg: &Collections, write: &RecordWrite, json_len: Option<usize>) -> Result<(), RecordError> {
    validate_collection_name(write.collection())?;
    validate_id(write.id())?;
    let RecordWrite::Put { collection, id, data, .. } = write else { return Ok(()) };
    let context = || (collection.clone(), id.clone());
    if !data.is_object() {
        let (collection, id) = context();
        return Err(RecordError::NotAnObject { collection, id, found: kind(data) });
    }
    let size = json_len.unwrap_or_else(|| json_size(data));
    if size > MAX_RECORD_BYTES {
        let (collection, id) = context();
        return Err(RecordError::TooLarge { collection, id, size });
    }
    if let Some(validator) = reg.validator(collection).filter(|v| !v.is_valid(data)) {
        // `is_valid` stops at the first problem; only a refused record pays
        // for collecting them all.
        let mut errors = validator.iter_errors(data);
        if let Some(first) = errors.next() {
            let (collection, id) = context();
            return Err(RecordError::Schema {
                collection,
                id,
                pointer: first.instance_path().as_str().to_owned(),
                message: first.masked().to_string(),
                more: errors.count(),
            });
        }
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Bytes of compact JSON, counted without building the string.
fn json_size(v: &Value) -> usize {
    struct Count(usize);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, v).expect("JSON values always serialize");
    count.0
}

fn cas(write: &RecordWrite, actual: u64) -> Result<(), RecordError> {
    match write.expected_version() {
        Some(expected) if expected != actual => Err(RecordError::Conflict {
            collection: write.collection().to_owned(),
            id: write.id().to_owned(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

fn current_version(
    records: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    collection: &str,
    id: &str,
) -> Result<u64, RecordError> {
    match records.get((collection, id))? {
        None => Ok(0),
        Some(v) => Ok(decode_stored(collection, id, v.value())?.version),
    }
}

/// Whether every write of `writes` may be applied, in order, on top of
/// what `txn` holds now: names, shape, size, schema, and compare-and-set
/// with each write seeing the versions that earlier writes of the same
/// batch leave. Changes nothing; the first failure is returned.
///
/// Like [`apply`], it opens the records tables itself, so call it while
/// `txn` has none of them open.
pub fn check(txn: &WriteTransaction, reg: &Collections, writes: &[RecordWrite]) -> Result<(), RecordError> {
    let records = txn.open_table(RECORDS)?;
    let mut versions: HashMap<(&str, &str), u64> = HashMap::new();
    for write in writes {
        validate(reg, write, None)?;
        let target = (write.collection(), write.id());
        let current = match versions.get(&target) {
            Some(v) => *v,
            None => current_version(&records, target.0, target.1)?,
        };
        cas(write, current)?;
        let after = match write {
            RecordWrite::Put { .. } => current + 1,
            RecordWrite::Delete { .. } => 0,
        };
        versions.insert(target, after);
    }
    Ok(())
}

/// Applies `writes` in order inside `txn` and returns each write's new
/// version (0 for deletes). Every write is checked again as it goes, so an
/// unchecked batch cannot store bad data; but a failure leaves the earlier
/// writes of the batch in `txn`, so on `Err` abort the transaction. Run
/// [`check`] first to refuse a batch before any of it is applied.
pub fn apply(txn: &WriteTransaction, reg: &Collections, writes: &[RecordWrite]) -> Result<Vec<u64>, RecordError> {
    let now = now_ms();
    let mut records = txn.open_table(RECORDS)?;
    let mut index = txn.open_table(INDEX)?;
    let mut state = txn.open_table(INDEX_STATE)?;
    let mut reconciled: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(writes.len());
    for write in writes {
        let json = match write {
            RecordWrite::Put { data, .. } => Some(serde_json::to_vec(data).expect("JSON values always serialize")),
            RecordWrite::Delete { .. } => None,
        };
        validate(reg, write, json.as_ref().map(Vec::len))?;
        let (collection, id) = (write.collection(), write.id());
        if reconciled.insert(collection) {
            reconcile_index_state(&records, &mut state, reg, collection)?;
        }
        let fields = reg.indexes(collection);
        let (current, old_data) = match records.get((collection, id))? {
            None => (0, None),
            Some(v) => {
                let stored = decode_stored(collection, id, v.value())?;
                let old = if fields.is_empty() { None } else { Some(parse_json(collection, id, stored.json)?) };
                (stored.version, old)
            }
        };
        cas(write, current)?;
        let old_keys = index_keys(fields, old_data.as_ref());
        match (write, json) {
            (RecordWrite::Put { data, .. }, Some(json)) => {
                let version = current + 1;
                records.insert((collection, id), encode_stored(version, now, &json).as_slice())?;
                let new_keys = index_keys(fields, Some(data));
                for ((field, old), new) in fields.iter().zip(old_keys).zip(new_keys) {
                    if old != new {
                        update_entry(&mut index, collection, field, id, old.as_deref(), new.as_deref())?;
                    }
                }
                out.push(version);
            }
            _ => {
                if current > 0 {
                    records.remove((collection, id))?;
                    for (field, old) in fields.iter().zip(old_keys) {
                        update_entry(&mut index, collection, field, id, old.as_deref(), None)?;
                    }
                }
                out.push(0);
            }
        }
    }
    Ok(out)
}

/// Checks, applies and commits one batch in a transaction of its own.
///
/// For tools, tests and benchmarks: the runtime writes through its
/// committer, which batches callers and commits each change with its audit
/// entry.
pub fn write(store: &Store, reg: &Collections, writes: &[RecordWrite]) -> Result<Vec<u64>, RecordError> {
    let txn = store.db().begin_write()?;
    check(&txn, reg, writes)?;
    let versions = apply(&txn, reg, writes)?;
    txn.commit()?;
    Ok(versions)
}

fn index_keys(fields: &[FieldPath], data: Option<&Value>) -> Vec<Option<Vec<u8>>> {
    fields.iter().map(|f| data.and_then(|d| f.lookup(d)).and_then(index_key)).collect()
}

type IndexTable<'txn> = Table<'txn, (&'static str, &'static str, &'static [u8], &'static str), ()>;

fn update_entry(
    index: &mut IndexTable<'_>,
    collection: &str,
    field: &FieldPath,
    id: &str,
    old: Option<&[u8]>,
    new: Option<&[u8]>,
) -> Result<(), StoreError> {
    if let Some(old) = old {
        index.remove((collection, field.as_str(), old, id))?;
    }
    if let Some(new) = new {
        index.insert((collection, field.as_str(), new, id), ())?;
    }
    Ok(())
}

/// Brings the index states of `collection` in line with its declaration
/// before the batch first writes to it:
/// * an index no longer declared becomes stale, since this write and later
///   ones will not maintain it;
/// * a newly declared index starts ready if the collection is empty (every
///   record to come will have its entry), otherwise stale until
///   [`build_indexes`] fills it in.
///
/// So `ready` always means complete: every write since the index became
/// ready has maintained it.
fn reconcile_index_state(
    records: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    state: &mut Table<'_, (&'static str, &'static str), u64>,
    reg: &Collections,
    collection: &str,
) -> Result<(), StoreError> {
    let declared = reg.indexes(collection);
    let mut known = Vec::new();
    for item in state.range((collection, "")..)? {
        let (k, v) = item?;
        let (c, field) = k.value();
        if c != collection {
            break;
        }
        known.push((field.to_owned(), v.value()));
    }
    for (field, s) in &known {
        if s == &INDEX_READY && !declared.iter().any(|d| d.as_str() == field) {
            state.insert((collection, field.as_str()), INDEX_STALE)?;
        }
    }
    let mut empty = None;
    for field in declared {
        if !known.iter().any(|(f, _)| f == field.as_str()) {
            let is_empty = match empty {
                Some(e) => e,
                None => *empty.insert(collection_is_empty(records, collection)?),
            };
            state.insert((collection, field.as_str()), if is_empty { INDEX_READY } else { INDEX_STALE })?;
        }
    }
    Ok(())
}

fn collection_is_empty(
    records: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    collection: &str,
) -> Result<bool, StoreError> {
    match records.range((collection, "")..)?.next() {
        None => Ok(true),
        Some(item) => Ok(item?.0.value().0 != collection),
    }
}

/// Makes every declared index ready and drops the entries of indexes no
/// longer declared; returns how many indexes it (re)built.
///
/// Run it inside a write transaction after the collection declarations
/// change (e.g. when the workspace loads): until then a newly declared
/// index on a non-empty collection is stale and queries on it scan. It
/// reads every record of each collection whose index it builds.
pub fn build_indexes(txn: &WriteTransaction, reg: &Collections) -> Result<usize, RecordError> {
    let records = txn.open_table(RECORDS)?;
    let mut index = txn.open_table(INDEX)?;
    let mut state = txn.open_table(INDEX_STATE)?;

    let mut known: Vec<(String, String, u64)> = Vec::new();
    for item in state.iter()? {
        let (k, v) = item?;
        let (c, f) = k.value();
        known.push((c.to_owned(), f.to_owned(), v.value()));
    }
    for (c, f, _) in &known {
        if !reg.is_indexed(c, f) {
            clear_entries(&mut index, c, f)?;
            state.remove((c.as_str(), f.as_str()))?;
        }
    }

    let mut built = 0;
    for (collection, fields) in reg.declared() {
        let stale: Vec<&FieldPath> = fields
            .iter()
            .filter(|f| !known.iter().any(|(c, k, s)| c == collection && k == f.as_str() && *s == INDEX_READY))
            .collect();
        if stale.is_empty() {
            continue;
        }
        for field in &stale {
            clear_entries(&mut index, collection, field.as_str())?;
        }
        for item in records.range((collection, "")..)? {
            let (k, v) = item?;
            let (c, id) = k.value();
            if c != collection {
                break;
            }
            let data = parse_json(c, id, decode_stored(c, id, v.value())?.json)?;
            for field in &stale {
                if let Some(key) = field.lookup(&data).and_then(index_key) {
                    index.insert((collection, field.as_str(), key.as_slice(), id), ())?;
                }
            }
        }
        for field in &stale {
            state.insert((collection, field.as_str()), INDEX_READY)?;
        }
        tracing::info!(collection, indexes = stale.len(), "record indexes built");
        built += stale.len();
    }
    Ok(built)
}

fn clear_entries(index: &mut IndexTable<'_>, collection: &str, field: &str) -> Result<(), StoreError> {
    // `field` + NUL is the first string after `field`, so this range holds
    // exactly the entries of (collection, field).
    let next = format!("{field}\0");
    let empty: &[u8] = &[];
    index.retain_in((collection, field, empty, "")..(collection, next.as_str(), empty, ""), |_, _| false)?;
    Ok(())
}
