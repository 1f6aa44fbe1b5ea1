//! The semantic store's vector layer against brute force, in the same run:
//! hnsw_rs as the semantic index configures it, and an exact scan of the
//! same vectors, on two data sets of unit vectors of 384 floats.
//!
//! * `uniform`: uniformly random vectors. Every vector is about as far from
//!   every other, there is no neighbourhood for the graph to follow: the
//!   worst case for recall, and what the issue asked to measure.
//! * `topics`: notes around one random topic per 100 notes (cosine 0.7 to
//!   their topic), closer to what embedding models produce.
//!
//! Besides wall-clock percentiles the report gives the thread's CPU time
//! per query (Linux), which stays honest when other work shares the cores.

use std::time::{Duration, Instant};

use super::{Percentiles, percentiles};
use crate::memory::semantic::HashedEmbedder;
use crate::memory::semantic::vector::{self, AnnIndex, HnswParams, SplitMix64};

/// Vector length, the built-in embedder's.
const DIM: usize = HashedEmbedder::DIM;
/// Hits per query; recall is measured at this depth.
const K: usize = 10;
/// Fixed so runs are comparable.
const SEED: u64 = 0x6b65_656c;
/// Notes per topic in the `topics` data set.
const NOTES_PER_TOPIC: usize = 100;
/// Distance of a note from its topic (see [`SplitMix64::unit_vector_near`]).
const TOPIC_SPREAD: f32 = 1.0;
/// Queries run before measuring (page faults, caches).
const WARMUP_QUERIES: usize = 50;
/// `ef_search` values the sweep tries besides the configured one.
const SWEEP_EF: [usize; 6] = [16, 32, 64, 128, 200, 400];

/// The shape of the vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataset {
    Uniform,
    Topics,
}

impl Dataset {
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Uniform => "uniform",
            Dataset::Topics => "topics",
        }
    }
}

/// One `ef_search` setting of the sweep.
#[derive(Debug, Clone, Copy)]
pub struct SweepRow {
    pub ef_search: usize,
    pub recall: f64,
    pub p50: Duration,
}

/// The measurements on one data set.
#[derive(Debug, Clone)]
pub struct DatasetReport {
    pub dataset: Dataset,
    pub build: Duration,
    /// Share of the exact top 10 that hnsw returned, over all queries.
    pub recall: f64,
    pub hnsw: Percentiles,
    /// Queries per second, one thread, back to back.
    pub hnsw_qps: f64,
    /// Mean CPU time of the searching thread per query, where measurable.
    pub hnsw_cpu: Option<Duration>,
    pub exact: Percentiles,
    pub exact_qps: f64,
    pub sweep: Vec<SweepRow>,
}

impl DatasetReport {
    /// How many times faster than brute force hnsw is, at p50.
    pub fn speedup(&self) -> f64 {
        self.exact.p50.as_secs_f64() / self.hnsw.p50.as_secs_f64()
    }
}

/// The whole report.
#[derive(Debug, Clone)]
pub struct SemanticReport {
    pub n: usize,
    pub queries: usize,
    pub params: HnswParams,
    /// Threads the parallel build used.
    pub threads: usize,
    pub datasets: Vec<DatasetReport>,
}

/// Builds graphs of `n` vectors of each data set and runs `queries` new
/// vectors of the same kind against them and against brute force, with the
/// semantic index's default params.
pub fn run(n: usize, queries: usize) -> anyhow::Result<SemanticReport> {
    run_with(n, queries, HnswParams::default(), &[Dataset::Uniform, Dataset::Topics])
}

pub fn run_with(n: usize, queries: usize, params: HnswParams, datasets: &[Dataset]) -> anyhow::Result<SemanticReport> {
    anyhow::ensure!(n > K && queries > 0, "need more than {K} vectors and at least one query");
    let datasets = datasets.iter().map(|d| measure(*d, n, queries, &params)).collect::<anyhow::Result<_>>()?;
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    Ok(SemanticReport { n, queries, params, threads, datasets })
}

fn measure(dataset: Dataset, n: usize, queries: usize, params: &HnswParams) -> anyhow::Result<DatasetReport> {
    let mut rng = SplitMix64(SEED);
    let topics: Vec<Vec<f32>> = (0..n.div_ceil(NOTES_PER_TOPIC)).map(|_| rng.unit_vector(DIM)).collect();
    let sample = |rng: &mut SplitMix64| {
        let v = match dataset {
            Dataset::Uniform => rng.unit_vector(DIM),
            Dataset::Topics => {
                let topic = &topics[(rng.next_u64() % topics.len() as u64) as usize];
                rng.unit_vector_near(topic, TOPIC_SPREAD)
            }
        };
        vector::to_index_vector(&v)
    };
    let data: Vec<f32> = (0..n).flat_map(|_| sample(&mut rng).into_vec()).collect();
    let qs: Vec<Box<[f32]>> = (0..queries).map(|_| sample(&mut rng)).collect();

    let index = AnnIndex::new(params, n)?;
    let items: Vec<(&[f32], usize)> = data.chunks_exact(DIM).enumerate().map(|(i, v)| (v, i)).collect();
    let started = Instant::now();
    index.insert_parallel(&items);
    let build = started.elapsed();

    let (exact_times, truth): (Vec<Duration>, Vec<Vec<usize>>) = qs
        .iter()
        .map(|q| {
            let t = Instant::now();
            let top = vector::exact_top_k(&data, DIM, q, K);
            (t.elapsed(), top.iter().map(|nb| nb.id).collect())
        })
        .unzip();
    let exact_total: Duration = exact_times.iter().sum();

    for q in qs.iter().cycle().take(WARMUP_QUERIES) {
        index.search(q, K, params.ef_search);
    }
    let run_queries = |ef: usize| {
        let (mut times, mut found) = (Vec::with_capacity(queries), 0);
        let (started, cpu) = (Instant::now(), thread_cpu_time());
        for (q, truth) in qs.iter().zip(&truth) {
            let t = Instant::now();
            let hits = index.search(q, K, ef);
            times.push(t.elapsed());
            found += hits.iter().filter(|nb| truth.contains(&nb.id)).count();
        }
        let cpu = cpu.zip(thread_cpu_time()).map(|(a, b)| b.saturating_sub(a) / queries as u32);
        (found as f64 / (queries * K) as f64, percentiles(times), started.elapsed(), cpu)
    };
    let (recall, hnsw, hnsw_total, hnsw_cpu) = run_queries(params.ef_search);
    let mut sweep: Vec<SweepRow> = SWEEP_EF
        .iter()
        .chain([&params.ef_search])
        .map(|&ef| {
            let (recall, p, _, _) = run_queries(ef);
            SweepRow { ef_search: ef, recall, p50: p.p50 }
        })
        .collect();
    sweep.sort_by_key(|r| r.ef_search);
    sweep.dedup_by_key(|r| r.ef_search);

    Ok(DatasetReport {
        dataset,
        build,
        recall,
        hnsw,
        hnsw_qps: queries as f64 / hnsw_total.as_secs_f64(),
        hnsw_cpu,
        exact: percentiles(exact_times),
        exact_qps: queries as f64 / exact_total.as_secs_f64(),
        sweep,
    })
}

/// CPU time this thread has run, from `/proc/thread-self/schedstat`
/// (nanoseconds); `None` elsewhere.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(stat.split_whitespace().next()?.parse().ok()?))
}

impl std::fmt::Display for SemanticReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
        let p = &self.params;
        writeln!(
            f,
            "semantic vectors: {} unit vectors of {DIM} floats, {} queries, top {K}; hnsw_rs max_nb_connection {}, \
             ef_construction {}, ef_search {}",
            self.n, self.queries, p.max_nb_connection, p.ef_construction, p.ef_search
        )?;
        writeln!(
            f,
            "{:<8} {:>8} {:>10} {:>11} {:>11} {:>9} {:>11} {:>9} {:>11} {:>9} {:>8}",
            "data",
            "build s",
            "inserts/s",
            "hnsw p50",
            "hnsw p99",
            "hnsw q/s",
            "cpu/query",
            "recall@10",
            "exact p50",
            "exact q/s",
            "speedup"
        )?;
        for d in &self.datasets {
            writeln!(
                f,
                "{:<8} {:>8.1} {:>10.0} {:>11} {:>11} {:>9.0} {:>11} {:>9.3} {:>11} {:>9.0} {:>7.1}x",
                d.dataset.name(),
                d.build.as_secs_f64(),
                self.n as f64 / d.build.as_secs_f64(),
                us(d.hnsw.p50),
                us(d.hnsw.p99),
                d.hnsw_qps,
                d.hnsw_cpu.map_or("-".into(), us),
                d.recall,
                us(d.exact.p50),
                d.exact_qps,
                d.speedup()
            )?;
        }
        writeln!(f, "build on {} threads; searches on one thread; speedup = exact p50 / hnsw p50", self.threads)?;
        for d in &self.datasets {
            write!(f, "ef_search sweep, {} (recall@10, p50):", d.dataset.name())?;
            for r in &d.sweep {
                write!(f, "  {}: {:.3} {}", r.ef_search, r.recall, us(r.p50))?;
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "uniform: uniformly random vectors, the graph's worst case; topics: {NOTES_PER_TOPIC} notes per random \
             topic at cosine 0.7 from it"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_reports_every_number() {
        let report = run(2_000, 30).unwrap();
        let text = report.to_string();
        let topics = report.datasets.iter().find(|d| d.dataset == Dataset::Topics).unwrap();
        assert!(topics.recall >= 0.9, "{text}");
        assert!(report.datasets.iter().all(|d| d.hnsw_qps > 0.0 && d.exact_qps > 0.0 && d.recall > 0.0), "{text}");
        for needle in ["inserts/s", "uniform", "topics", "recall@10", "exact p50", "speedup", "sweep, topics"] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }

    /// The numbers for docs/perf.md:
    /// `cargo test --release -p keel-host --lib bench::semantic -- --ignored --nocapture`
    #[test]
    #[ignore = "takes minutes; run in release"]
    fn full_size() {
        let report = run(100_000, 1_000).unwrap();
        println!("{report}");
    }
}
