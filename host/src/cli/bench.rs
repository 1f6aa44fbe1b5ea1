//! `keel bench`: keel against a floor measured in the same run.

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    /// Instantiate + call and host-call cost against bare wasmtime.
    Runtime,
    /// Audit appends: group commit against one commit per append.
    Audit,
    /// Every suite above.
    All,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which measurements to run.
    #[arg(value_enum, default_value = "runtime")]
    pub suite: Suite,
    /// Measured calls per side (runtime) or single-commit appends (audit).
    #[arg(long, default_value_t = 5000)]
    pub iterations: usize,
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
    Ok(())
}
