//! Which embedder a workspace uses: `[memory] embedder = { ... }` in
//! `keel.toml`, and the fallback when the configured model cannot be used.
//!
//! ```toml
//! [memory]
//! embedder = { kind = "local", path = "models/all-MiniLM-L6-v2" }   # relative to the workspace
//! # embedder = { kind = "hashed" }                                  # the default
//! # embedder = { kind = "model", model = "openai/text-embedding-3-small", dimensions = 1536 }
//! ```
//!
//! `kind = "model"` embeds through one configured model of the model
//! service (`crate::model::embedder`), which the workspace wires in.
//! A local model folder that is missing or broken never stops the
//! workspace: the hashed embedder takes over and one line says so, naming
//! the folder and why. Nothing stored changes; notes keep the id of the
//! embedder that made their vectors, and recall only compares vectors of
//! the embedder in use (`keel memory reindex` re-embeds the others).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::embed::{Embedder, HashedEmbedder};

/// `[memory] embedder`: the model that turns notes and queries into vectors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum EmbedderConfig {
    /// The built-in [`HashedEmbedder`]: shared words, not meaning.
    #[default]
    Hashed,
    /// A sentence-transformers BERT-family model folder (see
    /// [`ModelFolder`](super::model_folder::ModelFolder)), run in process.
    Local {
        /// The model folder; a relative path is taken from the workspace folder.
        path: PathBuf,
    },
    /// One model of `[model.providers]`, called through the model service
    /// (priced, budgeted, audited). Never a fallback chain: vectors of two
    /// models do not compare.
    Model {
        /// `provider/model`, e.g. `openai/text-embedding-3-small`.
        model: String,
        /// Length of the model's vectors (1536 for text-embedding-3-small).
        dimensions: usize,
    },
}

impl EmbedderConfig {
    /// Refuses settings that can never work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            EmbedderConfig::Local { path } if path.as_os_str().is_empty() => Err(
                "`memory.embedder.path` is empty: name a sentence-transformers model folder, or set kind = \"hashed\""
                    .to_owned(),
            ),
            EmbedderConfig::Model { model, .. }
                if !model.split_once('/').is_some_and(|(p, m)| !p.is_empty() && !m.is_empty()) =>
            {
                Err(format!(
                    "`memory.embedder.model` = {model:?} is not `provider/model`: name a model of [model.providers], \
                     e.g. \"openai/text-embedding-3-small\" (for the built-in embedders use kind = \"hashed\" or \"local\")"
                ))
            }
            EmbedderConfig::Model { dimensions, .. } if !(1..=MAX_DIMENSIONS).contains(dimensions) => Err(format!(
                "`memory.embedder.dimensions` = {dimensions} is out of range: use the model's vector length, 1 to {MAX_DIMENSIONS}"
            )),
            _ => Ok(()),
        }
    }

    /// The provider a `kind = "model"` embedder calls, for checking it is
    /// configured.
    pub fn model_provider(&self) -> Option<&str> {
        match self {
            EmbedderConfig::Model { model, .. } => model.split_once('/').map(|(provider, _)| provider),
            _ => None,
        }
    }
}

/// Longest vector a `kind = "model"` embedder may be configured for.
pub const MAX_DIMENSIONS: usize = 8192;

/// The embedder a workspace got, and why it is not the configured one.
#[derive(Clone)]
pub struct EmbedderChoice {
    pub embedder: Arc<dyn Embedder>,
    /// One line naming the model folder, the reason and the fallback, when
    /// the configured local model could not be used.
    pub fallback: Option<String>,
}

impl std::fmt::Debug for EmbedderChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedderChoice")
            .field("embedder", &self.embedder.id())
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl EmbedderChoice {
    /// Builds the configured embedder; a relative model path is taken from
    /// `base` (the workspace folder). Falls back to the hashed embedder
    /// with [`EmbedderChoice::fallback`] set; see [`EmbedderChoice::announce`].
    pub fn open(config: &EmbedderConfig, base: &Path) -> EmbedderChoice {
        match config {
            EmbedderConfig::Model { model, .. } => EmbedderChoice::model(
                model,
                Err("this command has no model service; open the workspace with `Workspace::memory_plane`".into()),
            ),
            EmbedderConfig::Hashed => EmbedderChoice { embedder: Arc::new(HashedEmbedder), fallback: None },
            EmbedderConfig::Local { path } => {
                let path = base.join(path);
                match load_local(&path) {
                    Ok(embedder) => EmbedderChoice { embedder, fallback: None },
                    Err(reason) => EmbedderChoice {
                        embedder: Arc::new(HashedEmbedder),
                        fallback: Some(fallback_line(&path, &reason)),
                    },
                }
            }
        }
    }

    /// The `kind = "model"` embedder the workspace started, or the hashed
    /// one with a line saying why not.
    pub fn model(model: &str, started: Result<Arc<dyn Embedder>, String>) -> EmbedderChoice {
        match started {
            Ok(embedder) => EmbedderChoice { embedder, fallback: None },
            Err(reason) => EmbedderChoice {
                embedder: Arc::new(HashedEmbedder),
                fallback: Some(format!(
                    "semantic memory: the model `{model}` cannot be used ({reason}); falling back to the built-in \
                     hashed embedder {} (matches words, not meaning)",
                    HashedEmbedder::ID
                )),
            },
        }
    }

    /// Logs the fallback line, once per process and line, however often the
    /// workspace's memory is loaded.
    pub fn announce(&self) {
        static ANNOUNCED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
        let Some(line) = &self.fallback else { return };
        let mut seen = ANNOUNCED.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.get_or_insert_with(HashSet::new).insert(line.clone()) {
            tracing::warn!("{line}");
        }
    }
}

/// The one line that says the local model is not used, and what is.
fn fallback_line(path: &Path, reason: &str) -> String {
    format!(
        "semantic memory: the local model at {} cannot be used ({reason}); falling back to the built-in hashed \
         embedder {} (matches words, not meaning) until `memory.embedder.path` names a usable model folder",
        path.display(),
        HashedEmbedder::ID
    )
}

#[cfg(feature = "local-embedder")]
fn load_local(path: &Path) -> Result<Arc<dyn Embedder>, String> {
    let embedder = super::local_embedder::LocalEmbedder::load(path).map_err(|e| e.to_string())?;
    tracing::info!(
        embedder = embedder.id(),
        load_ms = embedder.load_time().as_millis() as u64,
        "local embedder loaded"
    );
    Ok(Arc::new(embedder))
}

#[cfg(not(feature = "local-embedder"))]
fn load_local(_path: &Path) -> Result<Arc<dyn Embedder>, String> {
    Err("this keel was built without the `local-embedder` feature".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Memory {
        #[serde(default)]
        embedder: EmbedderConfig,
    }

    #[test]
    fn the_embedder_key_parses_both_kinds_and_refuses_nonsense() {
        let m: Memory = toml::from_str("embedder = { kind = \"local\", path = \"models/m\" }").unwrap();
        assert_eq!(m.embedder, EmbedderConfig::Local { path: "models/m".into() });
        let m: Memory = toml::from_str("embedder = { kind = \"hashed\" }").unwrap();
        assert_eq!(m.embedder, EmbedderConfig::Hashed);
        assert_eq!(toml::from_str::<Memory>("").unwrap().embedder, EmbedderConfig::Hashed);
        let e = toml::from_str::<Memory>("embedder = { kind = \"onnx\" }").unwrap_err().to_string();
        assert!(e.contains("embedder") && e.contains("onnx"), "{e}");
        let e = toml::from_str::<Memory>("embedder = { kind = \"local\", path = \"m\", size = 3 }").unwrap_err();
        assert!(e.to_string().contains("size"), "{e}");
        assert!(toml::from_str::<Memory>("embedder = { kind = \"local\" }").unwrap_err().to_string().contains("path"));
        let e = EmbedderConfig::Local { path: "".into() }.validate().unwrap_err();
        assert!(e.contains("`memory.embedder.path` is empty"), "{e}");
    }

    #[test]
    fn a_missing_model_falls_back_to_the_hashed_embedder_with_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let choice = EmbedderChoice::open(&EmbedderConfig::Local { path: "no-such-model".into() }, dir.path());
        assert_eq!(choice.embedder.id(), HashedEmbedder::ID);
        let line = choice.fallback.unwrap();
        assert!(!line.contains('\n'));
        assert!(line.contains(&dir.path().join("no-such-model").display().to_string()), "{line}");
        assert!(line.contains("falling back to the built-in hashed embedder keel-hashed-v1"), "{line}");
        let hashed = EmbedderChoice::open(&EmbedderConfig::Hashed, dir.path());
        assert!(hashed.fallback.is_none());
    }
}
