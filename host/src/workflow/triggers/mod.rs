//! Firing the triggers that start runs without the operator: `schedule`,
//! `inbox` and `record` (a `webhook` is fired by `keel serve`'s HTTP
//! server, a `manual` workflow by `keel run`). One [`tick`] looks at every
//! workflow once and starts the runs that are due; [`run_loop`] ticks
//! forever and drives what it started (`keel triggers run`, later `keel
//! serve`).
//!
//! ```no_run
//! # async fn demo(ws: &keel_host::workspace::Workspace) -> Result<(), Box<dyn std::error::Error>> {
//! use keel_host::workflow::triggers;
//!
//! let runtime = ws.runtime()?;
//! let report = triggers::tick(&runtime, ws.root(), &ws.workflows()?, keel_host::memory::now_ms()).await?;
//! for fired in &report.fired {
//!     let run = runtime.drive_run(&fired.run_id).await?;
//!     println!("{} ({}): {} -> {}", fired.workflow, fired.detail, run.id, run.state.as_str());
//! }
//! # Ok(()) }
//! ```
//!
//! # What fires
//!
//! * **schedule**: the trigger remembers the last fire time it handled,
//!   starting with the time it first saw the workflow, so installing a
//!   schedule does not fire for the past. Each tick asks the
//!   [`CronSchedule`] for the fire times in `(last handled, now]`. Missed
//!   fires are coalesced into one run: after downtime only the latest
//!   missed time starts a run, and its detail says how many were missed.
//!   The run's input is the trigger's `input`; when that is a JSON object
//!   it gets a field `scheduled_at_ms` (the fire time, Unix ms). Changing
//!   `cron` or `timezone` counts as a new schedule.
//! * **inbox**: each tick lists the folder (relative to the workspace) and
//!   looks at the regular files whose name matches `pattern`
//!   ([`glob_matches`]). A file is identified by its name and the sha256
//!   of its content: each name and content starts one run, once, so a file
//!   replaced with new content starts another. Files are never moved or
//!   deleted; what was processed is remembered in the database. The input
//!   is `{"file", "path", "size", "text", "sha256"}` with `path` relative
//!   to the workspace; `text` is the content when it is UTF-8 of at most
//!   [`MAX_INBOX_TEXT_BYTES`], else `null` with a `note` saying why. Files
//!   already in the folder when the workflow appears are new to it and
//!   start runs. A missing folder is not an error: the tick reports a
//!   note and creates nothing. The folder is listed every tick (cost
//!   grows with the files in it); a file whose size and modification time
//!   are unchanged is not read again.
//! * **record**: a record created or updated in the collection starts a
//!   run with input `{collection, id, version, data}`. Each tick scans up
//!   to [`MAX_RECORDS_SCANNED_PER_TICK`] records of the collection in id
//!   order, continuing where the previous tick stopped (a pass over a big
//!   collection takes several ticks: the cost is O(records), bounded per
//!   tick), and compares each record's version and update time with the
//!   ones remembered for it. On first sight of a workflow (or when its
//!   collection changes) the first full pass only remembers: turning a
//!   record trigger on does not fire for the records already there.
//!   Several updates between two looks start one run, with the latest
//!   version. A deleted record is forgotten; created again, it fires.
//!
//! # Pace
//!
//! A tick starts at most [`MAX_STARTS_PER_TICK`] runs per workflow, and
//! never more than the workflow's `limits.concurrency` minus its runs that
//! are still unfinished, so a flood of files does not start thousands of
//! runs at once: what does not fit waits for a later tick (reported as a
//! note). A workflow paused by pruning is skipped (reported as such) and
//! its trigger state is left as it is: what became due meanwhile fires
//! once it is resumed (a schedule's missed fires as one run).
//!
//! # Crash safety
//!
//! [`Runtime::start_run`] commits the run by itself, so the trigger's
//! bookkeeping cannot land in the same commit. Instead every start is
//! recorded before it happens, under a key that names what fired (the
//! fire time, the file's name and sha256, the record's id, version and
//! update time):
//!
//! 1. one commit records the fire as *starting* (its key, the run's input,
//!    the time) together with the trigger's new state (the schedule's last
//!    handled time, the file as processed, the record's version as seen),
//!    and an audit entry `trigger.fire` per fire;
//! 2. the run is started;
//! 3. one commit marks the fire done: the *starting* entry is removed and
//!    the run id is noted as started by a trigger.
//!
//! Every tick first settles the *starting* entries an earlier process left
//! behind: one whose run exists (a run of that workflow and trigger kind
//! with exactly that input, created after the entry was recorded and not
//! already claimed by another fire) is marked done and reported again so
//! the caller drives it; one whose run does not exist is started now.
//! Guarantee: each schedule fire, file version and record version starts
//! at most one run, and one is started eventually (as soon as a tick runs
//! while the workflow is defined and not paused). The recognition of an
//! existing run assumes the wall clock did not step back by more than
//! five minutes between recording a fire and starting its run.
//!
//! # Threats
//!
//! The inbox reads files an outsider may have dropped and hands their text
//! to agents, which treat it as untrusted input like any trigger's. It
//! stops a trigger from reading outside the workspace: the folder is
//! checked at load to be inside it, a folder that resolves elsewhere (a
//! symlink) is refused, and symlinked files are skipped. It does not stop
//! a file that is still being written from being read half-written: write
//! files elsewhere and move them in (a rename is atomic), as with maildir.
//! Names starting with `.` (editors' and rsync's temporary files) match
//! only patterns that start with `.`.
//!
//! [`CronSchedule`]: crate::workflow::schedule::CronSchedule

mod inbox;
mod record;
mod runner;
mod schedule;
mod starts;
mod status;

use std::collections::HashMap;
use std::path::Path;

use redb::WriteTransaction;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::WorkflowError;
use super::definition::{Trigger, WorkflowDef};
use super::runs::RunState;
use crate::memory::{self, Store, StoreError};
use crate::runtime::Runtime;
use inbox::plan_inbox;
use record::plan_record;
use schedule::plan_schedule;
use starts::{PendingStart, StateWrite, record_fires};

pub use inbox::glob_matches;
pub use runner::{LoopEvent, run_loop, run_loop_with};
pub use schedule::format_ms;
pub use status::{TriggerProgress, TriggerStatus, statuses};

/// Trigger kind of a run started by a cron schedule.
pub const SCHEDULE: &str = "schedule";
/// Trigger kind of a run started by a file in an inbox folder.
pub const INBOX: &str = "inbox";
/// Trigger kind of a run started by a created or updated record.
pub const RECORD: &str = "record";

/// Most runs one workflow's trigger starts in one tick, whatever its
/// concurrency: bounds the work (and the commits) of a single tick.
pub const MAX_STARTS_PER_TICK: usize = 100;
/// Most records of a collection one record trigger scans per tick: bounds
/// the time a tick spends on one big collection.
pub const MAX_RECORDS_SCANNED_PER_TICK: usize = 10_000;
/// Largest inbox file whose text goes into the run's input; a larger file
/// gets `text: null`, so one big file cannot blow up a run record.
pub const MAX_INBOX_TEXT_BYTES: u64 = 1 << 20;
/// Most missed schedule fires counted for a report: bounds the time spent
/// catching up after long downtime of a frequent schedule.
pub const MAX_COUNTED_MISSED_FIRES: usize = 10_000;

/// Creates the trigger tables; called when the database is opened.
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(starts::PENDING)?;
    txn.open_table(starts::STARTED)?;
    txn.open_table(schedule::SCHEDULES)?;
    txn.open_table(inbox::INBOX_FILES)?;
    txn.open_table(inbox::INBOX_HASHES)?;
    txn.open_table(record::RECORD_WATCH)?;
    txn.open_table(record::RECORD_SEEN)?;
    Ok(())
}

/// A run a trigger started (or, after a crash, found started).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fired {
    pub workflow: String,
    /// [`SCHEDULE`], [`INBOX`] or [`RECORD`].
    pub kind: String,
    pub run_id: String,
    /// What fired, e.g. "file inbox/a.txt (12 bytes, sha256 3f2a...)".
    pub detail: String,
    /// Recorded by an earlier tick that did not finish: started (or found
    /// started) now. Drive it like any other.
    pub recovered: bool,
}

/// A workflow whose trigger did not look for work this tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub workflow: String,
    pub kind: String,
    pub reason: String,
}

/// Something the operator should know about a trigger (a missing inbox
/// folder, fires waiting for capacity, a bad schedule): not an error of
/// the tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    pub workflow: String,
    pub kind: String,
    pub message: String,
}

/// What one [`tick`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TickReport {
    /// The runs started, to be driven by the caller.
    pub fired: Vec<Fired>,
    pub skipped: Vec<Skipped>,
    pub notes: Vec<Note>,
}

/// A fire found this tick, not recorded yet.
#[derive(Debug, Clone)]
struct Fire {
    key: String,
    input: Value,
    detail: String,
}

/// What a trigger found: fires, state changes, notes, and how many fires
/// wait for capacity.
#[derive(Debug, Default)]
struct Plan {
    fires: Vec<Fire>,
    writes: Vec<StateWrite>,
    notes: Vec<String>,
    held: usize,
}

impl Plan {
    fn note(message: impl Into<String>) -> Plan {
        Plan { notes: vec![message.into()], ..Plan::default() }
    }
}

/// The trigger kind this module fires for `trigger`, if any.
fn fired_here(trigger: &Trigger) -> Option<&'static str> {
    match trigger {
        Trigger::Schedule { .. } => Some(SCHEDULE),
        Trigger::Inbox { .. } => Some(INBOX),
        Trigger::Record { .. } => Some(RECORD),
        Trigger::Manual | Trigger::Webhook { .. } => None,
    }
}

/// One pass over `defs` (as [`crate::workspace::Workspace::workflows`]
/// returns them): starts the runs that are due at `now_ms` (Unix ms; the
/// schedule's clock, injectable for tests) and returns them, with the
/// workflows skipped and notes. The caller drives the runs
/// ([`Runtime::drive_run`]).
///
/// A problem of one workflow's trigger (an unreadable folder, a failing
/// start) becomes a note and the others go on; the tick itself fails only
/// when the database cannot be read before anything started.
pub async fn tick(
    runtime: &Runtime,
    workspace_root: &Path,
    defs: &[(WorkflowDef, String)],
    now_ms: u64,
) -> Result<TickReport, WorkflowError> {
    let store = runtime.store();
    let paused = store.paused_workflows()?;
    let unfinished = unfinished_runs(store)?;
    let mut report = TickReport::default();
    for (def, text) in defs {
        let Some(kind) = fired_here(&def.trigger) else { continue };
        if let Some(p) = paused.get(&def.name) {
            report.skipped.push(Skipped {
                workflow: def.name.clone(),
                kind: kind.to_owned(),
                reason: format!("paused ({}): `keel workflows resume {}` lifts it", p.reason, def.name),
            });
            continue;
        }
        let running = unfinished.get(&def.name).copied().unwrap_or(0);
        let budget = (def.limits.concurrency as usize).saturating_sub(running).min(MAX_STARTS_PER_TICK);
        let mut pass = WorkflowPass { runtime, def, text, kind, budget, held: 0, report: &mut report };
        let result = pass.run(workspace_root, now_ms).await;
        let held = pass.held;
        if held > 0 {
            report.notes.push(note(
                def,
                kind,
                format!(
                    "{held} fire(s) wait for a later tick: {running} run(s) unfinished of limits.concurrency = {}, \
                     at most {MAX_STARTS_PER_TICK} started per tick",
                    def.limits.concurrency
                ),
            ));
        }
        if let Err(e) = result {
            tracing::warn!(workflow = %def.name, kind, error = %e, "trigger failed");
            report.notes.push(note(def, kind, format!("failed: {e}")));
        }
    }
    Ok(report)
}

fn note(def: &WorkflowDef, kind: &str, message: String) -> Note {
    Note { workflow: def.name.clone(), kind: kind.to_owned(), message }
}

/// Runs not finished yet, per workflow.
fn unfinished_runs(store: &Store) -> Result<HashMap<String, usize>, StoreError> {
    let mut out = HashMap::new();
    for state in RunState::ALL.into_iter().filter(|s| !s.is_finished()) {
        for run in store.runs_in(state, usize::MAX)? {
            *out.entry(run.workflow).or_default() += 1;
        }
    }
    Ok(out)
}

/// One workflow's part of a tick.
struct WorkflowPass<'a> {
    runtime: &'a Runtime,
    def: &'a WorkflowDef,
    text: &'a str,
    kind: &'static str,
    /// Runs this pass may still start.
    budget: usize,
    /// Fires that wait for capacity.
    held: usize,
    report: &'a mut TickReport,
}

impl WorkflowPass<'_> {
    async fn run(&mut self, root: &Path, now_ms: u64) -> Result<(), WorkflowError> {
        self.settle_pending().await?;
        let store = self.runtime.store();
        let name = self.def.name.as_str();
        let plan = match &self.def.trigger {
            Trigger::Schedule { cron, timezone, input } => {
                plan_schedule(store, name, cron, timezone, input, now_ms, self.budget)?
            }
            Trigger::Inbox { folder, pattern } => plan_inbox(store, name, root, folder, pattern, now_ms, self.budget)?,
            Trigger::Record { collection } => plan_record(self.runtime, name, collection, self.budget)?,
            Trigger::Manual | Trigger::Webhook { .. } => return Ok(()),
        };
        self.held += plan.held;
        for message in plan.notes {
            self.report.notes.push(note(self.def, self.kind, message));
        }
        if plan.fires.is_empty() && plan.writes.is_empty() {
            return Ok(());
        }
        self.budget = self.budget.saturating_sub(plan.fires.len());
        let recorded_at_ms = memory::now_ms();
        let starts: Vec<(String, PendingStart)> = plan
            .fires
            .into_iter()
            .map(|f| {
                let pending =
                    PendingStart { kind: self.kind.to_owned(), input: f.input, detail: f.detail, recorded_at_ms };
                (f.key, pending)
            })
            .collect();
        record_fires(store, name, &starts, plan.writes).await?;
        self.start_all(starts, false).await
    }
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("trigger state always serializes")
}

fn from_json<T: for<'de> Deserialize<'de>>(what: impl FnOnce() -> String, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt { what: what(), detail: e.to_string() })
}
