//! The vector layer: index vectors, cosine similarity, exact top-k, and the
//! hnsw_rs graph. It knows nothing of notes, tags or time, so `keel bench`
//! measures it alone.
//!
//! The graph keeps its own copy of each vector, quantized to one byte per
//! coordinate ([`quantize`]). A search spends its time waiting for memory:
//! for the graph nodes it walks (hnsw_rs links them through `Arc`s, two
//! dependent loads per neighbour looked at) and for the vector of each
//! candidate; a quarter of the bytes per vector made searches about a
//! fifth faster at the same recall (docs/perf.md). The graph's similarities
//! are therefore approximate (within about 0.01); callers re-score its
//! candidates against the exact vectors they keep anyway ([`rerank`]).
//!
//! A graph built by many threads is scattered over the heap: each node,
//! each link and each vector is its own allocation, interleaved with the
//! other threads' and with scratch space. [`AnnIndex::relaid`] copies it
//! through hnsw_rs's own dump and reload, which allocates the nodes one
//! after the other and each node's links together; the same searches then
//! take about a third less time (docs/perf.md).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::{AnnT, DistDot, Distance, Hnsw};

use super::SemanticError;

/// Length every vector is scaled to before it is compared or indexed.
///
/// hnsw_rs's SIMD dot-product distance, which [`similarity`] uses, asserts
/// `dot <= 1.000002`, and two unit vectors rounded in f32 can exceed that
/// by a hair, which would panic in the middle of a search. Just under 1
/// leaves a wide margin and changes no ranking; [`similarity`] divides it
/// back out.
pub const INDEX_NORM: f32 = 0.999;
/// Graph links per node and layer (twice as many on the bottom layer).
/// More links: better recall per candidate looked at, slower build, more
/// memory. On 100k clustered vectors (see `keel bench`), 16 reached
/// recall@10 0.96 about 5% sooner than 12 (which needs `ef_search` 32 for
/// it); 10 was slower for the same recall, 24 no faster and slower to build.
pub const MAX_NB_CONNECTION: usize = 16;
/// Candidates considered per insert. 200 gave no better recall for the
/// same search time than 100 on the bench data, at twice the build time.
pub const EF_CONSTRUCTION: usize = 100;
/// Candidates considered per search: the recall/latency knob. On 100k
/// clustered vectors (see `keel bench`) 16 gave recall@10 0.94, 20 gave
/// 0.96 and 24 gave 0.98, each step costing about 10% more time. Recall
/// re-ranks this many nearest notes with decay and filters.
pub const EF_SEARCH: usize = 20;
/// hnsw_rs exits the process (!) above 256 links; refuse that first.
const MAX_LINKS_LIMIT: usize = 256;
/// hnsw_rs's cap on graph layers.
const MAX_LAYERS: usize = 16;
/// Bytes after the coordinates of a [`quantize`]d vector: the step, an f32.
const STEP_BYTES: usize = 4;
/// Largest quantized coordinate; the vector's largest magnitude maps to it.
const QUANT_MAX: f32 = 127.0;

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

/// The graph's copy of an index vector: each coordinate as a multiple of
/// one step, the vector's largest magnitude over 127, rounded to an `i8`;
/// then the step itself, as the 4 bytes of an f32. A step per vector keeps
/// sparse vectors (a few large coordinates) as exact as dense ones. The
/// rounding moves a dot product of unit vectors by about 0.001.
pub fn quantize(v: &[f32]) -> Vec<i8> {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let step = if max > 0.0 { max / QUANT_MAX } else { 0.0 };
    let mut out: Vec<i8> = Vec::with_capacity(v.len() + STEP_BYTES);
    out.extend(v.iter().map(|x| if step > 0.0 { (x / step).round().clamp(-QUANT_MAX, QUANT_MAX) as i8 } else { 0 }));
    out.extend(step.to_le_bytes().map(|b| b as i8));
    out
}

/// Splits a [`quantize`]d vector into coordinates and step.
#[inline]
fn dequantize_parts(q: &[i8]) -> (&[i8], f32) {
    let (coords, step) = q.split_at(q.len() - STEP_BYTES);
    (coords, f32::from_le_bytes([step[0] as u8, step[1] as u8, step[2] as u8, step[3] as u8]))
}

/// The graph's distance between two [`quantize`]d index vectors: what
/// `DistDot` gives for the originals, `max(1 - dot, 0)`, within about 0.001.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuantizedDot;

impl Distance<i8> for QuantizedDot {
    #[inline]
    fn eval(&self, a: &[i8], b: &[i8]) -> f32 {
        let ((a, step_a), (b, step_b)) = (dequantize_parts(a), dequantize_parts(b));
        (1.0 - dot_i8(a, b) as f32 * step_a * step_b).max(0.0)
    }
}

#[inline]
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return simd::dot_i8(a, b);
    }
    dot_i8_lanes(a, b)
}

/// Lanes of [`dot_i8_lanes`]: independent sums the compiler keeps in vector
/// registers (SSE2 everywhere, AVX2 through [`simd`]).
const LANES: usize = 32;

// The kernel indexes fixed-size arrays in `while` loops: optimised, that
// vectorises like iterators do; unoptimised (debug builds, where tests
// build graphs of thousands of vectors), it runs several times faster.

#[inline(always)]
fn dot_i8_lanes(a: &[i8], b: &[i8]) -> i32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0i32; LANES];
    let (xs, ys) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: i32 = xs.remainder().iter().zip(ys.remainder()).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum();
    for (x, y) in xs.zip(ys) {
        let (x, y): (&[i8; LANES], &[i8; LANES]) = (x.try_into().expect("chunk"), y.try_into().expect("chunk"));
        let mut i = 0;
        while i < LANES {
            // An i8 times an i8 fits an i16, which lets the compiler use a
            // multiply-add of 16-bit lanes.
            acc[i] += (x[i] as i16 * y[i] as i16) as i32;
            i += 1;
        }
    }
    acc.iter().sum::<i32>() + tail
}

/// The quantized dot product compiled for AVX2, which x86_64 does not
/// promise: about twice as fast as SSE2.
#[cfg(target_arch = "x86_64")]
#[expect(unsafe_code, reason = "calls AVX2 code only after checking that the CPU has AVX2")]
mod simd {
    #[target_feature(enable = "avx2")]
    fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
        super::dot_i8_lanes(a, b)
    }

    /// Callers check `is_x86_feature_detected!("avx2")` first.
    #[inline]
    pub(super) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        debug_assert!(std::arch::is_x86_feature_detected!("avx2"));
        // SAFETY: the caller checked that this CPU has AVX2.
        unsafe { dot_i8_avx2(a, b) }
    }
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

/// An hnsw graph over index vectors, for cosine similarity, on
/// [`quantize`]d copies of them.
///
/// Inserts and searches take `&self` and may run at the same time (hnsw_rs
/// locks per node); a search may or may not see a point still being
/// inserted. Points cannot be removed: callers skip ids they no longer want
/// and rebuild when too many are dead.
pub struct AnnIndex {
    hnsw: Hnsw<'static, i8, QuantizedDot>,
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
        let hnsw =
            Hnsw::new(params.max_nb_connection, capacity.max(1), MAX_LAYERS, params.ef_construction, QuantizedDot);
        Ok(AnnIndex { hnsw })
    }

    /// Adds one index vector under `id`.
    pub fn insert(&self, vector: &[f32], id: usize) {
        self.hnsw.insert_slice((&quantize(vector), id));
    }

    /// Adds many index vectors using every core (rayon).
    pub fn insert_parallel(&self, items: &[(&[f32], usize)]) {
        let quantized: Vec<(Vec<i8>, usize)> = items.iter().map(|(v, id)| (quantize(v), *id)).collect();
        let slices: Vec<(&[i8], usize)> = quantized.iter().map(|(q, id)| (q.as_slice(), *id)).collect();
        self.hnsw.parallel_insert_slice(&slices);
    }

    /// The `n` nearest points to `query`, best first, looking at `ef`
    /// candidates (at least `n`). Similarities are the graph's, within
    /// about 0.01 of the exact ones: see [`rerank`].
    pub fn search(&self, query: &[f32], n: usize, ef: usize) -> Vec<Neighbor> {
        self.hnsw
            .search(&quantize(query), n, ef.max(n))
            .into_iter()
            .map(|nb| Neighbor { id: nb.d_id, similarity: from_distance(nb.distance) })
            .collect()
    }

    /// The same graph (same points, links and entry point) in fresh,
    /// compact memory, through a dump to a scratch directory under the
    /// system temp dir (`TMPDIR`) and a reload; about 1.5 s and 70 MB of
    /// scratch files per 100k points. On error the caller keeps `self`:
    /// searches stay right, only slower.
    pub fn relaid(&self) -> Result<AnnIndex, SemanticError> {
        self.relaid_in(&std::env::temp_dir())
    }

    /// [`AnnIndex::relaid`] with its scratch directory under `parent`.
    fn relaid_in(&self, parent: &Path) -> Result<AnnIndex, SemanticError> {
        let failed = |reason: String| SemanticError::Relayout { reason };
        let scratch = tempfile::Builder::new()
            .prefix("keel-hnsw-")
            .tempdir_in(parent)
            .map_err(|e| failed(format!("cannot create a scratch directory in {}: {e}", parent.display())))?;
        const BASENAME: &str = "graph";
        // hnsw_rs panics, rather than failing, on some I/O errors.
        let relaid = catch_unwind(AssertUnwindSafe(|| {
            self.hnsw.file_dump(scratch.path(), BASENAME).map_err(|e| failed(format!("dump failed: {e:#}")))?;
            // A reloaded graph borrows its loader for as long as it lives
            // (for memory-mapped vectors, which this does not use). The
            // loader is a few hundred bytes and a relayout follows a graph
            // build of seconds, so it is kept for the life of the process.
            let loader: &'static HnswIo = Box::leak(Box::new(HnswIo::new(scratch.path(), BASENAME)));
            let mut hnsw =
                loader.load_hnsw_with_dist(QuantizedDot).map_err(|e| failed(format!("reload failed: {e:#}")))?;
            // What `Hnsw::new` sets, so later inserts link as before.
            hnsw.set_extend_candidates(false);
            Ok(AnnIndex { hnsw })
        }))
        .unwrap_or_else(|_| Err(failed("hnsw_rs panicked; see the log above".into())))?;
        if relaid.len() != self.len() {
            return Err(failed(format!("the reloaded graph has {} points instead of {}", relaid.len(), self.len())));
        }
        Ok(relaid)
    }

    pub fn len(&self) -> usize {
        self.hnsw.get_nb_point()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The `k` best of `candidates` by exact similarity to `query`, best
/// first; `vector_of` gives the index vector of an id.
pub fn rerank<'v>(
    query: &[f32],
    candidates: &[Neighbor],
    k: usize,
    vector_of: impl Fn(usize) -> &'v [f32],
) -> Vec<Neighbor> {
    let mut top = TopK::new(k);
    for nb in candidates {
        top.push(Neighbor { id: nb.id, similarity: similarity(query, vector_of(nb.id)) });
    }
    top.into_sorted_vec()
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
    fn the_graph_distance_is_close_to_the_cosine_for_dense_and_sparse_vectors() {
        let mut rng = SplitMix64(2);
        let center = rng.unit_vector(DIM);
        let mut sparse = vec![0f32; DIM];
        (sparse[3], sparse[100], sparse[200]) = (0.9, -0.3, 0.01);
        let vectors: Vec<Box<[f32]>> = (0..20)
            .map(|_| rng.unit_vector_near(&center, 1.0))
            .chain([sparse.clone(), sparse.iter().map(|x| x * 0.5 + 0.01).collect()])
            .map(|v| to_index_vector(&v))
            .collect();
        for a in &vectors {
            for b in &vectors {
                let exact = similarity(a, b);
                let graph = from_distance(QuantizedDot.eval(&quantize(a), &quantize(b)));
                assert!((graph - exact).abs() < 0.01, "{graph} vs {exact}");
                let (qa, qb) = (quantize(a), quantize(b));
                let (ca, cb) = (dequantize_parts(&qa).0, dequantize_parts(&qb).0);
                assert_eq!(dot_i8(ca, cb), dot_i8_lanes(ca, cb));
            }
        }
        // Lengths that are not a multiple of the lanes, on every code path.
        let (x, y): (Vec<i8>, Vec<i8>) =
            (0..100).map(|i| ((i * 7 % 255 - 127) as i8, (i * 5 % 255 - 127) as i8)).unzip();
        for len in [0, 1, 31, 33, 100] {
            let naive: i32 = x[..len].iter().zip(&y[..len]).map(|(p, q)| i32::from(*p) * i32::from(*q)).sum();
            assert_eq!((dot_i8(&x[..len], &y[..len]), dot_i8_lanes(&x[..len], &y[..len])), (naive, naive));
        }
        let zero = quantize(&[0.0; DIM]);
        assert_eq!(QuantizedDot.eval(&zero, &quantize(&vectors[0])), 1.0);
        assert!(quantize(&vectors[0])[..DIM].iter().any(|x| x.abs() == 127));
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
            let candidates = index.search(&q, EF_SEARCH, EF_SEARCH);
            assert!(candidates.windows(2).all(|w| w[0].similarity >= w[1].similarity));
            let approx = rerank(&q, &candidates, k, |id| &flat[id * DIM..(id + 1) * DIM]);
            assert!(approx.windows(2).all(|w| w[0].similarity >= w[1].similarity));
            assert_eq!(approx[0].similarity, similarity(&q, &flat[approx[0].id * DIM..(approx[0].id + 1) * DIM]));
            found += approx.iter().filter(|nb| exact.contains(&nb.id)).count();
        }
        let recall = found as f64 / (queries * k) as f64;
        assert!(recall >= 0.95, "recall@10 {recall}");

        // Laid out afresh: the same graph, so the same answers; and it
        // takes more points.
        let relaid = index.relaid().unwrap();
        assert_eq!(relaid.len(), n);
        for _ in 0..queries {
            let q = note(&mut rng);
            let ids = |graph: &AnnIndex| graph.search(&q, k, EF_SEARCH).iter().map(|nb| nb.id).collect::<Vec<_>>();
            assert_eq!(ids(&relaid), ids(&index));
        }
        let more: Vec<Box<[f32]>> = (0..50).map(|_| note(&mut rng)).collect();
        for (i, v) in more.iter().enumerate() {
            relaid.insert(v, n + i);
        }
        assert_eq!(relaid.len(), n + more.len());
        for (i, v) in more.iter().enumerate() {
            assert_eq!(relaid.search(v, 1, EF_SEARCH)[0].id, n + i);
        }
    }

    #[test]
    fn a_relayout_without_scratch_space_says_where_and_what_to_do() {
        let index = AnnIndex::new(&HnswParams::default(), 10).unwrap();
        index.insert(&to_index_vector(&SplitMix64(3).unit_vector(DIM)), 0);
        let err = index.relaid_in(Path::new("/nonexistent/keel")).unwrap_err().to_string();
        assert!(err.contains("scratch directory in /nonexistent/keel"), "{err}");
        assert!(err.contains("searches stay right") && err.contains("TMPDIR"), "{err}");
        assert_eq!(index.relaid().unwrap().len(), 1);
    }
}
