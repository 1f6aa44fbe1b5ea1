//! The semantic store's vector layer against brute force, in the same run:
//! hnsw_rs as the semantic index configures it (the graph laid out afresh
//! after its build, [`AnnIndex::relaid`]), the same graph as inserted, an
//! exact scan of the same vectors, and, when it is installed, hnswlib
//! (`pip install hnswlib`) on the same vectors, on two data sets of unit
//! vectors of 384 floats.
//!
//! * `uniform`: uniformly random vectors. Every vector is about as far from
//!   every other, there is no neighbourhood for the graph to follow: the
//!   worst case for recall, and what the issue asked to measure.
//! * `topics`: notes around one random topic per 100 notes (cosine 0.7 to
//!   their topic), closer to what embedding models produce.
//!
//! Besides wall-clock percentiles the report gives the thread's CPU time
//! per query (Linux), which stays honest when other work shares the cores.
//! Each graph search series runs [`ROUNDS`] times and the fastest counts.
//! hnswlib runs in a Python process (`host/benches/hnswlib_semantic.py`,
//! embedded here) on a file of the vectors written to the temp directory.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize;

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
/// Times each graph search series runs; the report keeps the fastest (by
/// p50), so other work on the machine skews the numbers less.
const ROUNDS: usize = 3;
/// `ef_search` values the sweep tries besides the configured one.
const SWEEP_EF: [usize; 7] = [12, 16, 20, 32, 48, 64, 128];
/// The hnswlib side, run by `python3` (or `$KEEL_BENCH_PYTHON`).
const HNSWLIB_SCRIPT: &str = include_str!("../../benches/hnswlib_semantic.py");

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
    /// Time to lay the built graph out afresh.
    pub relayout: Duration,
    /// Share of the exact top 10 that hnsw returned, over all queries.
    pub recall: f64,
    pub hnsw: Percentiles,
    /// Queries per second, one thread, back to back.
    pub hnsw_qps: f64,
    /// Mean CPU time of the searching thread per query, where measurable.
    pub hnsw_cpu: Option<Duration>,
    /// The same graph as inserted, before its relayout.
    pub as_built_recall: f64,
    pub as_built: Percentiles,
    pub exact: Percentiles,
    pub exact_qps: f64,
    pub sweep: Vec<SweepRow>,
    /// hnswlib on the same vectors and queries, or why it did not run.
    pub hnswlib: Result<HnswlibReport, String>,
}

/// hnswlib with the same `M` and `ef_construction`.
#[derive(Debug, Clone, Deserialize)]
pub struct HnswlibReport {
    pub version: String,
    /// Seconds to insert every vector, on as many threads as hnsw_rs used.
    pub build_s: f64,
    /// The configured `ef_search` first, then the sweep's.
    pub rows: Vec<HnswlibRow>,
}

/// hnswlib at one `ef`, queries one at a time on one thread.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct HnswlibRow {
    pub ef: usize,
    pub recall: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub qps: f64,
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

    let built = AnnIndex::new(params, n)?;
    let items: Vec<(&[f32], usize)> = data.chunks_exact(DIM).enumerate().map(|(i, v)| (v, i)).collect();
    let started = Instant::now();
    built.insert_parallel(&items);
    let build = started.elapsed();
    let started = Instant::now();
    let index = built.relaid()?;
    let relayout = started.elapsed();

    let (exact_times, truth): (Vec<Duration>, Vec<Vec<usize>>) = qs
        .iter()
        .map(|q| {
            let t = Instant::now();
            let top = vector::exact_top_k(&data, DIM, q, K);
            (t.elapsed(), top.iter().map(|nb| nb.id).collect())
        })
        .unzip();
    let exact_total: Duration = exact_times.iter().sum();

    // What the semantic index does: the graph's `ef` best, re-scored exactly.
    let vector_of = |id: usize| &data[id * DIM..(id + 1) * DIM];
    let search = |index: &AnnIndex, q: &[f32], ef: usize| vector::rerank(q, &index.search(q, ef, ef), K, vector_of);
    for graph in [&built, &index] {
        for q in qs.iter().cycle().take(WARMUP_QUERIES) {
            search(graph, q, params.ef_search);
        }
    }
    let run_queries = |graph: &AnnIndex, ef: usize| {
        let (mut times, mut found) = (Vec::with_capacity(queries), 0);
        let (started, cpu) = (Instant::now(), thread_cpu_time());
        for (q, truth) in qs.iter().zip(&truth) {
            let t = Instant::now();
            let hits = search(graph, q, ef);
            times.push(t.elapsed());
            found += hits.iter().filter(|nb| truth.contains(&nb.id)).count();
        }
        let cpu = cpu.zip(thread_cpu_time()).map(|(a, b)| b.saturating_sub(a) / queries as u32);
        (found as f64 / (queries * K) as f64, percentiles(times), started.elapsed(), cpu)
    };
    let best_of_rounds = |graph: &AnnIndex, ef: usize| {
        let runs = (0..ROUNDS).map(|_| run_queries(graph, ef));
        runs.min_by_key(|(_, p, _, _)| p.p50).expect("at least one round")
    };
    let (as_built_recall, as_built, _, _) = best_of_rounds(&built, params.ef_search);
    drop(built);
    let (recall, hnsw, hnsw_total, hnsw_cpu) = best_of_rounds(&index, params.ef_search);
    let mut sweep: Vec<SweepRow> = SWEEP_EF
        .iter()
        .chain([&params.ef_search])
        .map(|&ef| {
            let (recall, p, _, _) = best_of_rounds(&index, ef);
            SweepRow { ef_search: ef, recall, p50: p.p50 }
        })
        .collect();
    sweep.sort_by_key(|r| r.ef_search);
    sweep.dedup_by_key(|r| r.ef_search);
    let efs: Vec<usize> = std::iter::once(params.ef_search).chain(SWEEP_EF).collect();
    let hnswlib = run_hnswlib(&data, &qs, &truth, params, &efs);

    Ok(DatasetReport {
        dataset,
        build,
        relayout,
        recall,
        hnsw,
        hnsw_qps: queries as f64 / hnsw_total.as_secs_f64(),
        hnsw_cpu,
        as_built_recall,
        as_built,
        exact: percentiles(exact_times),
        exact_qps: queries as f64 / exact_total.as_secs_f64(),
        sweep,
        hnswlib,
    })
}

/// Runs `host/benches/hnswlib_semantic.py` on the same vectors; an error
/// says why it could not (most often: hnswlib is not installed).
fn run_hnswlib(
    data: &[f32],
    queries: &[Box<[f32]>],
    truth: &[Vec<usize>],
    params: &HnswParams,
    efs: &[usize],
) -> Result<HnswlibReport, String> {
    let dir = tempfile::Builder::new()
        .prefix("keel-bench-")
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let (script, vectors) = (dir.path().join("hnswlib_semantic.py"), dir.path().join("vectors.bin"));
    std::fs::write(&script, HNSWLIB_SCRIPT).map_err(|e| format!("cannot write {}: {e}", script.display()))?;
    write_vector_file(&vectors, data, queries, truth)
        .map_err(|e| format!("cannot write {}: {e}", vectors.display()))?;
    let python = std::env::var_os("KEEL_BENCH_PYTHON").unwrap_or_else(|| "python3".into());
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    let efs = efs.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    let output = Command::new(&python)
        .arg(&script)
        .arg(&vectors)
        .args([params.max_nb_connection, params.ef_construction, threads, ROUNDS].map(|x| x.to_string()))
        .arg(efs)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.to_string_lossy()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("the hnswlib script failed ({}): {}", output.status, stderr.trim()));
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Reply {
        Skipped { skipped: String },
        Report(HnswlibReport),
    }
    match serde_json::from_slice(&output.stdout) {
        Ok(Reply::Report(report)) => Ok(report),
        Ok(Reply::Skipped { skipped }) => Err(skipped),
        Err(e) => Err(format!("unexpected output from the hnswlib script: {e}")),
    }
}

/// The file format `hnswlib_semantic.py` reads (see its docs).
fn write_vector_file(path: &Path, data: &[f32], queries: &[Box<[f32]>], truth: &[Vec<usize>]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    out.write_all(b"KEELVEC1")?;
    for n in [data.len() / DIM, DIM, queries.len(), K] {
        out.write_all(&u32::try_from(n).expect("bench sizes fit a u32").to_le_bytes())?;
    }
    for x in data.iter().chain(queries.iter().flat_map(|q| q.iter())) {
        out.write_all(&x.to_le_bytes())?;
    }
    for id in truth.iter().flatten() {
        out.write_all(&u32::try_from(*id).expect("bench sizes fit a u32").to_le_bytes())?;
    }
    out.flush()
}

/// CPU time this thread has run, from `/proc/thread-self/schedstat`
/// (nanoseconds); `None` elsewhere.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(stat.split_whitespace().next()?.parse().ok()?))
}

/// One line of the report's table; `None` prints as `-`.
struct TableRow<'a> {
    data: &'a str,
    search: &'a str,
    build: Option<f64>,
    p50: Duration,
    p99: Duration,
    qps: Option<f64>,
    cpu: Option<Duration>,
    recall: f64,
}

impl TableRow<'_> {
    const HEADER: [&'static str; 10] =
        ["data", "search", "build s", "inserts/s", "p50", "p99", "q/s", "cpu/query", "recall@10", "speedup"];

    /// `n`: vectors built; `exact_p50`: what the speedup is against.
    fn write(&self, f: &mut std::fmt::Formatter<'_>, n: usize, exact_p50: Duration) -> std::fmt::Result {
        let dash = || "-".to_owned();
        writeln!(
            f,
            "{:<8} {:<16} {:>8} {:>10} {:>11} {:>11} {:>9} {:>11} {:>9.3} {:>8}",
            self.data,
            self.search,
            self.build.map_or_else(dash, |s| format!("{s:.1}")),
            self.build.map_or_else(dash, |s| format!("{:.0}", n as f64 / s)),
            micros(self.p50),
            micros(self.p99),
            self.qps.map_or_else(dash, |q| format!("{q:.0}")),
            self.cpu.map_or_else(dash, micros),
            self.recall,
            format!("{:.1}x", exact_p50.as_secs_f64() / self.p50.as_secs_f64())
        )
    }
}

/// `12.3 µs`, or `12.3 ms` from 10 ms on.
fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 { format!("{:.1} ms", us / 1000.0) } else { format!("{us:.1} µs") }
}

impl std::fmt::Display for SemanticReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.params;
        writeln!(
            f,
            "semantic vectors: {} unit vectors of {DIM} floats, {} queries, top {K}; M (max_nb_connection) {}, \
             ef_construction {}, ef_search {}; builds on {} threads, searches on one",
            self.n, self.queries, p.max_nb_connection, p.ef_construction, p.ef_search, self.threads
        )?;
        let h = TableRow::HEADER;
        writeln!(
            f,
            "{:<8} {:<16} {:>8} {:>10} {:>11} {:>11} {:>9} {:>11} {:>9} {:>8}",
            h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]
        )?;
        for d in &self.datasets {
            let data = d.dataset.name();
            let (n, exact_p50) = (self.n, d.exact.p50);
            let build = Some(d.build.as_secs_f64());
            let (p50, p99, qps, cpu, recall) = (d.hnsw.p50, d.hnsw.p99, Some(d.hnsw_qps), d.hnsw_cpu, d.recall);
            TableRow { data, search: "hnsw_rs", build, p50, p99, qps, cpu, recall }.write(f, n, exact_p50)?;
            let (p50, p99, recall) = (d.as_built.p50, d.as_built.p99, d.as_built_recall);
            let search = "hnsw_rs as built";
            TableRow { data, search, build: None, p50, p99, qps: None, cpu: None, recall }.write(f, n, exact_p50)?;
            let (p50, p99, qps) = (d.exact.p50, d.exact.p99, Some(d.exact_qps));
            TableRow { data, search: "exact", build: None, p50, p99, qps, cpu: None, recall: 1.0 }
                .write(f, n, exact_p50)?;
            match &d.hnswlib {
                Ok(lib) => {
                    let row = &lib.rows[0];
                    let search = &format!("hnswlib {}", lib.version);
                    let (p50, p99) = (Duration::from_nanos(row.p50_ns), Duration::from_nanos(row.p99_ns));
                    let (build, qps, recall) = (Some(lib.build_s), Some(row.qps), row.recall);
                    TableRow { data, search, build, p50, p99, qps, cpu: None, recall }.write(f, n, exact_p50)?;
                }
                Err(why) => writeln!(f, "{data:<8} {:<16} skipped: {why}", "hnswlib")?,
            }
        }
        writeln!(f, "speedup = exact p50 / p50; hnswlib times include its Python call (about 2 µs)")?;
        for d in &self.datasets {
            writeln!(
                f,
                "{}: the graph as built, laid out afresh in {:.1} s, searched {:.2}x as fast at p50",
                d.dataset.name(),
                d.relayout.as_secs_f64(),
                d.as_built.p50.as_secs_f64() / d.hnsw.p50.as_secs_f64()
            )?;
        }
        for d in &self.datasets {
            write!(f, "ef_search sweep, {}, hnsw_rs (recall@10, p50):", d.dataset.name())?;
            for r in &d.sweep {
                write!(f, "  {}: {:.3} {}", r.ef_search, r.recall, micros(r.p50))?;
            }
            writeln!(f)?;
            if let Ok(lib) = &d.hnswlib {
                let mut rows = lib.rows.clone();
                rows.sort_by_key(|r| r.ef);
                rows.dedup_by_key(|r| r.ef);
                write!(f, "ef_search sweep, {}, hnswlib (recall@10, p50):", d.dataset.name())?;
                for r in &rows {
                    write!(f, "  {}: {:.3} {}", r.ef, r.recall, micros(Duration::from_nanos(r.p50_ns)))?;
                }
                writeln!(f)?;
            }
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
        let needles = ["inserts/s", "uniform", "topics", "recall@10", "exact", "hnswlib", "speedup", "sweep, topics"];
        for needle in needles.into_iter().chain(["as built", "laid out afresh"]) {
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
