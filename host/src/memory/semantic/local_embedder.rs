//! [`LocalEmbedder`]: a sentence-transformers BERT-family model run in
//! process on the CPU with candle, offline, with no Python at run time.
//!
//! A text is tokenized with the folder's `tokenizer.json` (cut at the
//! model's `max_seq_length`), the BERT encoder turns its tokens into
//! vectors, the pooling config combines them into one (mean of the real
//! tokens for all-MiniLM-L6-v2), and the result is L2-normalised, as
//! sentence-transformers computes it.
//!
//! Batches: texts are tokenized together, sorted by length, and run through
//! the model [`BATCH`] at a time, each batch padded only to its own longest
//! text. (The tokenizer files of many models pad every input to 128 tokens,
//! which made short notes 5 to 10 times slower; that padding is switched
//! off.) Foreground calls ([`Embedder::embed`]) never wait for background
//! ones ([`Embedder::embed_background`]), see [`ForegroundFirst`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::embed::{Embedder, Lane, vectors_or_logged};
use super::model_folder::{ModelFolder, ModelFolderError, Pooling};
use super::priority::ForegroundFirst;

/// Texts per forward pass of a foreground call (`recall-many`). Each pass
/// is padded to its longest text, so larger batches pad more; `keel bench
/// embedder` on a busy 2-core machine found passes of 8 faster per text
/// than passes of 32 (docs/perf.md), so this may come down.
pub const BATCH: usize = 32;
/// Texts per forward pass of background work: small, so a foreground call
/// arriving meanwhile shares the cores with little work.
pub const BACKGROUND_BATCH: usize = 8;

/// Why a model folder could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalEmbedderError {
    #[error(transparent)]
    Folder(#[from] ModelFolderError),
    #[error("{path}: {detail}")]
    Load { path: PathBuf, detail: String },
}

/// A loaded sentence model. Share it (`Arc`): every method takes `&self`.
pub struct LocalEmbedder {
    id: String,
    dim: usize,
    path: PathBuf,
    pooling: Pooling,
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    gate: ForegroundFirst,
    load_time: Duration,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder").field("id", &self.id).field("path", &self.path).finish_non_exhaustive()
    }
}

impl LocalEmbedder {
    /// Loads the model folder at `path`; errors name the file at fault.
    pub fn load(path: &Path) -> Result<LocalEmbedder, LocalEmbedderError> {
        let started = Instant::now();
        let mut folder = ModelFolder::open(path)?;
        let load_err = |file: &Path, detail: String| LocalEmbedderError::Load { path: file.into(), detail };
        let config_path = path.join("config.json");
        let config: Config = serde_json::from_slice(&folder.config_json)
            .map_err(|e| load_err(&config_path, format!("not a BERT config: {e}")))?;
        let tokenizer_path = path.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_bytes(&folder.tokenizer_json)
            .map_err(|e| load_err(&tokenizer_path, format!("not a tokenizers file: {e}")))?;
        tokenizer.with_padding(None);
        let truncation = TruncationParams {
            direction: TruncationDirection::Right,
            max_length: folder.max_tokens,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        };
        tokenizer.with_truncation(Some(truncation)).map_err(|e| load_err(&tokenizer_path, e.to_string()))?;
        let weights = folder.read_weights()?;
        let device = Device::Cpu;
        let weights_path = folder.weights_path.clone();
        // candle checks shapes with asserts in places; a corrupt file must
        // give an error, never take the host down.
        let loaded = std::panic::catch_unwind(|| {
            let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)?;
            BertModel::load(vb, &config)
        });
        let model = match loaded {
            Ok(Ok(model)) => model,
            Ok(Err(e)) => return Err(load_err(&weights_path, format!("cannot load the BERT weights: {e}"))),
            Err(_) => return Err(load_err(&weights_path, "cannot load the BERT weights: the loader panicked".into())),
        };
        let embedder = LocalEmbedder {
            id: folder.id(),
            dim: folder.dim,
            path: path.to_owned(),
            pooling: folder.pooling,
            model,
            tokenizer,
            device,
            gate: ForegroundFirst::default(),
            load_time: Duration::ZERO,
        };
        // One text through the model: a folder whose weights do not fit
        // its config fails here, at load, rather than at the first recall.
        let probe = embedder.run(&["probe"], BATCH).map_err(|e| load_err(&weights_path, e))?;
        if probe.first().is_none_or(|v| v.len() != embedder.dim) {
            return Err(load_err(
                &weights_path,
                format!("the model does not give vectors of {} numbers", embedder.dim),
            ));
        }
        Ok(LocalEmbedder { load_time: started.elapsed(), ..embedder })
    }

    /// The folder the model came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How long [`LocalEmbedder::load`] took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Embeds `texts` in forward passes of at most `batch` texts, shortest
    /// first, and returns the vectors in input order.
    fn run(&self, texts: &[&str], batch: usize) -> Result<Vec<Vec<f32>>, String> {
        self.run_chunks(texts, batch, || {})
    }

    /// As [`LocalEmbedder::run`], calling `before_chunk` before each pass.
    fn run_chunks(&self, texts: &[&str], batch: usize, before_chunk: impl Fn()) -> Result<Vec<Vec<f32>>, String> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| format!("tokenizer: {e}"))?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|i| encodings[*i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(batch.max(1)) {
            before_chunk();
            let rows: Vec<&tokenizers::Encoding> = chunk.iter().map(|i| &encodings[*i]).collect();
            let vectors = self.forward(&rows).map_err(|e| format!("model: {e}"))?;
            for (i, v) in chunk.iter().zip(vectors) {
                out[*i] = v;
            }
        }
        Ok(out)
    }

    /// One forward pass over `rows`, padded to the longest; pooled and
    /// normalised vectors.
    fn forward(&self, rows: &[&tokenizers::Encoding]) -> candle_core::Result<Vec<Vec<f32>>> {
        let len = rows.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let n = rows.len();
        let (mut ids, mut types, mut mask) = (vec![0u32; n * len], vec![0u32; n * len], vec![0u32; n * len]);
        for (r, e) in rows.iter().enumerate() {
            let at = r * len;
            ids[at..at + e.len()].copy_from_slice(e.get_ids());
            types[at..at + e.len()].copy_from_slice(e.get_type_ids());
            mask[at..at + e.len()].copy_from_slice(e.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let types = Tensor::from_vec(types, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (n, len, dim)
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, len, 1)
        let pooled = match self.pooling {
            Pooling::Cls => hidden.i((.., 0))?,
            Pooling::Mean | Pooling::MeanSqrtLen => {
                let sum = hidden.broadcast_mul(&mask)?.sum(1)?;
                let count = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
                let count = if self.pooling == Pooling::Mean { count } else { count.sqrt()? };
                sum.broadcast_div(&count)?
            }
            Pooling::Max => {
                // Padding gets a very low value so it never wins the max.
                let floor = ((mask.clone() - 1.0)? * 1e9)?;
                hidden.broadcast_add(&floor)?.max(1)?
            }
        };
        let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
        pooled.broadcast_div(&norm)?.to_vec2::<f32>()
    }
}

impl Embedder for LocalEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        vectors_or_logged(&self.id, self.try_embed(texts, Lane::Foreground))
    }

    fn embed_background(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        vectors_or_logged(&self.id, self.try_embed(texts, Lane::Background))
    }

    fn try_embed(&self, texts: &[&str], lane: Lane) -> Result<Vec<Vec<f32>>, String> {
        let failed = |detail: String| format!("the local model at {} failed: {detail}", self.path.display());
        match lane {
            Lane::Foreground => {
                let _turn = self.gate.foreground();
                self.run_chunks(texts, BATCH, || {}).map_err(failed)
            }
            Lane::Background => {
                let turn = self.gate.background();
                self.run_chunks(texts, BACKGROUND_BATCH, || turn.yield_to_foreground()).map_err(failed)
            }
        }
    }

    fn describe(&self) -> String {
        format!("{} (local model at {})", self.id, self.path.display())
    }
}

const _: () = {
    const fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<LocalEmbedder>();
};
