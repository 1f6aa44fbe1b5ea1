//! A plugin index: a JSON file, local or over HTTP, that lists plugins by
//! name and version with where to download each and the sha256 it must
//! have.
//!
//! ```json
//! { "plugins": [
//!   { "name": "hello", "version": "0.2.0", "url": "hello-0.2.0.wasm",
//!     "sha256": "9f86d0…", "publisher_key": "ed25519:3b6a27…",
//!     "sig": "hello-0.2.0.wasm.sig" } ] }
//! ```
//!
//! `url` and `sig` may be relative to the index. `sig` defaults to `url`
//! with `.sig` appended. An index pins bytes; it does not make a key
//! trusted: `publisher_key` only narrows which trusted key must have
//! signed the entry (see [`super::signing`]).

use serde::{Deserialize, Serialize};

/// The index file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginIndex {
    pub plugins: Vec<IndexEntry>,
}

/// One plugin version in an index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    /// Where the plugin file is (absolute, or relative to the index).
    pub url: String,
    /// sha256 (hex) of the plugin file.
    pub sha256: String,
    /// The publisher's ed25519 key (`ed25519:HEX`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher_key: Option<String>,
    /// Where the detached signature is (default: `url` + `.sig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl PluginIndex {
    /// Parses an index; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<PluginIndex, String> {
        let index: PluginIndex =
            serde_json::from_str(text).map_err(|e| format!("index {origin} is not a keel plugin index: {e}"))?;
        for (i, e) in index.plugins.iter().enumerate() {
            let sha_ok = e.sha256.len() == 64 && e.sha256.chars().all(|c| c.is_ascii_hexdigit());
            if !sha_ok {
                return Err(format!("index {origin}: `plugins[{i}].sha256` ({}) is not 64 hex digits", e.name));
            }
        }
        Ok(index)
    }

    /// Entry `name`, at `version` or else the highest version listed.
    pub fn find(&self, name: &str, version: Option<&str>, origin: &str) -> Result<&IndexEntry, String> {
        let mut candidates: Vec<&IndexEntry> = self.plugins.iter().filter(|e| e.name == name).collect();
        if candidates.is_empty() {
            let mut names: Vec<&str> = self.plugins.iter().map(|e| e.name.as_str()).collect();
            names.dedup();
            return Err(format!("index {origin} has no plugin `{name}`; it lists: {}", names.join(", ")));
        }
        if let Some(v) = version {
            let versions: Vec<&str> = candidates.iter().map(|e| e.version.as_str()).collect();
            return candidates.iter().copied().find(|e| e.version == v).ok_or_else(|| {
                format!("index {origin} has no version {v} of `{name}`; it lists {}", versions.join(", "))
            });
        }
        candidates.sort_by(|a, b| compare_versions(&a.version, &b.version));
        Ok(candidates.last().expect("not empty"))
    }
}

/// Orders versions by their dot-separated parts, numerically where both
/// parts are numbers (`0.10.0` after `0.9.1`), else as text.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut xs, mut ys) = (a.split(['.', '-', '+']), b.split(['.', '-', '+']));
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    _ => x.cmp(y),
                };
                if order != std::cmp::Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn finds_the_highest_version_unless_told() {
        let text = format!(
            r#"{{"plugins":[{{"name":"a","version":"0.9.1","url":"a1","sha256":"{SHA}"}},
            {{"name":"a","version":"0.10.0","url":"a2","sha256":"{SHA}"}}]}}"#
        );
        let index = PluginIndex::parse(&text, "i").unwrap();
        assert_eq!(index.find("a", None, "i").unwrap().url, "a2");
        assert_eq!(index.find("a", Some("0.9.1"), "i").unwrap().url, "a1");
        assert!(index.find("a", Some("2"), "i").unwrap_err().contains("0.9.1"));
        assert!(index.find("b", None, "i").unwrap_err().contains("no plugin `b`"));
    }

    #[test]
    fn a_bad_pin_is_named() {
        let text = r#"{"plugins":[{"name":"a","version":"1","url":"a","sha256":"xyz"}]}"#;
        assert!(PluginIndex::parse(text, "i").unwrap_err().contains("sha256"));
    }
}
