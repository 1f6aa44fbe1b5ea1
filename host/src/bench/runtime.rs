//! Instantiate + call and host-call cost: keel against bare wasmtime.
//!
//! The floor is bare wasmtime with the same engine settings (pooling
//! allocator, `InstancePre`, a fresh store and WASI context per call) and
//! stub imports; keel adds the gate, limits, audit and redb behind them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use wasmtime::Store;

use super::{Percentiles, bare, percentiles};
use crate::bindings::{AgentPre, Task};
use crate::runtime::{Runtime, engine};
use crate::workspace::Workspace;

/// Plugins the benchmark runs, built with keel.
use super::guests as plugins;

/// One row: a floor and keel, measured interleaved.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub case: &'static str,
    pub floor: Percentiles,
    pub keel: Percentiles,
}

impl Comparison {
    pub fn ratio(&self) -> f64 {
        self.keel.p50.as_secs_f64() / self.floor.p50.as_secs_f64()
    }
}

/// The whole report.
#[derive(Debug, Clone)]
pub struct Report {
    pub iterations: usize,
    pub rows: Vec<Comparison>,
    /// One `memory.get` host call from inside a guest, keel's full path.
    pub host_call: Duration,
    /// The same host call against the bare stub.
    pub host_call_floor: Duration,
}

/// Warm-up calls before measuring (caches, pooling slots, page faults).
const WARMUP: usize = 200;
/// Calls per interleaved chunk; floor and keel alternate chunks.
const CHUNK: usize = 100;
/// `memory.get` calls per guest call when measuring the host-call round trip.
const HOST_CALLS_PER_TASK: u64 = 10_000;

struct Bare {
    engine: wasmtime::Engine,
    pre: AgentPre<bare::BareState>,
}

impl Bare {
    fn new(plugin: &Path, runtime: &Runtime) -> anyhow::Result<Bare> {
        let engine = engine::build_engine(runtime.limits())?;
        let component = wasmtime::component::Component::from_file(&engine, plugin)?;
        let pre = AgentPre::new(bare::linker(&engine)?.instantiate_pre(&component)?)?;
        Ok(Bare { engine, pre })
    }

    async fn call(&self, input: &str) -> anyhow::Result<String> {
        let mut store = Store::new(&self.engine, bare::BareState::default());
        // Same engine settings as keel, so epochs are on; never interrupt.
        store.set_epoch_deadline(u64::MAX / 2);
        let agent = self.pre.instantiate_async(&mut store).await?;
        let task = Task { id: "bench".into(), input: input.into(), run_id: None };
        let out = agent.call_handle(&mut store, &task).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(out.output)
    }
}

async fn compare(
    case: &'static str,
    iterations: usize,
    bare: &Bare,
    runtime: &Runtime,
    plugin: &str,
    input: &str,
) -> anyhow::Result<Comparison> {
    for _ in 0..WARMUP {
        bare.call(input).await?;
        runtime.call(plugin, input.into()).await?;
    }
    let (mut floor, mut keel) = (Vec::with_capacity(iterations), Vec::with_capacity(iterations));
    while keel.len() < iterations {
        for _ in 0..CHUNK {
            let t = Instant::now();
            bare.call(input).await?;
            floor.push(t.elapsed());
        }
        for _ in 0..CHUNK {
            let t = Instant::now();
            runtime.call(plugin, input.into()).await?;
            keel.push(t.elapsed());
        }
    }
    Ok(Comparison { case, floor: percentiles(floor), keel: percentiles(keel) })
}

/// Per-call cost of one host call: (many calls - none) / count, p50 based.
async fn host_call_cost(iterations: usize, run: impl AsyncFn(u64) -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let rounds = (iterations / 100).max(5);
    let (mut empty, mut full) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        run(0).await?;
        empty.push(t.elapsed());
        let t = Instant::now();
        run(HOST_CALLS_PER_TASK).await?;
        full.push(t.elapsed());
    }
    let delta = percentiles(full).p50.saturating_sub(percentiles(empty).p50);
    Ok(delta / HOST_CALLS_PER_TASK as u32)
}

/// Runs every case with `iterations` measured calls per side.
pub async fn run(iterations: usize) -> anyhow::Result<Report> {
    let dir = tempfile_dir()?;
    let ws = Workspace::init(&dir).context("creating the bench workspace")?;
    let runtime = Arc::new(ws.runtime()?);
    for plugin in [plugins::ECHO, plugins::HELLO, plugins::MEMORY_READS] {
        let bytes = std::fs::read(plugin).with_context(|| format!("reading {plugin}"))?;
        let candidate = runtime.check_candidate(bytes, Path::new(plugin), None, &())?;
        let grants = candidate.manifest.capabilities.clone();
        ws.install(candidate, grants)?;
    }

    let echo = Bare::new(Path::new(plugins::ECHO), &runtime)?;
    let hello = Bare::new(Path::new(plugins::HELLO), &runtime)?;
    let reads = Bare::new(Path::new(plugins::MEMORY_READS), &runtime)?;
    let mut rows = Vec::new();
    rows.push(compare("instantiate+call (echo)", iterations, &echo, &runtime, "echo", r#"{"ping":1}"#).await?);
    let hello_iters = (iterations / 10).max(CHUNK);
    rows.push(
        compare("hello: memory get+put, durable", hello_iters, &hello, &runtime, "hello", r#"{"name":"b"}"#).await?,
    );

    let input = |n: u64| format!(r#"{{"reads":{n}}}"#);
    let host_call = host_call_cost(iterations, async |n| {
        runtime.call("memory-reads", input(n)).await.map(drop).map_err(Into::into)
    })
    .await?;
    let host_call_floor = host_call_cost(iterations, async |n| reads.call(&input(n)).await.map(drop)).await?;
    drop(ws);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Report { iterations, rows, host_call, host_call_floor })
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("keel-bench-{}-{}", std::process::id(), crate::memory::now_ms()));
    Ok(dir)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
        writeln!(f, "keel bench: {} measured calls per side, floor and keel interleaved", self.iterations)?;
        writeln!(
            f,
            "{:<34} {:>11} {:>11} {:>8} {:>11} {:>11}",
            "case", "floor p50", "keel p50", "ratio", "floor p99", "keel p99"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<34} {:>11} {:>11} {:>7.2}x {:>11} {:>11}",
                r.case,
                us(r.floor.p50),
                us(r.keel.p50),
                r.ratio(),
                us(r.floor.p99),
                us(r.keel.p99)
            )?;
        }
        let ratio = self.host_call.as_secs_f64() / self.host_call_floor.as_secs_f64().max(1e-12);
        writeln!(
            f,
            "{:<34} {:>8} ns {:>8} ns {:>7.2}x",
            "memory.get host call round trip",
            self.host_call_floor.as_nanos(),
            self.host_call.as_nanos(),
            ratio
        )?;
        writeln!(f, "floor = bare wasmtime 48, same engine config, stub imports; see docs/perf.md")
    }
}
