//! Test helpers shared by the semantic store's unit tests.

use super::Embedder;
use super::index::{Hit, IndexParams};
use super::vector::SplitMix64;

pub(super) const DIM: usize = 32;

/// `v<seed>` becomes a random unit vector of [`DIM`] floats.
pub(super) struct Seeds;

impl Embedder for Seeds {
    fn id(&self) -> &str {
        "seeds"
    }

    fn dim(&self) -> usize {
        DIM
    }

    fn embed(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        texts.iter().map(|t| SplitMix64(t[1..].parse().unwrap()).unit_vector(DIM)).collect()
    }
}

pub(super) fn params(exact_threshold: usize) -> IndexParams {
    IndexParams { exact_threshold, ..IndexParams::default() }
}

pub(super) fn texts(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.note.text.as_str()).collect()
}
