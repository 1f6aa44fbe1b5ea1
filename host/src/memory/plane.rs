//! The shared, in-process side of the memory plane: the record collections
//! the operator declared and the semantic index. Built once per runtime
//! from the workspace config and the database.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use redb::WriteTransaction;

use super::committer::{Batch, CustomMutation, Mutation};
use super::records::{self, CollectionSpec, Collections, RecordError};
use super::retention::{self, CacheConfig, NamespaceRules, ReclaimConfig, RetentionRules};
use super::semantic::{DecayConfig, EmbedderChoice, EmbedderConfig, SemanticIndex};
use super::{Store, StoreError};

/// The `[memory]` section of the workspace config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Record collections with a JSON Schema and/or indexed fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub collections: BTreeMap<String, CollectionSpec>,
    /// How fast semantic notes fade.
    #[serde(default)]
    pub decay: DecayConfig,
    /// Key/value bounds of namespaces without rules of their own.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Bounds and retention per namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, NamespaceRules>,
    /// How often expired and retired memory is deleted.
    #[serde(default)]
    pub reclaim: ReclaimConfig,
    /// What turns notes and queries into vectors: `{ kind = "hashed" }`
    /// (the default), `{ kind = "local", path = "MODEL FOLDER" }` or
    /// `{ kind = "model", model = "provider/model", dimensions = N }`.
    #[serde(default)]
    pub embedder: EmbedderConfig,
}

impl MemoryConfig {
    /// Checks bounds, retention and decay, naming the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        let collection_retention = self.collections.iter().map(|(c, spec)| (c.clone(), spec.retention_hours));
        retention::validate(&self.cache, &self.namespaces, collection_retention, &self.reclaim)?;
        self.embedder.validate()?;
        self.decay.validate().map_err(|e| e.to_string())
    }

    /// The rules in the form the memory plane applies them.
    pub fn retention_rules(&self) -> RetentionRules {
        let collections = self
            .collections
            .iter()
            .filter_map(|(c, spec)| {
                Some((c.clone(), Duration::try_from_secs_f64(spec.retention_hours? * 3600.0).ok()?))
            })
            .collect();
        RetentionRules {
            cache: self.cache.clone(),
            namespaces: self.namespaces.clone(),
            collections,
            reclaim: self.reclaim.clone(),
        }
    }
}

/// Collections, semantic index and decay settings, shared by every call.
pub struct MemoryPlane {
    pub collections: Arc<Collections>,
    pub semantic: Arc<SemanticIndex>,
    pub decay: DecayConfig,
    pub rules: RetentionRules,
    /// Set when the configured local model could not be used and the
    /// hashed embedder serves instead: one line naming the folder and why.
    pub embedder_fallback: Option<String>,
}

impl std::fmt::Debug for MemoryPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPlane").field("decay", &self.decay).finish_non_exhaustive()
    }
}

impl MemoryPlane {
    /// Compiles the collection specs, picks the embedder and loads the
    /// semantic index from `store`. Errors name the collection or setting
    /// at fault. A local model path is taken from the folder of the
    /// database (the workspace); an unusable model falls back to the hashed
    /// embedder, logged once per process ([`EmbedderChoice::announce`]).
    pub fn load(store: &Store, config: &MemoryConfig) -> Result<MemoryPlane, String> {
        let base = store.path().parent().unwrap_or(std::path::Path::new("."));
        MemoryPlane::load_with_embedder(store, config, EmbedderChoice::open(&config.embedder, base))
    }

    /// As [`MemoryPlane::load`], with an embedder the caller picked (the
    /// workspace shares one between the memory plane and the model service).
    pub fn load_with_embedder(
        store: &Store,
        config: &MemoryConfig,
        choice: EmbedderChoice,
    ) -> Result<MemoryPlane, String> {
        let collections = Arc::new(Collections::new(config.collections.clone()).map_err(|e| e.to_string())?);
        config.validate()?;
        build_indexes(store, &collections).map_err(|e| e.to_string())?;
        choice.announce();
        let semantic = SemanticIndex::load(store, choice.embedder).map_err(|e| e.to_string())?;
        Ok(MemoryPlane {
            collections,
            semantic: Arc::new(semantic),
            decay: config.decay.clone(),
            rules: config.retention_rules(),
            embedder_fallback: choice.fallback,
        })
    }
}

/// Fills indexes the operator declared on collections that already hold
/// records. A workspace without indexes skips the durable commit, which
/// every `keel` process would otherwise pay at start.
fn build_indexes(store: &Store, collections: &Arc<Collections>) -> Result<(), StoreError> {
    let declares_indexes =
        collections.names().any(|c| collections.spec(c).is_some_and(|spec| !spec.indexes.is_empty()));
    if !declares_indexes {
        return Ok(());
    }
    let collections = collections.clone();
    let apply = Arc::new(move |txn: &WriteTransaction| {
        records::build_indexes(txn, &collections).map(drop).map_err(|e| match e {
            RecordError::Store(e) => e,
            other => StoreError::Commit(other.to_string()),
        })
    });
    let mutation = Mutation::Custom(CustomMutation { label: "records.build_indexes", apply });
    store.commit_blocking(Batch { mutations: vec![mutation], audit: vec![] }).map(drop)
}
