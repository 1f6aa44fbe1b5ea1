//! The loop: ticks on an interval and drives the runs started (`keel
//! triggers run`, later `keel serve`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{TickReport, tick};
use crate::memory;
use crate::runtime::Runtime;
use crate::workflow::WorkflowError;
use crate::workflow::definition::WorkflowDef;
use crate::workflow::runs::Run;

/// What [`run_loop_with`] tells its caller.
#[derive(Debug)]
pub enum LoopEvent {
    /// A tick ran; its runs are being driven.
    Ticked(TickReport),
    /// A tick could not run (the definitions did not load, the database
    /// failed); the next one is tried after the interval.
    TickFailed(WorkflowError),
    /// A run's drive ended: the run finished, waits for the operator, or
    /// was paused.
    RunStopped(Box<Run>),
    /// A run's drive failed; the run stays unfinished for `keel runs recover`.
    DriveFailed { run_id: String, error: String },
}

/// Ticks every `interval` with the definitions `load` returns and drives
/// the started runs concurrently, each in a task of its own, until `stop`
/// turns true (or its sender is dropped). Events are logged with
/// `tracing`; [`run_loop_with`] hands them to the caller instead.
pub async fn run_loop(
    runtime: Arc<Runtime>,
    workspace_root: PathBuf,
    load: impl Fn() -> Result<Vec<(WorkflowDef, String)>, WorkflowError>,
    interval: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    run_loop_with(runtime, workspace_root, load, interval, stop, log_event).await;
}

fn log_event(event: LoopEvent) {
    match event {
        LoopEvent::Ticked(report) => {
            for note in &report.notes {
                tracing::info!(workflow = %note.workflow, kind = %note.kind, "{}", note.message);
            }
        }
        LoopEvent::TickFailed(e) => tracing::warn!(error = %e, "trigger tick failed"),
        LoopEvent::RunStopped(run) => {
            tracing::info!(run = %run.id, workflow = %run.workflow, state = run.state.as_str(), "run stopped")
        }
        LoopEvent::DriveFailed { run_id, error } => tracing::warn!(run = %run_id, %error, "driving a run failed"),
    }
}

/// [`run_loop`], telling `on_event` what happens. When `stop` turns true
/// the drives still going are abandoned (like a crash, which runs
/// survive): their runs stay unfinished until `keel runs recover`.
pub async fn run_loop_with(
    runtime: Arc<Runtime>,
    workspace_root: PathBuf,
    load: impl Fn() -> Result<Vec<(WorkflowDef, String)>, WorkflowError>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut on_event: impl FnMut(LoopEvent),
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drives: tokio::task::JoinSet<(String, Result<Run, WorkflowError>)> = tokio::task::JoinSet::new();
    let mut driving: HashMap<tokio::task::Id, String> = HashMap::new();
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = ticker.tick() => {
                let result = match load() {
                    Ok(defs) => tick(&runtime, &workspace_root, &defs, memory::now_ms()).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(report) => {
                        for fired in &report.fired {
                            if driving.values().any(|id| id == &fired.run_id) {
                                continue;
                            }
                            let (rt, id) = (runtime.clone(), fired.run_id.clone());
                            let handle = drives.spawn(async move {
                                // Within `[workflows] max_concurrent_runs`, like every drive.
                                let _slot = rt.run_slot().await;
                                let result = rt.drive_run(&id).await;
                                (id, result)
                            });
                            driving.insert(handle.id(), fired.run_id.clone());
                        }
                        on_event(LoopEvent::Ticked(report));
                    }
                    Err(e) => on_event(LoopEvent::TickFailed(e)),
                }
            }
            Some(joined) = drives.join_next_with_id(), if !drives.is_empty() => {
                match joined {
                    Ok((task, (_, Ok(run)))) => {
                        driving.remove(&task);
                        on_event(LoopEvent::RunStopped(Box::new(run)));
                    }
                    Ok((task, (run_id, Err(e)))) => {
                        driving.remove(&task);
                        on_event(LoopEvent::DriveFailed { run_id, error: e.to_string() });
                    }
                    Err(e) => {
                        let run_id = driving.remove(&e.id()).unwrap_or_default();
                        on_event(LoopEvent::DriveFailed { run_id, error: e.to_string() });
                    }
                }
            }
        }
    }
    drives.shutdown().await;
}
