//! `keel bench`: keel against bare wasmtime, measured in one run.

use clap::Args;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Measured calls per side for the instantiate+call case.
    #[arg(long, default_value_t = 5000)]
    pub iterations: usize,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    eprintln!("measuring {} calls per side (a few seconds)…", args.iterations);
    let report = crate::bench::run(args.iterations.max(100)).await?;
    print!("{report}");
    Ok(())
}
