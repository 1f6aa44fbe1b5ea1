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
    /// Queries measured (semantic suite).
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
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
    if matches!(args.suite, Suite::Semantic | Suite::All) {
        eprintln!("semantic: indexing {} vectors, then {} queries (a few minutes)…", args.vectors, args.queries);
        let (vectors, queries) = (args.vectors, args.queries);
        print!("{}", tokio::task::spawn_blocking(move || crate::bench::semantic::run(vectors, queries)).await??);
    }
    Ok(())
}
