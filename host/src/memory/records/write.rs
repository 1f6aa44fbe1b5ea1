//! The write side: tables, batch checks, batch application and index
//! maintenance, all inside a caller's write transaction.

use std::collections::{HashMap, HashSet};
use std::io;

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde_json::Value;

use super::key::index_key;
use super::spec::{Collections, FieldPath};
use super::{MAX_RECORD_BYTES, RecordError, RecordWrite, RecordWriter, validate_collection_name, validate_id};
use crate::memory::{Store, StoreError, now_ms};

pub(super) const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
pub(super) const INDEX: TableDefinition<(&str, &str, &[u8], &str), ()> = TableDefinition::new("record_index");
pub(super) const INDEX_STATE: TableDefinition<(&str, &str), u64> = TableDefinition::new("record_index_state");

/// Index state: entries exist for some records only; queries must scan.
pub(super) const INDEX_STALE: u64 = 0;
/// Index state: every record of the collection has its entry.
pub(super) const INDEX_READY: u64 = 1;

/// First byte of a stored record, written before records had owners:
/// version, update time, JSON. Still read; never written.
const RECORD_FORMAT_UNOWNED: u8 = 1;
/// First byte of a stored record; bump it when the layout changes.
/// Version, update time, owner length (one byte, 0: unowned), owner, JSON.
const RECORD_FORMAT: u8 = 2;
/// Format byte, version and update time.
const HEADER_BYTES: usize = 1 + 8 + 8;

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(RECORDS)?;
    txn.open_table(INDEX)?;
    txn.open_table(INDEX_STATE)?;
    Ok(())
}

fn encode_stored(version: u64, updated_at_ms: u64, owner: Option<&str>, json: &[u8]) -> Vec<u8> {
    let owner = owner.unwrap_or_default().as_bytes();
    // Plugin names are at most 64 bytes; the check at the write keeps it so.
    let owner_len = u8::try_from(owner.len()).expect("owner names fit in one byte of length");
    let mut out = Vec::with_capacity(HEADER_BYTES + 1 + owner.len() + json.len());
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&updated_at_ms.to_be_bytes());
    out.push(owner_len);
    out.extend_from_slice(owner);
    out.extend_from_slice(json);
    out
}

/// A stored record, borrowed from its table value.
pub(super) struct Stored<'a> {
    pub version: u64,
    pub updated_at_ms: u64,
    /// The plugin that created the record; `None`: unowned (written by the
    /// operator or the host, or before records had owners).
    pub owner: Option<&'a str>,
    pub json: &'a [u8],
}

pub(super) fn decode_stored<'a>(collection: &str, id: &str, bytes: &'a [u8]) -> Result<Stored<'a>, StoreError> {
    let corrupt =
        |detail: &str| StoreError::Corrupt { what: format!("record `{collection}/{id}`"), detail: detail.to_owned() };
    let (format, rest) = match bytes {
        [format @ (RECORD_FORMAT_UNOWNED | RECORD_FORMAT), rest @ ..] if rest.len() >= HEADER_BYTES - 1 => {
            (*format, rest)
        }
        _ => return Err(corrupt("unknown record layout")),
    };
    let (version, rest) = rest.split_at(8);
    let (at, rest) = rest.split_at(8);
    let (owner, json) = match (format, rest) {
        (RECORD_FORMAT_UNOWNED, json) => (None, json),
        (_, [len, rest @ ..]) if rest.len() >= *len as usize => {
            let (owner, json) = rest.split_at(*len as usize);
            let owner = std::str::from_utf8(owner).map_err(|_| corrupt("the owner is not UTF-8"))?;
            ((!owner.is_empty()).then_some(owner), json)
        }
        _ => return Err(corrupt("the owner is cut short")),
    };
    Ok(Stored {
        version: u64::from_be_bytes(version.try_into().expect("8 bytes")),
        updated_at_ms: u64::from_be_bytes(at.try_into().expect("8 bytes")),
        owner,
        json,
    })
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

/// The version (0: absent) and owner of a stored record.
fn current_state(
    records: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    collection: &str,
    id: &str,
) -> Result<(u64, Option<String>), RecordError> {
    match records.get((collection, id))? {
        None => Ok((0, None)),
        Some(v) => {
            let stored = decode_stored(collection, id, v.value())?;
            Ok((stored.version, stored.owner.map(str::to_owned)))
        }
    }
}

/// Refuses a writer whose name cannot be stored as an owner (plugin names
/// are far shorter; this keeps a bad caller from panicking the committer).
fn check_writer(writer: Option<&RecordWriter>) -> Result<(), RecordError> {
    match writer {
        Some(w) if w.plugin.is_empty() || w.plugin.len() > u8::MAX as usize => Err(RecordError::InvalidName {
            what: "record owner",
            value: super::shown(&w.plugin),
            reason: format!("use 1 to {} bytes", u8::MAX),
        }),
        _ => Ok(()),
    }
}

/// Refuses a write by `writer` to an existing record it may not change.
fn check_owner(
    write: &RecordWrite,
    writer: Option<&RecordWriter>,
    version: u64,
    owner: Option<&str>,
) -> Result<(), RecordError> {
    match writer {
        Some(w) if version > 0 && !w.may_change(write.collection(), owner) => Err(RecordError::NotOwner {
            collection: write.collection().to_owned(),
            id: write.id().to_owned(),
            owner: owner.unwrap_or_default().to_owned(),
            plugin: w.plugin.clone(),
        }),
        _ => Ok(()),
    }
}

/// Whether every write of `writes` may be applied, in order, on top of
/// what `txn` holds now: names, shape, size, schema, ownership (a
/// `writer` changes only records it may, see [`RecordWriter`]), and
/// compare-and-set with each write seeing the versions and owners that
/// earlier writes of the same batch leave. Changes nothing; the first
/// failure is returned.
///
/// Like [`apply`], it opens the records tables itself, so call it while
/// `txn` has none of them open.
pub fn check(
    txn: &WriteTransaction,
    reg: &Collections,
    writes: &[RecordWrite],
    writer: Option<&RecordWriter>,
) -> Result<(), RecordError> {
    check_writer(writer)?;
    let records = txn.open_table(RECORDS)?;
    let mut states: HashMap<(&str, &str), (u64, Option<String>)> = HashMap::new();
    for write in writes {
        validate(reg, write, None)?;
        let target = (write.collection(), write.id());
        let (current, owner) = match states.remove(&target) {
            Some(state) => state,
            None => current_state(&records, target.0, target.1)?,
        };
        check_owner(write, writer, current, owner.as_deref())?;
        cas(write, current)?;
        let after = match write {
            RecordWrite::Put { .. } if current > 0 => (current + 1, owner),
            RecordWrite::Put { .. } => (1, writer.map(|w| w.plugin.clone())),
            RecordWrite::Delete { .. } => (0, None),
        };
        states.insert(target, after);
    }
    Ok(())
}

/// Applies `writes` in order inside `txn` and returns each write's new
/// version (0 for deletes). Every write is checked again as it goes, so an
/// unchecked batch cannot store bad data; but a failure leaves the earlier
/// writes of the batch in `txn`, so on `Err` abort the transaction. Run
/// [`check`] first to refuse a batch before any of it is applied.
pub fn apply(
    txn: &WriteTransaction,
    reg: &Collections,
    writes: &[RecordWrite],
    writer: Option<&RecordWriter>,
) -> Result<Vec<u64>, RecordError> {
    check_writer(writer)?;
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
        let (current, owner, old_data) = match records.get((collection, id))? {
            None => (0, None, None),
            Some(v) => {
                let stored = decode_stored(collection, id, v.value())?;
                let old = if fields.is_empty() { None } else { Some(parse_json(collection, id, stored.json)?) };
                (stored.version, stored.owner.map(str::to_owned), old)
            }
        };
        check_owner(write, writer, current, owner.as_deref())?;
        cas(write, current)?;
        // The creator owns the record for good; updates keep its owner.
        let owner = if current > 0 { owner } else { writer.map(|w| w.plugin.clone()) };
        let old_keys = index_keys(fields, old_data.as_ref());
        match (write, json) {
            (RecordWrite::Put { data, .. }, Some(json)) => {
                let version = current + 1;
                records.insert((collection, id), encode_stored(version, now, owner.as_deref(), &json).as_slice())?;
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

/// Checks, applies and commits one batch in a transaction of its own, as
/// the operator (what it creates is unowned).
///
/// For tools, tests and benchmarks: the runtime writes through its
/// committer, which batches callers and commits each change with its audit
/// entry.
pub fn write(store: &Store, reg: &Collections, writes: &[RecordWrite]) -> Result<Vec<u64>, RecordError> {
    write_as(store, reg, writes, None)
}

/// [`write`] for `writer` (`None`: the operator).
pub fn write_as(
    store: &Store,
    reg: &Collections,
    writes: &[RecordWrite],
    writer: Option<&RecordWriter>,
) -> Result<Vec<u64>, RecordError> {
    let txn = store.db().begin_write()?;
    check(&txn, reg, writes, writer)?;
    let versions = apply(&txn, reg, writes, writer)?;
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
