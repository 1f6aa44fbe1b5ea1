//! `keel bench`: keel against a floor measured in the same run.

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    /// Instantiate + call and host-call cost against bare wasmtime.
    Runtime,
    /// Audit appends: group commit against one commit per append.
    Audit,
    /// Record put/get/query latency at `--records` records.
    Records,
    /// Semantic recall: hnsw against exact search at `--vectors` vectors.
    Semantic,
    /// Model calls against raw HTTP to a loopback server; batched embeddings.
    Model,
    /// Workflow steps/s: journaled runs against the same calls made directly.
    Workflows,
    /// The local sentence embedder: load time, sentences/s at batch 1 and
    /// 32, peak RSS, recall latency at `--notes` notes against hashed.
    Embedder,
    /// Every suite above.
    All,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which measurements to run.
    #[arg(value_enum, default_value = "runtime")]
    pub suite: Suite,
    /// Measured calls per side (runtime, model) or single-commit appends (audit).
    #[arg(long, default_value_t = 5000)]
    pub iterations: usize,
    /// Records loaded before measuring (records suite).
    #[arg(long, default_value_t = 100_000)]
    pub records: usize,
    /// Vectors indexed before measuring (semantic suite; dimension 384).
    #[arg(long, default_value_t = 100_000)]
    pub vectors: usize,
    /// Runs per side (workflows suite).
    #[arg(long, default_value_t = 2000)]
    pub runs: usize,
    /// Runs in flight at once (workflows suite).
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// Queries measured (semantic suite; embedder suite: at most 1000).
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    /// Notes stored before measuring recall (embedder suite).
    #[arg(long, default_value_t = 5000)]
    pub notes: usize,
    /// The sentence-transformers model folder (embedder suite).
    #[arg(long, env = "KEEL_TEST_MODEL", default_value = "target/models/all-MiniLM-L6-v2")]
    pub model: std::path::PathBuf,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let n = args.iterations.max(100);
    if matches!(args.suite, Suite::Runtime | Suite::All) {
        eprintln!("runtime: measuring {n} calls per side (a few seconds)…");
        print!("{}", crate::bench::runtime::run(n).await?);
    }
    if matches!(args.suite, Suite::Audit | Suite::All) {
        eprintln!("audit: {n} single commits, then {} appends from many writers…", n * 10);
        print!("{}", crate::bench::audit::run(n).await?);
    }
    if matches!(args.suite, Suite::Model | Suite::All) {
        eprintln!("model: {n} completions per side, then embeddings batched and not (under half a minute)…");
        print!("{}", crate::bench::model::run(n).await?);
    }
    if matches!(args.suite, Suite::Workflows | Suite::All) {
        eprintln!("workflows: {} runs of 3 steps per side, {} in flight (under a minute)…", args.runs, args.in_flight);
        print!("{}", crate::bench::workflows::run(args.runs, args.in_flight).await?);
    }
    if matches!(args.suite, Suite::Records | Suite::All) {
        eprintln!("records: loading {} records, then measuring (a minute or two)…", args.records);
        print!("{}", tokio::task::spawn_blocking(move || crate::bench::records::run(args.records)).await??);
    }
    #[cfg(feature = "local-embedder")]
    if args.suite == Suite::All && !args.model.exists() {
        eprintln!("embedder: skipped, no model at {} (tests/fetch-model.sh fetches it)", args.model.display());
    } else if matches!(args.suite, Suite::Embedder | Suite::All) {
        let (model, notes, queries) = (args.model.clone(), args.notes, args.queries.min(1000));
        eprintln!("embedder: loading {}, then embedding {notes} notes twice and {queries} queries…", model.display());
        print!("{}", tokio::task::spawn_blocking(move || crate::bench::embedder::run(&model, notes, queries)).await??);
    }
    #[cfg(not(feature = "local-embedder"))]
    if matches!(args.suite, Suite::Embedder) {
        anyhow::bail!("this keel was built without the `local-embedder` feature: rebuild with default features");
    }
    if matches!(args.suite, Suite::Semantic | Suite::All) {
        eprintln!("semantic: indexing {} vectors, then {} queries (a few minutes)…", args.vectors, args.queries);
        let (vectors, queries) = (args.vectors, args.queries);
        print!("{}", tokio::task::spawn_blocking(move || crate::bench::semantic::run(vectors, queries)).await??);
    }
    Ok(())
}
