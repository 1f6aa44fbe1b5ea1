//! `keel triggers ...`: firing the schedule, inbox and record triggers of
//! the workflows in `workflows/`, once (`tick`), in the foreground until
//! Ctrl-C (`run`), and showing where each trigger is (`list`). `keel
//! serve` will run the same loop in the background.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;

use crate::memory::now_ms;
use crate::workflow::runs::{Run, RunState};
use crate::workflow::triggers::{self, LoopEvent, TickReport, TriggerProgress, TriggerStatus};
use crate::workspace::Workspace;

#[derive(Debug, Subcommand)]
pub enum TriggersCommand {
    /// One pass: start a run for each schedule that is due, each new file
    /// in an inbox folder and each created or updated record, then drive
    /// those runs until they finish or wait for the operator.
    Tick {
        /// Print JSON: what fired, what was skipped, notes, and the runs.
        #[arg(long)]
        json: bool,
    },
    /// Fire triggers every interval and drive their runs, in the
    /// foreground until Ctrl-C; one line per fired trigger and per run
    /// that stops.
    Run {
        /// Seconds between passes.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        interval_seconds: u64,
    },
    /// Each workflow's trigger and its state: the next schedule fire,
    /// inbox files processed, records seen, and any pause.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `keel triggers ...`.
pub async fn run(ws: &Workspace, command: TriggersCommand) -> anyhow::Result<()> {
    match command {
        TriggersCommand::Tick { json } => tick(ws, json).await,
        TriggersCommand::Run { interval_seconds } => run_loop(ws, Duration::from_secs(interval_seconds)).await,
        TriggersCommand::List { json } => list(ws, json),
    }
}

/// `keel triggers tick`.
async fn tick(ws: &Workspace, json: bool) -> anyhow::Result<()> {
    let defs = ws.workflows()?;
    let runtime = ws.runtime()?;
    let report = triggers::tick(&runtime, ws.root(), &defs, now_ms()).await?;
    if !json {
        print_report(&report, &mut BTreeSet::new());
    }
    let drives = report.fired.iter().map(|f| runtime.drive_run(&f.run_id));
    let mut runs = Vec::new();
    for result in futures::future::join_all(drives).await {
        runs.push(result?);
    }
    if json {
        let out = json!({
            "fired": report.fired,
            "skipped": report.skipped,
            "notes": report.notes,
            "runs": runs,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for run in &runs {
        print_stopped(run);
    }
    if report.fired.is_empty() {
        let ticked = defs.iter().filter(|(d, _)| is_ticked(&d.trigger)).count();
        println!("nothing fired ({ticked} workflow(s) with a schedule, inbox or record trigger)");
    }
    Ok(())
}

fn is_ticked(trigger: &crate::workflow::definition::Trigger) -> bool {
    use crate::workflow::definition::Trigger;
    matches!(trigger, Trigger::Schedule { .. } | Trigger::Inbox { .. } | Trigger::Record { .. })
}

/// Prints what fired and was skipped, and the notes not in `shown` (which
/// it updates, so a loop repeats a note only after it went away).
fn print_report(report: &TickReport, shown: &mut BTreeSet<String>) {
    for f in &report.fired {
        let again = if f.recovered { " (recorded before a crash)" } else { "" };
        println!("fired {} of {}: {} -> run {}{again}", f.kind, f.workflow, f.detail, f.run_id);
    }
    let mut now = BTreeSet::new();
    for s in &report.skipped {
        now.insert(format!("skipped {}: {}", s.workflow, s.reason));
    }
    for n in &report.notes {
        now.insert(format!("note: {} ({}): {}", n.workflow, n.kind, n.message));
    }
    for line in now.difference(shown) {
        println!("{line}");
    }
    *shown = now;
}

/// One line for a run whose drive ended, plus its error.
fn print_stopped(run: &Run) {
    let took = run.finished_at_ms.unwrap_or_else(now_ms).saturating_sub(run.created_at_ms);
    println!("run {} of {}: {} ({took} ms)", run.id, run.workflow, run.state.as_str());
    if let Some(error) = &run.error {
        println!("  error: {error}");
    }
    if run.state == RunState::WaitingApproval {
        println!("  waiting on {}: `keel approvals list`", run.waiting_on.join(", "));
    }
}

/// `keel triggers run`.
async fn run_loop(ws: &Workspace, interval: Duration) -> anyhow::Result<()> {
    let runtime = Arc::new(ws.runtime()?);
    // Fail now on a broken definition rather than once per interval.
    ws.workflows()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopping: runs still going continue with `keel runs recover`");
            stop.send(true).ok();
        }
    });
    eprintln!("firing triggers every {} s; Ctrl-C stops", interval.as_secs());
    let mut shown = BTreeSet::new();
    let on_event = |event: LoopEvent| match event {
        LoopEvent::Ticked(report) => print_report(&report, &mut shown),
        LoopEvent::TickFailed(e) => eprintln!("keel: tick failed: {e}"),
        LoopEvent::RunStopped(run) => print_stopped(&run),
        LoopEvent::DriveFailed { run_id, error } => eprintln!("keel: run {run_id}: {error}"),
    };
    triggers::run_loop_with(runtime, ws.root().to_owned(), || ws.workflows(), interval, stopped, on_event).await;
    Ok(())
}

/// `keel triggers list`.
fn list(ws: &Workspace, json: bool) -> anyhow::Result<()> {
    let defs = ws.workflows()?;
    let now = now_ms();
    let statuses = triggers::statuses(ws.store(), &defs, now)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&statuses)?);
        return Ok(());
    }
    if statuses.is_empty() {
        println!("no workflows: add workflows/NAME.toml (docs/workflows.md)");
    }
    for s in &statuses {
        println!("{:<20} {:<9} {:<36} {}", s.workflow, s.kind, s.trigger, progress(s, now));
        if s.starting > 0 {
            println!("{:<20} {} start(s) recorded before a crash: the next tick finishes them", "", s.starting);
        }
        if let Some(reason) = &s.paused {
            println!("{:<20} PAUSED: {reason}; `keel workflows resume {}` lifts it", "", s.workflow);
        }
    }
    Ok(())
}

fn progress(s: &TriggerStatus, now: u64) -> String {
    match &s.progress {
        TriggerProgress::NotTicked if s.kind == "webhook" => "fired by keel serve (not built yet)".to_owned(),
        TriggerProgress::NotTicked => "not fired by triggers".to_owned(),
        TriggerProgress::Schedule { error: Some(e), .. } => format!("cannot fire: {e}"),
        TriggerProgress::Schedule { next_fire_ms, last_handled_ms, .. } => {
            let next = match next_fire_ms {
                Some(ms) if *ms <= now => format!("due since {}", triggers::format_ms(*ms)),
                Some(ms) => format!("next {}", triggers::format_ms(*ms)),
                None => "never fires again".to_owned(),
            };
            match last_handled_ms {
                Some(_) => next,
                None => format!("{next} (starts counting at the first tick)"),
            }
        }
        TriggerProgress::Inbox { files_processed } => format!("{files_processed} file(s) processed"),
        TriggerProgress::Record { records_seen, watching: true } => format!("{records_seen} record(s) seen"),
        TriggerProgress::Record { records_seen, watching: false } => {
            format!("{records_seen} record(s) seen, first pass not done (it only remembers)")
        }
    }
}
