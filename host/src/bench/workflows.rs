//! Workflow steps per second: a three-step workflow whose agents each make
//! one durable memory write, run as journaled workflow runs, against the
//! same three calls made directly (no run record, no journal, no step
//! bookkeeping) in the same process, with the same number of runs in
//! flight, the two sides taking turns in rounds. Also the latency of a
//! whole run, from start to finish.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{Percentiles, percentiles};
use crate::bindings::Task;
use crate::workspace::Workspace;

use super::guests as plugins;

/// Three steps, each one `memory.put` through the `memory-plane` agent.
const WORKFLOW: &str = r#"
description = "bench: three steps, one memory write each"
[limits]
concurrency = 1000

[[steps]]
id = "one"
agent = "memory-plane"
input = { ops = [{ op = "put", namespace = "leads", key = "$.trigger.key", value = "1" }] }

[[steps]]
id = "two"
agent = "memory-plane"
input = { ops = [{ op = "put", namespace = "leads", key = "$.trigger.key", value = "2" }] }

[[steps]]
id = "three"
agent = "memory-plane"
input = { ops = [{ op = "put", namespace = "leads", key = "$.trigger.key", value = "3" }] }
"#;

/// One side's numbers.
#[derive(Debug, Clone, Copy)]
pub struct Side {
    pub steps_per_second: f64,
    /// Start to finish of one run (three steps).
    pub run_latency: Percentiles,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub runs: usize,
    pub in_flight: usize,
    /// The same three calls per run, without workflow machinery.
    pub direct: Side,
    pub journaled: Side,
}

/// Runs `runs` runs per side with `in_flight` at once.
pub async fn run(runs: usize, in_flight: usize) -> anyhow::Result<Report> {
    let dir = std::env::temp_dir().join(format!("keel-bench-wf-{}-{}", std::process::id(), crate::memory::now_ms()));
    let ws = Workspace::init(&dir).context("creating the bench workspace")?;
    std::fs::create_dir_all(dir.join("workflows"))?;
    std::fs::write(dir.join("workflows/bench.toml"), WORKFLOW)?;
    let runtime = ws.runtime()?.with_max_concurrent_runs(in_flight);
    let bytes = std::fs::read(plugins::MEMORY_PLANE).with_context(|| format!("reading {}", plugins::MEMORY_PLANE))?;
    let candidate = runtime.check_candidate(bytes, Path::new(plugins::MEMORY_PLANE), None, &())?;
    let grants = candidate.manifest.capabilities.clone();
    ws.install(candidate, grants)?;
    let (def, text) = ws.workflow("bench")?;
    let plugin = runtime.prepare("memory-plane", &())?;

    // Warm up both paths (compiled code, pooling slots, the database).
    let direct_once = |key: String| {
        let plugin = plugin.clone();
        let runtime = &runtime;
        async move {
            let started = Instant::now();
            for value in ["1", "2", "3"] {
                let input =
                    format!(r#"{{"ops":[{{"op":"put","namespace":"leads","key":"{key}","value":"{value}"}}]}}"#);
                let task = Task { id: crate::runtime::call::new_task_id(), input, run_id: None };
                runtime.call_task(&plugin, task, None, None).await?;
            }
            anyhow::Ok(started.elapsed())
        }
    };
    let journaled_once = |key: String| {
        let (runtime, def, text) = (&runtime, &def, &text);
        async move {
            let started = Instant::now();
            let input = serde_json::json!({ "key": key });
            let run = runtime.start_run(def, text, input, "manual", "bench").await?;
            let done = runtime.drive_run(&run.id).await?;
            anyhow::ensure!(
                done.state == crate::workflow::runs::RunState::Succeeded,
                "bench run {}: {:?}",
                run.id,
                done.error
            );
            anyhow::Ok(started.elapsed())
        }
    };
    for i in 0..20 {
        direct_once(format!("w{i}")).await?;
        journaled_once(format!("w{i}")).await?;
    }

    // The sides take turns, a share of the runs each, so a change in the
    // machine's load (other processes, the page cache) hits both alike.
    let (mut direct, mut journaled) = (Tally::default(), Tally::default());
    for round in 0..ROUNDS {
        let share = runs / ROUNDS + usize::from(round < runs % ROUNDS);
        let first = round * (runs / ROUNDS) + round.min(runs % ROUNDS);
        direct.add(measure(share, in_flight, |i| direct_once(format!("d{}", first + i))).await?);
        journaled.add(measure(share, in_flight, |i| journaled_once(format!("j{}", first + i))).await?);
    }
    let (direct, journaled) = (direct.side(), journaled.side());
    drop(runtime);
    drop(ws);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Report { runs, in_flight, direct, journaled })
}

/// Rounds each side's runs are split into, taken in turns.
const ROUNDS: usize = 4;

/// One side's rounds added up.
#[derive(Debug, Default)]
struct Tally {
    runs: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Tally {
    fn add(&mut self, (elapsed, latencies): (Duration, Vec<Duration>)) {
        self.runs += latencies.len();
        self.elapsed += elapsed;
        self.latencies.extend(latencies);
    }

    fn side(self) -> Side {
        let steps_per_second = (self.runs * 3) as f64 / self.elapsed.as_secs_f64();
        Side { steps_per_second, run_latency: percentiles(self.latencies) }
    }
}

/// Runs `runs` calls of `one`, `in_flight` at a time; how long they took
/// together, and each.
async fn measure<F, Fut>(runs: usize, in_flight: usize, one: F) -> anyhow::Result<(Duration, Vec<Duration>)>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<Duration>>,
{
    let semaphore = tokio::sync::Semaphore::new(in_flight.max(1));
    let started = Instant::now();
    let all = (0..runs).map(|i| {
        let semaphore = &semaphore;
        let one = &one;
        async move {
            let _slot = semaphore.acquire().await?;
            one(i).await
        }
    });
    let latencies = futures::future::join_all(all).await.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok((started.elapsed(), latencies))
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        writeln!(
            f,
            "workflows: {} runs of 3 steps (one durable memory write each) per side, {} in flight",
            self.runs, self.in_flight
        )?;
        writeln!(f, "{:<40} {:>12} {:>14} {:>14}", "side", "steps/s", "run p50", "run p99")?;
        for (name, side) in [("direct calls (floor)", self.direct), ("workflow runs, journaled", self.journaled)] {
            writeln!(
                f,
                "{name:<40} {:>12.0} {:>14} {:>14}",
                side.steps_per_second,
                ms(side.run_latency.p50),
                ms(side.run_latency.p99)
            )?;
        }
        let overhead = self.direct.steps_per_second / self.journaled.steps_per_second;
        writeln!(f, "journaling overhead: {overhead:.2}x fewer steps/s than direct calls (target: under 2x)")
    }
}
