//! The secrets of one connector call, and their removal from everything the
//! host writes down.
//!
//! Threat stopped: a secret (API key, SMTP password) reaching a log, the
//! audit log or an error message, whether through the host's own formatting
//! or because the connector echoed it (in a log line, an error value, a
//! panic message). The host never formats a secret; every guest-supplied
//! string that reaches tracing or an error passes [`SecretValues::redact`].
//! Not stopped: a connector sending a secret to a host it was granted, or
//! an encoded form of it (base64, hex) in its own output.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// What replaces a secret value in text.
pub const REDACTED: &str = "[redacted]";

/// Secret values by name. `Debug` shows the names only.
#[derive(Clone, Default)]
pub struct SecretValues(BTreeMap<String, String>);

impl fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl SecretValues {
    pub fn new(secrets: &BTreeMap<String, String>) -> SecretValues {
        SecretValues(secrets.clone())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `text` with every secret value replaced by [`REDACTED`]; longer values
    /// first, so a secret that contains another is removed whole.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut values: Vec<&str> = self.0.values().map(String::as_str).filter(|v| !v.is_empty()).collect();
        if !values.iter().any(|v| text.contains(v)) {
            return Cow::Borrowed(text);
        }
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let mut out = text.to_owned();
        for value in values {
            out = out.replace(value, REDACTED);
        }
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_redacted_and_debug_shows_names_only() {
        let secrets = SecretValues::new(&BTreeMap::from([
            ("short".to_owned(), "abc".to_owned()),
            ("long".to_owned(), "xxabcxx".to_owned()),
        ]));
        assert_eq!(secrets.redact("key=xxabcxx and abc"), "key=[redacted] and [redacted]");
        assert!(matches!(secrets.redact("nothing here"), Cow::Borrowed(_)));
        let debug = format!("{secrets:?}");
        assert!(debug.contains("long") && !debug.contains("xxabcxx"), "{debug}");
    }
}
