//! A sentence-transformers model folder, read and checked before anything
//! is loaded: which files hold what, how token vectors become one sentence
//! vector, how many tokens a text may have, and a fingerprint of it all
//! that names the embedder ([`ModelFolder::id`]).
//!
//! The layout is the one `SentenceTransformer.save()` writes and the Hugging
//! Face hub serves:
//!
//! ```text
//! config.json                 the BERT config (architecture, sizes)
//! tokenizer.json              the tokenizers pipeline (vocabulary, normaliser)
//! model.safetensors           the weights
//! modules.json                optional: the module chain (Transformer, Pooling, Normalize)
//! 1_Pooling/config.json       optional: the pooling mode (mean when absent)
//! sentence_bert_config.json   optional: max_seq_length
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Prefix of every local embedder id; bump it when the way vectors are
/// computed from the same folder changes (pooling, normalisation, tokens).
const ID_PREFIX: &str = "keel-local-v1";
/// Largest `config.json`, `tokenizer.json` or pooling file read, in bytes:
/// a corrupt or wrong file fails fast instead of filling memory.
const MAX_SMALL_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Largest weights file read, in bytes. BERT-family sentence models worth
/// running on a CPU are well under this (all-MiniLM-L6-v2: 87 MiB).
const MAX_WEIGHTS_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Why a model folder cannot be used. Each message names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelFolderError {
    #[error("{path}: cannot read it: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

/// How token vectors are combined into one text vector (sentence-transformers'
/// `Pooling` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Average of the token vectors, padding excluded.
    Mean,
    /// The `[CLS]` token's vector.
    Cls,
    /// Coordinate-wise maximum over the tokens, padding excluded.
    Max,
    /// Sum of the token vectors divided by the square root of their count.
    MeanSqrtLen,
}

/// A checked model folder, with its small files read.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub path: PathBuf,
    /// `config.json`, parsed by the loader.
    pub config_json: Vec<u8>,
    /// `tokenizer.json`, parsed by the loader.
    pub tokenizer_json: Vec<u8>,
    pub weights_path: PathBuf,
    pub pooling: Pooling,
    /// Longest input in tokens, special tokens included; longer texts are
    /// cut (sentence-transformers' `max_seq_length`).
    pub max_tokens: usize,
    /// Vector length (the model's hidden size).
    pub dim: usize,
    /// What names the embedder: a hash of every file read and the settings.
    fingerprint: Sha256,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct BertSizes {
    hidden_size: usize,
    max_position_embeddings: usize,
}

impl ModelFolder {
    /// Reads and checks the folder's small files; the weights are only
    /// located (the loader reads them).
    pub fn open(path: &Path) -> Result<ModelFolder, ModelFolderError> {
        if !path.is_dir() {
            let detail = if path.exists() { "is not a folder" } else { "does not exist" };
            return Err(invalid(path, detail.to_owned()));
        }
        let mut fingerprint = Sha256::new();
        let config_json = read_small(&path.join("config.json"))?;
        fingerprint.update(&config_json);
        let sizes: BertSizes = parse_json(&path.join("config.json"), &config_json)?;
        let tokenizer_json = read_small(&path.join("tokenizer.json"))?;
        fingerprint.update(&tokenizer_json);

        let (pooling_dir, modules_normalize) = match read_optional(&path.join("modules.json"))? {
            Some(bytes) => {
                fingerprint.update(&bytes);
                let modules: Vec<ModuleEntry> = parse_json(&path.join("modules.json"), &bytes)?;
                let pooling = modules.iter().find(|m| m.kind.ends_with(".Pooling")).map(|m| m.path.clone());
                (
                    pooling.unwrap_or_else(|| "1_Pooling".to_owned()),
                    modules.iter().any(|m| m.kind.ends_with(".Normalize")),
                )
            }
            None => ("1_Pooling".to_owned(), true),
        };
        // Cosine ranking needs unit vectors, so vectors are normalised even
        // when the folder has no Normalize module; the flag only enters the
        // fingerprint.
        fingerprint.update([u8::from(modules_normalize)]);
        let pooling_file = path.join(&pooling_dir).join("config.json");
        let pooling = match read_optional(&pooling_file)? {
            Some(bytes) => {
                fingerprint.update(&bytes);
                let c: PoolingConfig = parse_json(&pooling_file, &bytes)?;
                match (
                    c.pooling_mode_mean_tokens,
                    c.pooling_mode_cls_token,
                    c.pooling_mode_max_tokens,
                    c.pooling_mode_mean_sqrt_len_tokens,
                ) {
                    (true, false, false, false) => Pooling::Mean,
                    (false, true, false, false) => Pooling::Cls,
                    (false, false, true, false) => Pooling::Max,
                    (false, false, false, true) => Pooling::MeanSqrtLen,
                    _ => {
                        let detail = "exactly one of pooling_mode_mean_tokens, pooling_mode_cls_token, \
                                      pooling_mode_max_tokens, pooling_mode_mean_sqrt_len_tokens must be true"
                            .to_owned();
                        return Err(invalid(&pooling_file, detail));
                    }
                }
            }
            None => Pooling::Mean,
        };

        let sbert_file = path.join("sentence_bert_config.json");
        let max_seq = match read_optional(&sbert_file)? {
            Some(bytes) => parse_json::<SentenceBertConfig>(&sbert_file, &bytes)?.max_seq_length,
            None => None,
        };
        let max_tokens = max_seq.unwrap_or(sizes.max_position_embeddings).min(sizes.max_position_embeddings);
        if max_tokens < 2 || sizes.hidden_size == 0 {
            let detail = format!(
                "hidden_size {} and max_position_embeddings {} cannot make sentence vectors",
                sizes.hidden_size, sizes.max_position_embeddings
            );
            return Err(invalid(&path.join("config.json"), detail));
        }
        fingerprint.update(format!("{pooling:?}/{max_tokens}").as_bytes());

        let weights_path = path.join("model.safetensors");
        let len = std::fs::metadata(&weights_path)
            .map_err(|source| ModelFolderError::Read { path: weights_path.clone(), source })?
            .len();
        if len > MAX_WEIGHTS_BYTES {
            return Err(invalid(&weights_path, format!("{len} bytes is over the {MAX_WEIGHTS_BYTES}-byte limit")));
        }
        Ok(ModelFolder {
            path: path.to_owned(),
            config_json,
            tokenizer_json,
            weights_path,
            pooling,
            max_tokens,
            dim: sizes.hidden_size,
            fingerprint,
        })
    }

    /// Reads the weights and adds them to the fingerprint.
    pub fn read_weights(&mut self) -> Result<Vec<u8>, ModelFolderError> {
        let bytes = std::fs::read(&self.weights_path)
            .map_err(|source| ModelFolderError::Read { path: self.weights_path.clone(), source })?;
        self.fingerprint.update(&bytes);
        Ok(bytes)
    }

    /// The embedder id: [`ID_PREFIX`] and 16 hex digits of the fingerprint
    /// of every file read (weights included once read) and the settings.
    /// The same model in another folder has the same id; a changed file
    /// gives a new one.
    pub fn id(&self) -> String {
        let digest = self.fingerprint.clone().finalize();
        format!("{ID_PREFIX}-{}", hex::encode(&digest[..8]))
    }
}

fn read_small(path: &Path) -> Result<Vec<u8>, ModelFolderError> {
    let len = std::fs::metadata(path).map_err(|source| ModelFolderError::Read { path: path.into(), source })?.len();
    if len > MAX_SMALL_FILE_BYTES {
        return Err(invalid(path, format!("{len} bytes is over the {MAX_SMALL_FILE_BYTES}-byte limit")));
    }
    std::fs::read(path).map_err(|source| ModelFolderError::Read { path: path.into(), source })
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ModelFolderError> {
    if path.exists() { read_small(path).map(Some) } else { Ok(None) }
}

fn parse_json<T: for<'de> Deserialize<'de>>(path: &Path, bytes: &[u8]) -> Result<T, ModelFolderError> {
    serde_json::from_slice(bytes).map_err(|e| invalid(path, format!("not the JSON expected: {e}")))
}

fn invalid(path: &Path, detail: String) -> ModelFolderError {
    ModelFolderError::Invalid { path: path.into(), detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    const CONFIG: &str = r#"{"hidden_size": 8, "max_position_embeddings": 512}"#;

    #[test]
    fn settings_come_from_the_pooling_and_sentence_configs() {
        let dir = folder(&[
            ("config.json", CONFIG),
            ("tokenizer.json", "{}"),
            ("model.safetensors", "w"),
            ("modules.json", r#"[{"path": "", "type": "x.Transformer"}, {"path": "P", "type": "x.Pooling"}]"#),
            ("P/config.json", r#"{"pooling_mode_cls_token": true}"#),
            ("sentence_bert_config.json", r#"{"max_seq_length": 256}"#),
        ]);
        let f = ModelFolder::open(dir.path()).unwrap();
        assert_eq!((f.pooling, f.max_tokens, f.dim), (Pooling::Cls, 256, 8));
        assert!(f.id().starts_with("keel-local-v1-") && f.id().len() == 14 + 16, "{}", f.id());
    }

    #[test]
    fn defaults_are_mean_pooling_and_the_position_limit_and_ids_follow_the_files() {
        let dir = folder(&[("config.json", CONFIG), ("tokenizer.json", "{}"), ("model.safetensors", "w")]);
        let mut f = ModelFolder::open(dir.path()).unwrap();
        assert_eq!((f.pooling, f.max_tokens), (Pooling::Mean, 512));
        let before = f.id();
        f.read_weights().unwrap();
        let with_weights = f.id();
        assert_ne!(before, with_weights);
        std::fs::write(dir.path().join("model.safetensors"), "v").unwrap();
        let mut g = ModelFolder::open(dir.path()).unwrap();
        g.read_weights().unwrap();
        assert_ne!(g.id(), with_weights, "changed weights, new id");
    }

    #[test]
    fn missing_or_broken_files_are_named() {
        let dir = folder(&[("config.json", "{not json"), ("tokenizer.json", "{}")]);
        let e = ModelFolder::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("not the JSON expected"), "{e}");
        let dir = folder(&[("config.json", CONFIG)]);
        let e = ModelFolder::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("tokenizer.json: cannot read it"), "{e}");
        let e = ModelFolder::open(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(e.ends_with("nope: does not exist"), "{e}");
        let dir = folder(&[
            ("config.json", CONFIG),
            ("tokenizer.json", "{}"),
            ("1_Pooling/config.json", r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}"#),
        ]);
        let e = ModelFolder::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("exactly one of"), "{e}");
    }
}
