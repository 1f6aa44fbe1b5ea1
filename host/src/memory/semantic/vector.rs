//! The vector layer: index vectors, cosine similarity, exact top-k, and the
//! hnsw_rs graph. It knows nothing of notes, tags or time, so `keel bench`
//! measures it alone.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use hnsw_rs::prelude::{DistDot, Distance, Hnsw};

use super::SemanticError;

/// Length every vector is scaled to before it is compared or indexed.
///
/// hnsw_rs's SIMD dot-product distance asserts `dot <= 1.000002`, and two
/// unit vectors rounded in f32 can exceed that by a hair, which would panic
/// in the middle of a search. Just under 1 leaves a wide margin and changes
/// no ranking; [`similarity`] divides it back out.
pub const INDEX_NORM: f32 = 0.999;
/// Graph links per node and layer (twice as many on the bottom layer).
/// More links: better recall on hard data, slower build and search, more
/// memory. 12 and 16 did equally well on 100k clustered vectors; 12 builds
/// faster (see `keel bench` and docs in `bench/semantic.rs`).
pub const MAX_NB_CONNECTION: usize = 12;
/// Candidates considered per insert. 200 built no better graphs than 100
/// on the bench data, at twice the build time.
pub const EF_CONSTRUCTION: usize = 100;
/// Candidates considered per search: the recall/latency knob. 48 gave
/// recall@10 of 0.99 on 100k clustered vectors. Recall re-ranks this many
/// nearest notes with decay and filters.
pub const EF_SEARCH: usize = 48;
/// hnsw_rs exits the process (!) above 256 links; refuse that first.
const MAX_LINKS_LIMIT: usize = 256;
/// hnsw_rs's cap on graph layers.
const MAX_LAYERS: usize = 16;

/// Scales `v` to length [`INDEX_NORM`]; a zero vector stays zero.
pub fn to_index_vector(v: &[f32]) -> Box<[f32]> {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    let scale = if norm > 0.0 { f64::from(INDEX_NORM) / norm } else { 0.0 };
    v.iter().map(|x| (f64::from(*x) * scale) as f32).collect()
}

/// Cosine similarity of two index vectors (see [`to_index_vector`]).
#[inline]
pub fn similarity(a: &[f32], b: &[f32]) -> f32 {
    from_distance(DistDot.eval(a, b))
}

/// `DistDot` is `max(1 - dot, 0)`; undo it and the [`INDEX_NORM`] scaling.
#[inline]
fn from_distance(d: f32) -> f32 {
    ((1.0 - d) / (INDEX_NORM * INDEX_NORM)).clamp(-1.0, 1.0)
}

/// The graph's settings; the defaults are the named consts above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    pub max_nb_connection: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams { max_nb_connection: MAX_NB_CONNECTION, ef_construction: EF_CONSTRUCTION, ef_search: EF_SEARCH }
    }
}

impl HnswParams {
    pub fn validate(&self) -> Result<(), SemanticError> {
        let check = |name, value: usize, ok: bool, expected| {
            if ok { Ok(()) } else { Err(SemanticError::InvalidParams { name, value, expected }) }
        };
        let m = self.max_nb_connection;
        check("max_nb_connection", m, (2..=MAX_LINKS_LIMIT).contains(&m), "between 2 and 256")?;
        check("ef_construction", self.ef_construction, self.ef_construction >= m, "at least max_nb_connection")?;
        check("ef_search", self.ef_search, self.ef_search >= 1, "at least 1")
    }
}

/// One search result: the caller's id and its cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    pub id: usize,
    pub similarity: f32,
}

impl Eq for Neighbor {}

impl Ord for Neighbor {
    /// Greater is better: more similar, then the smaller id.
    fn cmp(&self, other: &Self) -> Ordering {
        self.similarity.total_cmp(&other.similarity).then_with(|| other.id.cmp(&self.id))
    }
}

impl PartialOrd for Neighbor {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// An hnsw graph over index vectors, for cosine similarity.
///
/// Inserts and searches take `&self` and may run at the same time (hnsw_rs
/// locks per node); a search may or may not see a point still being
/// inserted. Points cannot be removed: callers skip ids they no longer want
/// and rebuild when too many are dead.
pub struct AnnIndex {
    hnsw: Hnsw<'static, f32, DistDot>,
}

impl std::fmt::Debug for AnnIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnIndex").field("points", &self.len()).finish()
    }
}

impl AnnIndex {
    /// An empty graph sized for about `capacity` points.
    pub fn new(params: &HnswParams, capacity: usize) -> Result<AnnIndex, SemanticError> {
        params.validate()?;
        let hnsw = Hnsw::new(params.max_nb_connection, capacity.max(1), MAX_LAYERS, params.ef_construction, DistDot);
        Ok(AnnIndex { hnsw })
    }

    /// Adds one index vector under `id`.
    pub fn insert(&self, vector: &[f32], id: usize) {
        self.hnsw.insert_slice((vector, id));
    }

    /// Adds many index vectors using every core (rayon).
    pub fn insert_parallel(&self, items: &[(&[f32], usize)]) {
        self.hnsw.parallel_insert_slice(&items.to_vec());
    }

    /// The `n` nearest points to `query`, best first, looking at `ef`
    /// candidates (at least `n`).
    pub fn search(&self, query: &[f32], n: usize, ef: usize) -> Vec<Neighbor> {
        self.hnsw
            .search(query, n, ef.max(n))
            .into_iter()
            .map(|nb| Neighbor { id: nb.d_id, similarity: from_distance(nb.distance) })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.hnsw.get_nb_point()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The `k` index vectors most similar to `query` by brute force, best
/// first; `vectors` holds them back to back, `dim` floats each, and ids are
/// positions.
pub fn exact_top_k(vectors: &[f32], dim: usize, query: &[f32], k: usize) -> Vec<Neighbor> {
    let mut top = TopK::new(k);
    for (id, v) in vectors.chunks_exact(dim).enumerate() {
        top.push(Neighbor { id, similarity: similarity(query, v) });
    }
    top.into_sorted_vec()
}

/// The `k` greatest items seen, by `Ord`.
pub(crate) struct TopK<T: Ord> {
    k: usize,
    heap: BinaryHeap<Reverse<T>>,
}

impl<T: Ord> TopK<T> {
    pub(crate) fn new(k: usize) -> TopK<T> {
        TopK { k, heap: BinaryHeap::with_capacity(k.min(1024) + 1) }
    }

    /// Whether an item ranked like `item` would be kept; lets callers skip
    /// building items that would be dropped.
    pub(crate) fn admits(&self, item: &T) -> bool {
        self.heap.len() < self.k || self.heap.peek().is_some_and(|Reverse(worst)| item > worst)
    }

    pub(crate) fn push(&mut self, item: T) {
        if self.admits(&item) {
            if self.heap.len() == self.k {
                self.heap.pop();
            }
            self.heap.push(Reverse(item));
        }
    }

    /// Best first.
    pub(crate) fn into_sorted_vec(self) -> Vec<T> {
        self.heap.into_sorted_vec().into_iter().map(|Reverse(t)| t).collect()
    }
}

/// A small deterministic generator (splitmix64) for tests and benchmarks.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        let state = self.0;
        self.0 = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        super::storage::splitmix64(state)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A random unit vector near `center` (a unit vector): `center` plus a
    /// random unit vector times `spread`, normalised. Spread 1 puts points
    /// at cosine 0.7 from their center and 0.5 from each other, like notes
    /// on one topic.
    pub fn unit_vector_near(&mut self, center: &[f32], spread: f32) -> Vec<f32> {
        let noise = self.unit_vector(center.len());
        let mut v: Vec<f32> = center.iter().zip(&noise).map(|(c, n)| c + spread * n).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }

    /// A random unit vector, uniform on the sphere (Gaussian coordinates by
    /// Box-Muller, normalised).
    pub fn unit_vector(&mut self, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                let (u1, u2) = (1.0 - self.next_f64(), self.next_f64());
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIM: usize = 384;

    #[test]
    fn similarity_is_cosine_despite_the_index_scaling() {
        let mut rng = SplitMix64(1);
        let (a, b) = (rng.unit_vector(DIM), rng.unit_vector(DIM));
        let cos: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let (ia, ib) = (to_index_vector(&a), to_index_vector(&b));
        assert!((similarity(&ia, &ia) - 1.0).abs() < 1e-4);
        assert!((similarity(&ia, &ib) - cos).abs() < 1e-4);
        let neg: Vec<f32> = a.iter().map(|x| -x).collect();
        assert!((similarity(&ia, &to_index_vector(&neg)) + 1.0).abs() < 1e-4);
        assert_eq!(similarity(&ia, &to_index_vector(&vec![0.0; DIM])), 0.0);
    }

    #[test]
    fn top_k_keeps_the_best_in_order() {
        let mut top = TopK::new(3);
        for (id, s) in [0.1, 0.9, 0.5, 0.7, 0.2, 0.9].into_iter().enumerate() {
            top.push(Neighbor { id, similarity: s });
        }
        let ids: Vec<usize> = top.into_sorted_vec().iter().map(|n| n.id).collect();
        assert_eq!(ids, [1, 5, 3]);
    }

    #[test]
    fn params_that_would_kill_the_process_are_refused() {
        let params = HnswParams { max_nb_connection: 300, ..HnswParams::default() };
        assert!(matches!(AnnIndex::new(&params, 10), Err(SemanticError::InvalidParams { .. })));
    }

    /// Random notes on 30 random topics: the kind of data the graph is for
    /// (uniform random vectors are its worst case, see `keel bench`).
    #[test]
    fn hnsw_finds_what_brute_force_finds() {
        let (n, queries, k) = (3_000, 40, 10);
        let mut rng = SplitMix64(7);
        let topics: Vec<Vec<f32>> = (0..30).map(|_| rng.unit_vector(DIM)).collect();
        let note = |rng: &mut SplitMix64| {
            let topic = &topics[(rng.next_u64() % 30) as usize];
            to_index_vector(&rng.unit_vector_near(topic, 1.0))
        };
        let flat: Vec<f32> = (0..n).flat_map(|_| note(&mut rng).into_vec()).collect();
        let index = AnnIndex::new(&HnswParams::default(), n).unwrap();
        let items: Vec<(&[f32], usize)> = flat.chunks_exact(DIM).enumerate().map(|(i, v)| (v, i)).collect();
        index.insert_parallel(&items);
        assert_eq!(index.len(), n);
        let mut found = 0;
        for _ in 0..queries {
            let q = note(&mut rng);
            let exact: Vec<usize> = exact_top_k(&flat, DIM, &q, k).iter().map(|nb| nb.id).collect();
            let approx = index.search(&q, k, EF_SEARCH);
            assert!(approx.windows(2).all(|w| w[0].similarity >= w[1].similarity));
            found += approx.iter().filter(|nb| exact.contains(&nb.id)).count();
        }
        let recall = found as f64 / (queries * k) as f64;
        assert!(recall >= 0.95, "recall@10 {recall}");
    }
}
