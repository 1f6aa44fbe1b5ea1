//! The operator's rules for how much memory is kept and for how long:
//! key/value bounds per namespace, retention per namespace and per
//! collection, and how often the reclaimer runs. Declared under `[memory]`
//! in `keel.toml`, checked once at load.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::kv::KvBound;

/// Default bound of every namespace's key/value cache.
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;
pub const DEFAULT_MAX_KIB: u64 = 64 * 1024;
/// How often expired and retired memory is deleted, by default.
pub const DEFAULT_RECLAIM_INTERVAL_SECONDS: u64 = 60;
/// Most items one reclaim pass deletes per kind, by default.
pub const DEFAULT_RECLAIM_BATCH: u64 = 10_000;

/// `[memory.cache]`: the bound of every namespace not listed under
/// `[memory.namespaces]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// Keys plus values, in KiB.
    #[serde(default = "default_max_kib")]
    pub max_kib: u64,
}

fn default_max_entries() -> u64 {
    DEFAULT_MAX_ENTRIES
}
fn default_max_kib() -> u64 {
    DEFAULT_MAX_KIB
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { max_entries: DEFAULT_MAX_ENTRIES, max_kib: DEFAULT_MAX_KIB }
    }
}

/// `[memory.namespaces.NAME]`: rules for one namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceRules {
    /// Overrides `memory.cache.max_entries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_entries: Option<u64>,
    /// Overrides `memory.cache.max_kib`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_kib: Option<u64>,
    /// Key/value entries written from now on expire at most this long after
    /// their write; notes older than this are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_hours: Option<f64>,
}

/// `[memory.reclaim]`: the background reclaimer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReclaimConfig {
    #[serde(default = "default_interval")]
    pub interval_seconds: u64,
    /// Most items one pass deletes per kind (expired entries, old notes of
    /// a namespace, old records of a collection); the rest waits a pass.
    #[serde(default = "default_batch")]
    pub batch: u64,
}

fn default_interval() -> u64 {
    DEFAULT_RECLAIM_INTERVAL_SECONDS
}
fn default_batch() -> u64 {
    DEFAULT_RECLAIM_BATCH
}

impl Default for ReclaimConfig {
    fn default() -> Self {
        ReclaimConfig { interval_seconds: DEFAULT_RECLAIM_INTERVAL_SECONDS, batch: DEFAULT_RECLAIM_BATCH }
    }
}

impl ReclaimConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_seconds)
    }
}

/// Bounds and retention, resolved per namespace and collection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetentionRules {
    pub cache: CacheConfig,
    pub namespaces: BTreeMap<String, NamespaceRules>,
    /// Retention per collection, from `[memory.collections.NAME]`.
    pub collections: BTreeMap<String, Duration>,
    pub reclaim: ReclaimConfig,
}

impl RetentionRules {
    /// The key/value bound of `namespace`.
    pub fn kv_bound(&self, namespace: &str) -> KvBound {
        let rules = self.namespaces.get(namespace);
        let max_entries = rules.and_then(|r| r.max_entries).unwrap_or(self.cache.max_entries);
        let max_kib = rules.and_then(|r| r.max_kib).unwrap_or(self.cache.max_kib);
        KvBound { max_entries, max_bytes: max_kib.saturating_mul(1024) }
    }

    /// How long `namespace` keeps key/value entries and notes, if limited.
    pub fn namespace_retention(&self, namespace: &str) -> Option<Duration> {
        self.namespaces.get(namespace).and_then(|r| r.retention_hours).map(hours)
    }

    /// The expiry to store for a write at `now_ms` that asked for
    /// `requested` (absolute, Unix ms): the earlier of it and retention.
    pub fn kv_expiry(&self, namespace: &str, now_ms: u64, requested: Option<u64>) -> Option<u64> {
        let limit = self.namespace_retention(namespace).map(|r| now_ms.saturating_add(r.as_millis() as u64));
        match (requested, limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Namespaces whose notes have a retention.
    pub fn note_retentions(&self) -> impl Iterator<Item = (&str, Duration)> {
        self.namespaces.iter().filter_map(|(ns, r)| Some((ns.as_str(), hours(r.retention_hours?))))
    }
}

fn hours(h: f64) -> Duration {
    Duration::try_from_secs_f64(h * 3600.0).unwrap_or(Duration::MAX)
}

/// Checks every value, naming the key at fault as written in `keel.toml`.
pub fn validate(
    cache: &CacheConfig,
    namespaces: &BTreeMap<String, NamespaceRules>,
    collection_retention: impl Iterator<Item = (String, Option<f64>)>,
    reclaim: &ReclaimConfig,
) -> Result<(), String> {
    at_least_one("memory.cache.max_entries", cache.max_entries)?;
    at_least_one("memory.cache.max_kib", cache.max_kib)?;
    for (ns, rules) in namespaces {
        if let Some(v) = rules.max_entries {
            at_least_one(&format!("memory.namespaces.{ns}.max_entries"), v)?;
        }
        if let Some(v) = rules.max_kib {
            at_least_one(&format!("memory.namespaces.{ns}.max_kib"), v)?;
        }
        if let Some(h) = rules.retention_hours {
            positive_hours(&format!("memory.namespaces.{ns}.retention_hours"), h)?;
        }
    }
    for (collection, h) in collection_retention {
        if let Some(h) = h {
            positive_hours(&format!("memory.collections.{collection}.retention_hours"), h)?;
        }
    }
    if !(1..=86_400).contains(&reclaim.interval_seconds) {
        return Err(format!(
            "`memory.reclaim.interval_seconds` = {} is out of range: use 1 to 86400",
            reclaim.interval_seconds
        ));
    }
    if !(1..=1_000_000).contains(&reclaim.batch) {
        return Err(format!("`memory.reclaim.batch` = {} is out of range: use 1 to 1000000", reclaim.batch));
    }
    Ok(())
}

fn at_least_one(key: &str, value: u64) -> Result<(), String> {
    if value == 0 {
        return Err(format!("`{key}` = 0 would keep nothing: use at least 1"));
    }
    Ok(())
}

fn positive_hours(key: &str, value: f64) -> Result<(), String> {
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("`{key}` = {value} must be a positive number of hours (0.5 is 30 minutes)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RetentionRules {
        let scratch = NamespaceRules { max_entries: Some(10), max_kib: None, retention_hours: Some(1.0) };
        RetentionRules {
            cache: CacheConfig { max_entries: 100, max_kib: 4 },
            namespaces: [("scratch".to_owned(), scratch)].into(),
            ..RetentionRules::default()
        }
    }

    #[test]
    fn namespace_rules_override_the_cache_defaults() {
        let r = rules();
        assert_eq!(r.kv_bound("scratch"), KvBound { max_entries: 10, max_bytes: 4096 });
        assert_eq!(r.kv_bound("other"), KvBound { max_entries: 100, max_bytes: 4096 });
    }

    #[test]
    fn retention_caps_the_expiry_of_writes() {
        let r = rules();
        let hour = 3_600_000;
        assert_eq!(r.kv_expiry("scratch", 1000, None), Some(1000 + hour));
        assert_eq!(r.kv_expiry("scratch", 1000, Some(2000)), Some(2000));
        assert_eq!(r.kv_expiry("scratch", 1000, Some(1000 + 2 * hour)), Some(1000 + hour));
        assert_eq!(r.kv_expiry("other", 1000, None), None);
        assert_eq!(r.kv_expiry("other", 1000, Some(5)), Some(5));
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = NamespaceRules { retention_hours: Some(-1.0), ..NamespaceRules::default() };
        let err = validate(
            &CacheConfig::default(),
            &[("chat".to_owned(), bad)].into(),
            std::iter::empty(),
            &ReclaimConfig::default(),
        )
        .unwrap_err();
        assert!(err.contains("memory.namespaces.chat.retention_hours"), "{err}");
        let err = validate(
            &CacheConfig { max_entries: 0, max_kib: 1 },
            &BTreeMap::new(),
            std::iter::empty(),
            &ReclaimConfig::default(),
        )
        .unwrap_err();
        assert!(err.contains("memory.cache.max_entries"), "{err}");
        let err = validate(
            &CacheConfig::default(),
            &BTreeMap::new(),
            [("leads".to_owned(), Some(0.0))].into_iter(),
            &ReclaimConfig::default(),
        )
        .unwrap_err();
        assert!(err.contains("memory.collections.leads.retention_hours"), "{err}");
    }
}
