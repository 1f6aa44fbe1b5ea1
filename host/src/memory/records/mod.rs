//! The structured store: named collections of JSON records (customers,
//! leads, invoices...), each record with a version for compare-and-set, an
//! optional JSON Schema per collection, and secondary indexes on declared
//! fields.
//!
//! Writes come as batches of [`RecordWrite`]. [`check`] decides whether a
//! whole batch may be applied without changing anything, and [`apply`]
//! writes it; both work inside a caller's redb write transaction, so a
//! single writer can put many callers' batches into one commit and refuse
//! one caller without touching the others. Reads ([`get`], [`query`]) use a
//! read transaction of their own and never see a half-applied batch.
//!
//! Every record has an owner: the plugin whose call created it (see
//! [`RecordWriter`]), or none for records the operator or the host wrote
//! and for records written before keel recorded owners. Updates keep the
//! owner. Reads for a plugin pass [`Visible::Owners`] to see only what its
//! grants let it see.
//!
//! Tables in `keel.redb`:
//! * `records`: (collection, id) -> format byte, version, update time,
//!   owner, JSON.
//! * `record_index`: (collection, field, index key, id) -> (), one entry per
//!   record and declared index whose field holds a number or a string (see
//!   `key.rs` for the ordering).
//! * `record_index_state`: (collection, field) -> ready or stale. An index
//!   declared after records were written is stale until [`build_indexes`]
//!   fills it in; queries scan instead of trusting an incomplete index.
//!
//! Versions start at 1 and grow by one per update. A delete removes the
//! record entirely, so a record created again after a delete starts at 1.

mod key;
mod query;
mod spec;
mod write;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreError;

pub use query::{CollectionStats, get, get_visible, query, query_visible, stats, written_before};
pub use spec::{CollectionSpec, Collections};
pub(crate) use write::create_tables;
pub use write::{apply, build_indexes, check, validate_write, write, write_as};

/// Longest collection name, in bytes. Names use ASCII letters, digits, `_`
/// and `-`, so they are safe in paths, logs and config keys.
pub const MAX_COLLECTION_NAME_BYTES: usize = 64;
/// Longest record id, in bytes. Ids are keys, kept short so index entries
/// and cursors stay small.
pub const MAX_ID_BYTES: usize = 256;
/// Largest record, in bytes of compact JSON. Bigger content belongs in a
/// blob with a reference in the record.
pub const MAX_RECORD_BYTES: usize = 256 * 1024;
/// Most indexes one collection may declare; each one costs an index entry
/// per record on every write.
pub const MAX_INDEXES_PER_COLLECTION: usize = 16;
/// Longest field path (`contact.email`) in an index or condition, in bytes.
pub const MAX_FIELD_PATH_BYTES: usize = 128;
/// Bytes of a string value kept in its index key. Longer strings share a
/// key with others of the same prefix; queries re-check the real value.
pub const MAX_INDEXED_STRING_BYTES: usize = 128;
/// Most records one query page returns.
pub const MAX_QUERY_LIMIT: u32 = 1000;
/// Page size when a query (as JSON) names no `limit`.
pub const DEFAULT_QUERY_LIMIT: u32 = 100;
/// Most conditions in one query.
pub const MAX_QUERY_CONDITIONS: usize = 16;
/// Most records (or index entries) one query call examines. A query that
/// no index serves scans the collection; when it reaches this bound it
/// returns the matches found so far, possibly fewer than `limit` or none,
/// with a `next_cursor` to continue from. Every call is bounded; paging to
/// the end still finds every match.
pub const MAX_QUERY_EXAMINED: usize = 10_000;

/// One write in a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordWrite {
    /// Creates or replaces a record.
    Put { collection: String, id: String, data: Value, expected_version: Option<u64> },
    /// Removes a record; deleting a missing record is not an error unless
    /// `expected_version` asks for an existing one.
    Delete { collection: String, id: String, expected_version: Option<u64> },
}

impl RecordWrite {
    pub fn collection(&self) -> &str {
        match self {
            RecordWrite::Put { collection, .. } | RecordWrite::Delete { collection, .. } => collection,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            RecordWrite::Put { id, .. } | RecordWrite::Delete { id, .. } => id,
        }
    }

    /// `Some(0)`: the record must not exist; `Some(n)`: its current version
    /// must be `n`; `None`: unconditional.
    pub fn expected_version(&self) -> Option<u64> {
        match self {
            RecordWrite::Put { expected_version, .. } | RecordWrite::Delete { expected_version, .. } => {
                *expected_version
            }
        }
    }
}

/// The plugin a batch of record writes is made for. Records it creates
/// are its own; a record another plugin owns may be overwritten or deleted
/// only if `may_change` names (collection, owner). The operator and the
/// host write without one: they may change any record, and what they
/// create is unowned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordWriter {
    pub plugin: String,
    pub may_change: Vec<(String, String)>,
}

impl RecordWriter {
    /// Whether this writer may change a record of `collection` owned by
    /// `owner`.
    pub fn may_change(&self, collection: &str, owner: Option<&str>) -> bool {
        match owner {
            None => true,
            Some(owner) => owner == self.plugin || self.may_change.iter().any(|(c, o)| c == collection && o == owner),
        }
    }
}

/// Whose records a read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visible<'a> {
    /// Every record (the operator, the host).
    All,
    /// Unowned records and those owned by one of these plugins.
    Owners(&'a [String]),
}

impl Visible<'_> {
    pub fn shows(&self, owner: Option<&str>) -> bool {
        match (self, owner) {
            (Visible::All, _) | (_, None) => true,
            (Visible::Owners(owners), Some(owner)) => owners.iter().any(|o| o == owner),
        }
    }
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordEntry {
    pub id: String,
    /// 1 on create, +1 per update.
    pub version: u64,
    pub data: Value,
    /// Unix time in milliseconds of the commit that wrote this version.
    pub updated_at_ms: u64,
    /// The plugin that created the record; absent: unowned (see the
    /// module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// How a condition compares a field with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

/// `field op value`. Numbers compare numerically, strings by their UTF-8
/// bytes; a field of another type than the value, or a missing field, never
/// matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// A top-level field or a dotted path into nested objects (`contact.email`).
    pub field: String,
    pub op: Op,
    /// A JSON number or string.
    pub value: Value,
}

/// Records of one collection that meet every condition, one page at a time.
///
/// Results are ordered by the index key of the first condition whose field
/// is indexed, then by id; without such a condition, by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    pub collection: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// 1..=[`MAX_QUERY_LIMIT`].
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// `next_cursor` of the previous page of the same query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

fn default_limit() -> u32 {
    DEFAULT_QUERY_LIMIT
}

/// One page of query results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    pub records: Vec<RecordEntry>,
    /// Pass this as `cursor` for the next page; `None` when nothing is left.
    /// A page may hold fewer than `limit` records and still have a next
    /// page (see [`MAX_QUERY_EXAMINED`]).
    pub next_cursor: Option<String>,
}

/// A failure of the structured store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A compare-and-set failed; versions are 0 for "does not exist".
    #[error(
        "record `{collection}/{id}` is {}, but the write expected it {}: read it again and retry with its current version",
        version_state(*.actual), version_state(*.expected)
    )]
    Conflict { collection: String, id: String, expected: u64, actual: u64 },
    /// `pointer` is the JSON pointer of the first failing value (empty for
    /// the whole record); `more` counts the other problems.
    #[error(
        "record `{collection}/{id}` does not match the schema of collection `{collection}` at {}: {message}{}; change the record to match, or the schema in keel.toml",
        shown_pointer(.pointer), more_errors(*.more)
    )]
    Schema { collection: String, id: String, pointer: String, message: String, more: usize },
    #[error("record `{collection}/{id}` is {found}, not a JSON object: wrap it in an object, e.g. {{\"value\": ...}}")]
    NotAnObject { collection: String, id: String, found: &'static str },
    #[error(
        "record `{collection}/{id}` is {size} bytes as JSON, over the limit of {MAX_RECORD_BYTES}: keep large content elsewhere and store a reference"
    )]
    TooLarge { collection: String, id: String, size: usize },
    #[error("{what} `{value}` is not valid: {reason}")]
    InvalidName { what: &'static str, value: String, reason: String },
    #[error("collection `{collection}` in keel.toml is not valid: {reason}")]
    InvalidCollection { collection: String, reason: String },
    #[error("query on collection `{collection}` is not valid: {reason}")]
    InvalidQuery { collection: String, reason: String },
    #[error("the query cursor was not returned by this query: run the query again without a cursor")]
    InvalidCursor,
    /// A plugin wrote a record another plugin owns without a grant for it.
    #[error(
        "record `{collection}/{id}` belongs to plugin `{owner}`: plugin `{plugin}` may change it only with \
         `write_from = [\"{owner}\"]` on its grant of `{collection}`, accepted by the operator"
    )]
    NotOwner { collection: String, id: String, owner: String, plugin: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn version_state(version: u64) -> String {
    if version == 0 { "absent".to_owned() } else { format!("at version {version}") }
}

fn shown_pointer(pointer: &str) -> String {
    if pointer.is_empty() { "the top level".to_owned() } else { format!("`{pointer}`") }
}

fn more_errors(more: usize) -> String {
    match more {
        0 => String::new(),
        1 => " (and 1 more problem)".to_owned(),
        n => format!(" (and {n} more problems)"),
    }
}

macro_rules! record_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for RecordError {
            fn from(e: $t) -> Self { RecordError::Store(e.into()) }
        }
    )*};
}
record_error_from!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// A user-supplied string for an error message, cut short so a huge id
/// cannot flood logs.
fn shown(s: &str) -> String {
    const SHOWN_CHARS: usize = 80;
    match s.char_indices().nth(SHOWN_CHARS) {
        None => s.to_owned(),
        Some((end, _)) => format!("{}...", &s[..end]),
    }
}

/// Checks a collection name: 1..=[`MAX_COLLECTION_NAME_BYTES`] of ASCII
/// letters, digits, `_` and `-`.
pub fn validate_collection_name(name: &str) -> Result<(), RecordError> {
    let reason = if name.is_empty() || name.len() > MAX_COLLECTION_NAME_BYTES {
        format!("use 1 to {MAX_COLLECTION_NAME_BYTES} bytes")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        "use only ASCII letters, digits, `_` and `-`".to_owned()
    } else {
        return Ok(());
    };
    Err(RecordError::InvalidName { what: "collection name", value: shown(name), reason })
}

/// Checks a record id: 1..=[`MAX_ID_BYTES`] bytes without control characters.
pub fn validate_id(id: &str) -> Result<(), RecordError> {
    let reason = if id.is_empty() || id.len() > MAX_ID_BYTES {
        format!("use 1 to {MAX_ID_BYTES} bytes")
    } else if id.chars().any(char::is_control) {
        "remove the control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(RecordError::InvalidName { what: "record id", value: shown(id), reason })
}
