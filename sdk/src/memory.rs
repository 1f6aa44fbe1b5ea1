//! The plugin's governed key/value memory, with serde helpers.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
pub use crate::bindings::keel::plugin::memory::{delete, get, list_keys, put, put_expiring};

/// Reads `key` from `namespace` and parses it as JSON.
pub fn get_json<T: DeserializeOwned>(namespace: &str, key: &str) -> Result<Option<T>, Error> {
    match get(namespace, key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::InvalidInput(format!("memory {namespace}/{key} is not the expected JSON: {e}"))),
    }
}

/// Stores `value` as JSON under `key` in `namespace`.
pub fn put_json<T: Serialize + ?Sized>(namespace: &str, key: &str, value: &T) -> Result<(), Error> {
    let bytes =
        serde_json::to_vec(value).map_err(|e| Error::InvalidInput(format!("value for {namespace}/{key}: {e}")))?;
    put(namespace, key, &bytes)
}

pub use crate::bindings::keel::plugin::memory::{
    Comparison, Condition, Hit, Note, RecallRequest, RecordEntry, RecordPage, RecordQuery, WriteResult, delete_record,
    forget, get_record, put_record, query_records, recall, recall_many, remember, remember_many,
};

/// Reads record `id` of `collection` as `T`, with its version.
pub fn get_record_json<T: DeserializeOwned>(collection: &str, id: &str) -> Result<Option<(u64, T)>, Error> {
    match get_record(collection, id)? {
        None => Ok(None),
        Some(entry) => serde_json::from_str(&entry.data)
            .map(|v| Some((entry.version, v)))
            .map_err(|e| Error::InvalidInput(format!("record {collection}/{id} is not the expected JSON: {e}"))),
    }
}

/// Writes `value` as record `id` of `collection`; see `put-record` for
/// `expected_version` and the result.
pub fn put_record_json<T: Serialize + ?Sized>(
    collection: &str,
    id: &str,
    value: &T,
    expected_version: Option<u64>,
) -> Result<WriteResult, Error> {
    let data =
        serde_json::to_string(value).map_err(|e| Error::InvalidInput(format!("record {collection}/{id}: {e}")))?;
    put_record(collection, id, &data, expected_version)
}

/// Remembers `text` in `namespace` with `tags` and no metadata.
pub fn remember_text(namespace: &str, text: &str, tags: &[&str]) -> Result<String, Error> {
    let note =
        Note { text: text.to_owned(), tags: tags.iter().map(|t| (*t).to_owned()).collect(), metadata: "{}".into() };
    remember(namespace, &note)
}

/// The `k` notes of `namespace` most similar to `query`.
pub fn recall_text(namespace: &str, query: &str, k: u32) -> Result<Vec<Hit>, Error> {
    recall(&RecallRequest { namespace: namespace.to_owned(), query: query.to_owned(), k, tags: Vec::new() })
}
