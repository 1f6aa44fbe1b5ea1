//! The semantic store: notes an agent remembers as text, recalled by
//! meaning rather than by key.
//!
//! * [`storage`]: notes and their vectors in redb, the source of truth.
//!   Free functions on a `WriteTransaction`, so the committer can put many
//!   callers' notes into one commit.
//! * [`SemanticIndex`]: the in-memory side, derived from redb at start and
//!   fed after each commit ([`SemanticIndex::note_committed`]). Small
//!   namespaces are searched exactly; from [`EXACT_THRESHOLD`] notes on, a
//!   background thread builds an hnsw graph. Notes committed but not yet in
//!   the graph are scanned exactly and merged, so recall never misses them.
//! * [`Embedder`]: text to vector. [`HashedEmbedder`] is the built-in,
//!   offline default; `local_embedder::LocalEmbedder` (cargo feature
//!   `local-embedder`, on by default) runs a sentence-transformers model
//!   in process. [`EmbedderConfig`] picks one (`[memory] embedder`), and
//!   [`EmbedderChoice`] falls back to the hashed one, saying so once, when
//!   the model folder is missing or broken. Every stored vector names the
//!   embedder that made it and recall only compares vectors of the index's
//!   own embedder; notes of another embedder are left out until
//!   [`SemanticIndex::reindex`] re-embeds them ([`reindex`]).
//! * [`vector`]: unit vectors, exact top-k and the hnsw wrapper (a graph
//!   over one-byte-per-coordinate copies of the vectors, whose candidates
//!   are re-scored exactly), with no notion of notes, so `keel bench` can
//!   measure it alone.
//!
//! # Ranking
//!
//! `score = max(similarity, 0) * 0.5^(age / half_life)`, where similarity
//! is the cosine of query and note, and age is `now - created_at` (zero for
//! notes from the future). A note one half-life old counts half as much as
//! an equally similar new one. Without a half-life there is no decay. Below
//! zero, similarity is clamped first, so age never lifts an unrelated note.
//! With the hnsw graph, decay re-ranks the graph's nearest candidates (its
//! `ef_search` best by similarity); a barely similar recent note outside
//! them is not found. A hit must carry every tag the filter names.

pub mod embed;
pub mod embedder_config;
mod index;
#[cfg(feature = "local-embedder")]
pub mod local_embedder;
#[cfg(feature = "local-embedder")]
pub mod model_folder;
mod namespace;
pub mod priority;
mod recall;
pub mod reindex;
pub mod storage;
#[cfg(test)]
mod testing;
pub mod vector;
mod worker;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use embed::{Embedder, HashedEmbedder, Lane};
pub use embedder_config::{EmbedderChoice, EmbedderConfig};
pub use index::{
    Hit, IndexParams, NamespaceStats, NewNote, PreparedNote, RecallFilter, RecallQuery, SemanticIndex, insert_mutation,
};
pub use reindex::ReindexReport;
pub use storage::{StoredNote, delete_note, get_note, insert_note};

use crate::memory::StoreError;

/// Namespaces with fewer live notes are searched exactly; from this many on,
/// an hnsw graph is built. Measured with `keel bench` (384 floats): an
/// exact scan costs 35 to 100 ns per note, an hnsw_rs search about 200 µs
/// at 100k notes, so the graph only wins beyond a few thousand notes,
/// and on the built-in embedder's sparse vectors its recall is poor (about
/// 0.6 at 50k notes). Below this size, recall is exact and about as fast.
pub const EXACT_THRESHOLD: usize = 10_000;
/// Longest note text, in bytes. Longer material should be split into notes
/// that each say one thing, which also recall better.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Longest query text, in bytes.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;
/// Most tags on one note, and most tags one filter may require.
pub const MAX_TAGS: usize = 32;
/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 128;
/// Largest note metadata, as compact JSON, in bytes.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Most hits one query returns.
pub const MAX_RECALL_K: usize = 100;
/// Most notes one `remember-many` call may write.
pub const MAX_BATCH_NOTES: usize = 256;
/// Most queries in one [`SemanticIndex::recall_many`] batch.
pub const MAX_BATCH_QUERIES: usize = 1_024;

/// A failure of the semantic store that is not the database's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SemanticError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("note text is empty: give the note some words to be recalled by")]
    EmptyText,
    #[error("{what} is {bytes} bytes, over the {max}-byte limit: {advice}")]
    TooLarge { what: &'static str, bytes: usize, max: usize, advice: &'static str },
    #[error("{count} tags given, at most {MAX_TAGS} are allowed: keep tags to broad categories")]
    TooManyTags { count: usize },
    #[error("tag `{tag}` is invalid: tags must be 1 to {MAX_TAG_BYTES} bytes, without leading or trailing spaces")]
    InvalidTag { tag: String },
    #[error("asked for {k} hits, at most {MAX_RECALL_K} are allowed: narrow the query or page through tags")]
    TooManyHits { k: usize },
    #[error("{count} queries in one batch, at most {MAX_BATCH_QUERIES} are allowed: split the batch")]
    TooManyQueries { count: usize },
    #[error("half-life {what} must be a positive number of hours, got {value}: fix the semantic memory config")]
    InvalidHalfLife { what: String, value: f64 },
    #[error("index parameter {name} is {value}, it must be {expected}")]
    InvalidParams { name: &'static str, value: usize, expected: &'static str },
    #[error("cannot start the semantic index thread: {0}; the system is short of threads or memory")]
    Thread(#[source] std::io::Error),
    #[error(
        "embedder `{id}` misbehaved: {detail}; it must return one finite vector of {dim} numbers per text (this is a bug in the embedder)"
    )]
    Embedder { id: String, dim: usize, detail: String },
    #[error(
        "cannot lay the hnsw graph out afresh: {reason}; searches stay right but are slower until the next graph \
         build (check the free space and permissions of the temp directory, TMPDIR)"
    )]
    Relayout { reason: String },
    #[error("embedder `{id}` is unavailable: {reason}")]
    EmbedderUnavailable { id: String, reason: String },
}

/// How fast notes fade, per namespace; part of the workspace config.
///
/// ```toml
/// default_half_life_hours = 720.0   # 30 days
/// [half_life_hours]
/// chat = 24.0
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecayConfig {
    /// Half-life of namespaces not listed below; none means no decay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_half_life_hours: Option<f64>,
    /// Half-life per namespace, in hours.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub half_life_hours: BTreeMap<String, f64>,
}

impl DecayConfig {
    /// Refuses zero, negative and non-finite half-lives.
    pub fn validate(&self) -> Result<(), SemanticError> {
        let named = self.half_life_hours.iter().map(|(ns, h)| (format!("of namespace `{ns}`"), *h));
        for (what, hours) in self.default_half_life_hours.map(|h| ("default".to_owned(), h)).into_iter().chain(named) {
            if !(hours.is_finite() && hours > 0.0) {
                return Err(SemanticError::InvalidHalfLife { what, value: hours });
            }
        }
        Ok(())
    }

    /// The half-life to pass to recall for `namespace`.
    pub fn half_life(&self, namespace: &str) -> Option<Duration> {
        let hours = self.half_life_hours.get(namespace).copied().or(self.default_half_life_hours)?;
        Duration::try_from_secs_f64(hours * 3600.0).ok().filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_config_picks_the_namespace_half_life_then_the_default() {
        let config: DecayConfig =
            toml::from_str("default_half_life_hours = 720.0\n[half_life_hours]\nchat = 24.0\n").unwrap();
        config.validate().unwrap();
        assert_eq!(config.half_life("chat"), Some(Duration::from_secs(24 * 3600)));
        assert_eq!(config.half_life("crm"), Some(Duration::from_secs(720 * 3600)));
        assert_eq!(DecayConfig::default().half_life("chat"), None);
    }

    #[test]
    fn decay_config_refuses_nonsense() {
        let bad = DecayConfig { half_life_hours: [("chat".to_owned(), 0.0)].into(), ..DecayConfig::default() };
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains("namespace `chat`"), "{err}");
        assert!(toml::from_str::<DecayConfig>("half_life = 3").is_err());
    }
}
