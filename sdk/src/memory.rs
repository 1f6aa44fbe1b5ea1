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
