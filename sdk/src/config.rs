//! Operator settings and secrets (`keel:plugin/config`), as connectors use
//! them. Never log a secret: the host redacts secret values it sees in log
//! lines and errors, but not encoded forms of them.

use crate::Error;
use crate::bindings::keel::plugin::config::{get, get_secret};

/// The setting `key`, or `None` if the operator did not set it.
pub fn setting(key: &str) -> Result<Option<String>, Error> {
    get(key)
}

/// The setting `key`; fails with `unavailable` naming it if it is not set.
pub fn require_setting(key: &str) -> Result<String, Error> {
    setting(key)?.filter(|v| !v.trim().is_empty()).ok_or_else(|| {
        Error::Unavailable(format!("setting `{key}` is not configured: the operator must set it for this connector"))
    })
}

/// The secret `name`; fails with `denied` if it was not granted or set.
pub fn secret(name: &str) -> Result<String, Error> {
    get_secret(name)
}
