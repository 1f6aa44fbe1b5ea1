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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::WorkflowError;
use super::definition::{Trigger, WorkflowDef};
use super::runs::{Run, RunState};
use super::schedule::CronSchedule;
use crate::memory::audit::AuditEntry;
use crate::memory::committer::{Batch, CustomMutation, Mutation};
use crate::memory::records::{self, Query, RecordError};
use crate::memory::{self, Store, StoreError};
use crate::runtime::Runtime;

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
/// How much earlier than its *starting* entry a run may appear to have been
/// created and still be recognised as that entry's run (clock steps).
const RECOVERY_SLACK_MS: u64 = 5 * 60 * 1000;
/// Records asked for per query page.
const RECORD_PAGE: u32 = records::MAX_QUERY_LIMIT;
/// Bytes read at a time from an inbox file.
const READ_CHUNK: usize = 64 * 1024;

/// (workflow, fire key) -> a start recorded before its run (JSON [`PendingStart`]).
const PENDING: TableDefinition<(&str, &str), &str> = TableDefinition::new("trigger_pending");
/// Run id -> (workflow, fire key) of the fire that started it.
const STARTED: TableDefinition<&str, (&str, &str)> = TableDefinition::new("trigger_started");
/// Workflow -> its schedule's state (JSON [`ScheduleState`]).
const SCHEDULES: TableDefinition<&str, &str> = TableDefinition::new("trigger_schedules");
/// (workflow, file name, sha256) -> (size, ms when it fired): files processed.
const INBOX_FILES: TableDefinition<(&str, &str, &str), (u64, u64)> = TableDefinition::new("trigger_inbox_files");
/// (workflow, file name) -> (size, modified ns, sha256): the last hash of a
/// file, so an unchanged file is not read again.
const INBOX_HASHES: TableDefinition<(&str, &str), (u64, u64, &str)> = TableDefinition::new("trigger_inbox_hashes");
/// Workflow -> where its record trigger is (JSON [`RecordWatch`]).
const RECORD_WATCH: TableDefinition<&str, &str> = TableDefinition::new("trigger_record_watch");
/// (workflow, record id) -> (version, updated at ms) last seen.
const RECORD_SEEN: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("trigger_record_seen");

/// Creates the trigger tables; called when the database is opened.
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(PENDING)?;
    txn.open_table(STARTED)?;
    txn.open_table(SCHEDULES)?;
    txn.open_table(INBOX_FILES)?;
    txn.open_table(INBOX_HASHES)?;
    txn.open_table(RECORD_WATCH)?;
    txn.open_table(RECORD_SEEN)?;
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

/// A start recorded before it happens (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PendingStart {
    kind: String,
    input: Value,
    detail: String,
    /// Wall clock when recorded, to recognise the run after a crash.
    recorded_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ScheduleState {
    cron: String,
    timezone: String,
    /// The last fire time handled (or the time the schedule was first seen).
    last_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RecordWatch {
    collection: String,
    /// The first pass: records are remembered without firing.
    baseline: bool,
    /// The query cursor the pass continues from; `None`: from the start.
    cursor: Option<String>,
    /// The last record id the pass has looked at.
    after_id: Option<String>,
}

/// A change to a trigger's state, committed with the fires it goes with.
#[derive(Debug, Clone)]
enum StateWrite {
    Schedule(ScheduleState),
    InboxFile { name: String, sha256: String, size: u64, at_ms: u64 },
    InboxHash { name: String, size: u64, modified_ns: u64, sha256: String },
    RecordWatch(RecordWatch),
    RecordSeen { id: String, version: u64, updated_at_ms: u64 },
    ForgetRecord(String),
    ForgetAllRecords,
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

    /// Settles the starts an earlier tick recorded but did not finish.
    async fn settle_pending(&mut self) -> Result<(), WorkflowError> {
        let store = self.runtime.store();
        let name = self.def.name.as_str();
        let pending = pending_of(store, name)?;
        if pending.is_empty() {
            return Ok(());
        }
        let existing = existing_runs(store, name, &pending)?;
        let mut done = Vec::new();
        let mut missing = Vec::new();
        for ((key, start), run) in pending.into_iter().zip(existing) {
            match run {
                Some(run_id) => {
                    tracing::info!(workflow = name, key, run = %run_id, "a recorded start had its run: marked done");
                    self.report.fired.push(Fired {
                        workflow: name.to_owned(),
                        kind: start.kind.clone(),
                        run_id: run_id.clone(),
                        detail: start.detail,
                        recovered: true,
                    });
                    done.push((key, run_id));
                }
                None => missing.push((key, start)),
            }
        }
        mark_done(store, name, done).await?;
        let now = missing.len().min(self.budget);
        self.held += missing.len() - now;
        missing.truncate(now);
        self.budget -= now;
        for (key, _) in &missing {
            tracing::info!(workflow = name, key, "a recorded start had no run: starting it");
        }
        self.start_all(missing, true).await
    }

    /// Starts the recorded `starts` in order, then marks those started done.
    /// A pause that came in between leaves the rest recorded.
    async fn start_all(&mut self, starts: Vec<(String, PendingStart)>, recovered: bool) -> Result<(), WorkflowError> {
        let name = self.def.name.as_str();
        let mut done = Vec::new();
        let mut failure = None;
        for (key, start) in starts {
            match self.runtime.start_run(self.def, self.text, start.input, &start.kind, "host").await {
                Ok(run) => {
                    let (kind, detail) = (&start.kind, &start.detail);
                    tracing::info!(workflow = name, %kind, run = %run.id, %detail, "trigger fired");
                    self.report.fired.push(Fired {
                        workflow: name.to_owned(),
                        kind: start.kind,
                        run_id: run.id.clone(),
                        detail: start.detail,
                        recovered,
                    });
                    done.push((key, run.id));
                }
                Err(WorkflowError::Paused { reason, .. }) => {
                    self.report.skipped.push(Skipped {
                        workflow: name.to_owned(),
                        kind: self.kind.to_owned(),
                        reason: format!("paused ({reason}) while starting runs: the rest start once it is resumed"),
                    });
                    break;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        mark_done(self.runtime.store(), name, done).await?;
        failure.map_or(Ok(()), Err)
    }
}

/// A mutation that runs `apply` in the commit.
fn custom(
    label: &'static str,
    apply: impl Fn(&WriteTransaction) -> Result<(), StoreError> + Send + Sync + 'static,
) -> Mutation {
    Mutation::Custom(CustomMutation { label, apply: Arc::new(apply) })
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("trigger state always serializes")
}

fn from_json<T: for<'de> Deserialize<'de>>(what: impl FnOnce() -> String, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt { what: what(), detail: e.to_string() })
}

/// Step 1 of a start: the fires as *starting*, with the trigger's state
/// and an audit entry per fire, in one commit.
async fn record_fires(
    store: &Store,
    workflow: &str,
    starts: &[(String, PendingStart)],
    writes: Vec<StateWrite>,
) -> Result<(), StoreError> {
    let audit = starts
        .iter()
        .map(|(key, s)| AuditEntry::allowed("host", "trigger.fire", format!("{workflow} {key}")).with_reason(&s.detail))
        .collect();
    let name = workflow.to_owned();
    let pending: Vec<(String, String)> = starts.iter().map(|(k, s)| (k.clone(), to_json(s))).collect();
    let mutation = custom("trigger.record", move |txn| {
        let mut table = txn.open_table(PENDING)?;
        for (key, json) in &pending {
            table.insert((name.as_str(), key.as_str()), json.as_str())?;
        }
        drop(table);
        for write in &writes {
            apply_write(txn, &name, write)?;
        }
        Ok(())
    });
    store.commit(Batch { mutations: vec![mutation], audit }).await.map(drop)
}

/// Step 3 of a start: the fires in `done` (key, run id) are no longer
/// *starting*, and their runs are known to be theirs.
async fn mark_done(store: &Store, workflow: &str, done: Vec<(String, String)>) -> Result<(), StoreError> {
    if done.is_empty() {
        return Ok(());
    }
    let name = workflow.to_owned();
    let mutation = custom("trigger.started", move |txn| {
        let mut pending = txn.open_table(PENDING)?;
        let mut started = txn.open_table(STARTED)?;
        for (key, run_id) in &done {
            pending.remove((name.as_str(), key.as_str()))?;
            started.insert(run_id.as_str(), (name.as_str(), key.as_str()))?;
        }
        Ok(())
    });
    store.commit(Batch { mutations: vec![mutation], audit: vec![] }).await.map(drop)
}

fn apply_write(txn: &WriteTransaction, workflow: &str, write: &StateWrite) -> Result<(), StoreError> {
    match write {
        StateWrite::Schedule(state) => {
            txn.open_table(SCHEDULES)?.insert(workflow, to_json(state).as_str())?;
        }
        StateWrite::InboxFile { name, sha256, size, at_ms } => {
            txn.open_table(INBOX_FILES)?.insert((workflow, name.as_str(), sha256.as_str()), (*size, *at_ms))?;
        }
        StateWrite::InboxHash { name, size, modified_ns, sha256 } => {
            txn.open_table(INBOX_HASHES)?.insert((workflow, name.as_str()), (*size, *modified_ns, sha256.as_str()))?;
        }
        StateWrite::RecordWatch(watch) => {
            txn.open_table(RECORD_WATCH)?.insert(workflow, to_json(watch).as_str())?;
        }
        StateWrite::RecordSeen { id, version, updated_at_ms } => {
            txn.open_table(RECORD_SEEN)?.insert((workflow, id.as_str()), (*version, *updated_at_ms))?;
        }
        StateWrite::ForgetRecord(id) => {
            txn.open_table(RECORD_SEEN)?.remove((workflow, id.as_str()))?;
        }
        StateWrite::ForgetAllRecords => {
            let mut table = txn.open_table(RECORD_SEEN)?;
            let mut ids = Vec::new();
            for item in table.range((workflow, "")..)? {
                let (k, _) = item?;
                let (w, id) = k.value();
                if w != workflow {
                    break;
                }
                ids.push(id.to_owned());
            }
            for id in &ids {
                table.remove((workflow, id.as_str()))?;
            }
        }
    }
    Ok(())
}

/// The starts of `workflow` recorded but not marked done, oldest first.
fn pending_of(store: &Store, workflow: &str) -> Result<Vec<(String, PendingStart)>, StoreError> {
    let txn = store.db().begin_read()?;
    let table = txn.open_table(PENDING)?;
    let mut out = Vec::new();
    for item in table.range((workflow, "")..)? {
        let (k, v) = item?;
        let (w, key) = k.value();
        if w != workflow {
            break;
        }
        let start: PendingStart = from_json(|| format!("trigger start `{workflow} {key}`"), v.value())?;
        out.push((key.to_owned(), start));
    }
    out.sort_by(|(ka, a), (kb, b)| (a.recorded_at_ms, ka).cmp(&(b.recorded_at_ms, kb)));
    Ok(out)
}

/// For each recorded start, the run it already started, if any (see the
/// module docs for how a run is recognised).
fn existing_runs(
    store: &Store,
    workflow: &str,
    pending: &[(String, PendingStart)],
) -> Result<Vec<Option<String>>, StoreError> {
    let earliest = pending.iter().map(|(_, p)| p.recorded_at_ms).min().unwrap_or(0);
    let since = earliest.saturating_sub(RECOVERY_SLACK_MS);
    let mut candidates = runs_created_since(store, since)?;
    candidates.retain(|r| r.workflow == workflow);
    candidates.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
    let txn = store.db().begin_read()?;
    let started = txn.open_table(STARTED)?;
    let mut claimed = BTreeSet::new();
    let mut out = Vec::with_capacity(pending.len());
    for (_, p) in pending {
        let mut found = None;
        for run in &candidates {
            let fits = run.trigger == p.kind
                && run.input == p.input
                && run.created_at_ms.saturating_add(RECOVERY_SLACK_MS) >= p.recorded_at_ms;
            if !fits || claimed.contains(&run.id) || started.get(run.id.as_str())?.is_some() {
                continue;
            }
            found = Some(run.id.clone());
            break;
        }
        if let Some(id) = &found {
            claimed.insert(id.clone());
        }
        out.push(found);
    }
    Ok(out)
}

/// The runs created at or after `since_ms` (ids are time-ordered, so the
/// newest runs are read until one is older).
fn runs_created_since(store: &Store, since_ms: u64) -> Result<Vec<Run>, StoreError> {
    let mut limit = 64;
    loop {
        let runs = store.recent_runs(limit)?;
        let complete = runs.len() < limit || runs.last().is_some_and(|r| r.created_at_ms < since_ms);
        if complete {
            return Ok(runs.into_iter().filter(|r| r.created_at_ms >= since_ms).collect());
        }
        limit = limit.saturating_mul(4);
    }
}

// --- schedule ---------------------------------------------------------------

fn plan_schedule(
    store: &Store,
    workflow: &str,
    cron: &str,
    timezone: &str,
    input: &Value,
    now_ms: u64,
    budget: usize,
) -> Result<Plan, WorkflowError> {
    let schedule = match CronSchedule::parse(cron, timezone) {
        Ok(s) => s,
        Err(e) => return Ok(Plan::note(format!("cannot use the schedule: {e}; fix [trigger] in the workflow file"))),
    };
    let state = schedule_state(store, workflow)?;
    let state = match state {
        Some(s) if s.cron == cron && s.timezone == timezone => s,
        _ => {
            let first = ScheduleState { cron: cron.to_owned(), timezone: timezone.to_owned(), last_ms: now_ms };
            return Ok(Plan { writes: vec![StateWrite::Schedule(first)], ..Plan::default() });
        }
    };
    let Some(due) = latest_fire(&schedule, state.last_ms, now_ms) else { return Ok(Plan::default()) };
    if budget == 0 {
        return Ok(Plan { held: 1, ..Plan::default() });
    }
    let at = format_ms(due.at_ms);
    let detail = match (due.missed, due.more) {
        (1, _) => format!("scheduled at {at}"),
        (n, false) => format!("scheduled at {at} ({n} missed fires coalesced into one run)"),
        (n, true) => format!("scheduled at {at} (more than {n} missed fires coalesced into one run)"),
    };
    let fire = Fire { key: format!("schedule/{:020}", due.at_ms), input: scheduled_input(input, due.at_ms), detail };
    let next = ScheduleState { last_ms: due.at_ms, ..state };
    Ok(Plan { fires: vec![fire], writes: vec![StateWrite::Schedule(next)], ..Plan::default() })
}

fn schedule_state(store: &Store, workflow: &str) -> Result<Option<ScheduleState>, StoreError> {
    let txn = store.db().begin_read()?;
    let table = txn.open_table(SCHEDULES)?;
    let Some(json) = table.get(workflow)? else { return Ok(None) };
    from_json(|| format!("schedule state of workflow `{workflow}`"), json.value()).map(Some)
}

/// The latest fire time in a window and how many fell in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    at_ms: u64,
    /// Fires in the window, counted up to [`MAX_COUNTED_MISSED_FIRES`].
    missed: usize,
    /// There were more than `missed`.
    more: bool,
}

/// The latest fire of `schedule` in `(after_ms, now_ms]`, if any.
fn latest_fire(schedule: &CronSchedule, after_ms: u64, now_ms: u64) -> Option<Due> {
    let counted = schedule.fires_between(after_ms, now_ms, MAX_COUNTED_MISSED_FIRES);
    let &last_counted = counted.last()?;
    if counted.len() < MAX_COUNTED_MISSED_FIRES {
        return Some(Due { at_ms: last_counted, missed: counted.len(), more: false });
    }
    // Too many to walk: look back from `now` in growing windows.
    let mut window: u64 = 60 * 60 * 1000;
    loop {
        let from = now_ms.saturating_sub(window).max(last_counted);
        let mut cursor = from;
        let mut latest = None;
        loop {
            let page = schedule.fires_between(cursor, now_ms, MAX_COUNTED_MISSED_FIRES);
            let Some(&last) = page.last() else { break };
            latest = Some(last);
            cursor = last;
            if page.len() < MAX_COUNTED_MISSED_FIRES {
                break;
            }
        }
        if latest.is_some() || from == last_counted {
            let at_ms = latest.unwrap_or(last_counted);
            return Some(Due { at_ms, missed: MAX_COUNTED_MISSED_FIRES, more: true });
        }
        window = window.saturating_mul(24);
    }
}

/// The run input of a schedule fire: the trigger's `input`, with
/// `scheduled_at_ms` added when it is an object.
fn scheduled_input(input: &Value, at_ms: u64) -> Value {
    match input {
        Value::Object(map) => {
            let mut map = map.clone();
            map.insert("scheduled_at_ms".to_owned(), Value::from(at_ms));
            Value::Object(map)
        }
        other => other.clone(),
    }
}

/// Unix ms as RFC 3339 in UTC.
pub fn format_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| format!("{ms} ms"), |t| t.to_string())
}

// --- inbox ------------------------------------------------------------------

/// Whether file name `name` matches `pattern`: `*` stands for any run of
/// characters (also none), `?` for exactly one, every other character for
/// itself (case-sensitive; no brackets or braces). A name starting with
/// `.` only matches a pattern starting with `.`, as in a shell, so hidden
/// and temporary files are left alone.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // The last `*` seen and the name position it is tried at.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
                continue;
            }
            _ => {}
        }
        let Some((sp, sn)) = star else { return false };
        // Let the `*` take one more character and try again.
        star = Some((sp, sn + 1));
        pi = sp + 1;
        ni = sn + 1;
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// An inbox file as read: its hash, size and text.
#[derive(Debug, Clone, PartialEq)]
struct FileContent {
    sha256: String,
    size: u64,
    text: Option<String>,
    /// Why `text` is `None`.
    note: Option<String>,
}

/// Reads `path` once, hashing all of it and keeping its text if it is
/// UTF-8 of at most [`MAX_INBOX_TEXT_BYTES`].
fn read_inbox_file(path: &Path) -> std::io::Result<FileContent> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut kept = Vec::new();
    let mut size = 0u64;
    let mut too_big = false;
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&chunk[..n]);
        size += n as u64;
        if too_big {
            continue;
        }
        if size > MAX_INBOX_TEXT_BYTES {
            too_big = true;
            kept = Vec::new();
        } else {
            kept.extend_from_slice(&chunk[..n]);
        }
    }
    let (text, note) = if too_big {
        let note = format!("the file is larger than {MAX_INBOX_TEXT_BYTES} bytes: its text is left out");
        (None, Some(note))
    } else {
        match String::from_utf8(kept) {
            Ok(text) => (Some(text), None),
            Err(_) => (None, Some("the file is not UTF-8 text: its text is left out".to_owned())),
        }
    };
    Ok(FileContent { sha256: hex::encode(hasher.finalize()), size, text, note })
}

/// `folder/name` with `/` separators.
fn relative_path(folder: &Path, name: &str) -> String {
    let mut parts: Vec<String> = folder
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    parts.push(name.to_owned());
    parts.join("/")
}

fn modified_ns(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The key of an inbox fire: the file's name and content.
fn inbox_key(sha256: &str, name: &str) -> String {
    format!("inbox/{sha256}/{name}")
}

/// What the database knows about one inbox workflow's files.
#[derive(Debug, Default)]
struct InboxMemory {
    hashes: HashMap<String, (u64, u64, String)>,
    processed: BTreeSet<(String, String)>,
}

fn inbox_memory(store: &Store, workflow: &str) -> Result<InboxMemory, StoreError> {
    let txn = store.db().begin_read()?;
    let mut memory = InboxMemory::default();
    for item in txn.open_table(INBOX_HASHES)?.range((workflow, "")..)? {
        let (k, v) = item?;
        let (w, name) = k.value();
        if w != workflow {
            break;
        }
        let (size, modified, sha) = v.value();
        memory.hashes.insert(name.to_owned(), (size, modified, sha.to_owned()));
    }
    for item in txn.open_table(INBOX_FILES)?.range((workflow, "", "")..)? {
        let (k, _) = item?;
        let (w, name, sha) = k.value();
        if w != workflow {
            break;
        }
        memory.processed.insert((name.to_owned(), sha.to_owned()));
    }
    Ok(memory)
}

fn plan_inbox(
    store: &Store,
    workflow: &str,
    root: &Path,
    folder: &Path,
    pattern: &str,
    now_ms: u64,
    mut budget: usize,
) -> Result<Plan, WorkflowError> {
    let shown = relative_path(folder, "");
    let shown = shown.trim_end_matches('/');
    let dir = root.join(folder);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Plan::note(format!(
                "inbox folder {shown} does not exist in the workspace: create it to start receiving files"
            )));
        }
        Err(e) => return Ok(Plan::note(format!("cannot list inbox folder {shown}: {e}"))),
    };
    match (dir.canonicalize(), root.canonicalize()) {
        (Ok(d), Ok(r)) if d.starts_with(&r) => {}
        _ => {
            return Ok(Plan::note(format!(
                "inbox folder {shown} resolves outside the workspace (a symlink?): nothing in it is read"
            )));
        }
    }
    let mut names = Vec::new();
    let mut unreadable_names = 0;
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => return Ok(Plan::note(format!("cannot list inbox folder {shown}: {e}"))),
        };
        // Symlinks and folders are not files of the inbox.
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match entry.file_name().into_string() {
            Ok(name) if glob_matches(pattern, &name) => names.push(name),
            Ok(_) => {}
            Err(_) => unreadable_names += 1,
        }
    }
    names.sort();
    let known = inbox_memory(store, workflow)?;
    let mut plan = Plan::default();
    if unreadable_names > 0 {
        plan.notes.push(format!("{unreadable_names} file name(s) in {shown} are not UTF-8 and are skipped"));
    }
    for name in names {
        let path = dir.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if !meta.is_file() {
            continue;
        }
        let modified = modified_ns(&meta);
        let cached = known.hashes.get(&name);
        if let Some((size, m, sha)) = cached
            && *size == meta.len()
            && *m == modified
            && modified != 0
            && known.processed.contains(&(name.clone(), sha.clone()))
        {
            continue;
        }
        if budget == 0 {
            plan.held += 1;
            continue;
        }
        let content = match read_inbox_file(&path) {
            Ok(content) => content,
            Err(e) => {
                plan.notes.push(format!("cannot read {}: {e}", relative_path(folder, &name)));
                continue;
            }
        };
        let unchanged_cache =
            cached.is_some_and(|(s, m, sha)| (*s, *m, sha) == (content.size, modified, &content.sha256));
        if !unchanged_cache && content.size == meta.len() {
            plan.writes.push(StateWrite::InboxHash {
                name: name.clone(),
                size: content.size,
                modified_ns: modified,
                sha256: content.sha256.clone(),
            });
        }
        if known.processed.contains(&(name.clone(), content.sha256.clone())) {
            continue;
        }
        let path = relative_path(folder, &name);
        let mut input = json!({
            "file": name,
            "path": path,
            "size": content.size,
            "text": content.text,
            "sha256": content.sha256,
        });
        if let Some(note) = &content.note {
            input["note"] = Value::String(note.clone());
        }
        let detail = format!("file {path} ({} bytes, sha256 {})", content.size, &content.sha256[..12]);
        plan.fires.push(Fire { key: inbox_key(&content.sha256, &name), input, detail });
        plan.writes.push(StateWrite::InboxFile { name, sha256: content.sha256, size: content.size, at_ms: now_ms });
        budget -= 1;
    }
    Ok(plan)
}

// --- record -----------------------------------------------------------------

fn record_watch(store: &Store, workflow: &str) -> Result<Option<RecordWatch>, StoreError> {
    let txn = store.db().begin_read()?;
    let table = txn.open_table(RECORD_WATCH)?;
    let Some(json) = table.get(workflow)? else { return Ok(None) };
    from_json(|| format!("record trigger state of workflow `{workflow}`"), json.value()).map(Some)
}

/// The remembered (version, update time) of `workflow`'s records with ids
/// in `(after, upto]` (`None`: from the first, to the last).
fn seen_between(
    store: &Store,
    workflow: &str,
    after: Option<&str>,
    upto: Option<&str>,
) -> Result<BTreeMap<String, (u64, u64)>, StoreError> {
    let txn = store.db().begin_read()?;
    let table = txn.open_table(RECORD_SEEN)?;
    let mut out = BTreeMap::new();
    for item in table.range((workflow, after.unwrap_or(""))..)? {
        let (k, v) = item?;
        let (w, id) = k.value();
        if w != workflow || upto.is_some_and(|u| id > u) {
            break;
        }
        if after == Some(id) {
            continue;
        }
        out.insert(id.to_owned(), v.value());
    }
    Ok(out)
}

fn record_error(e: RecordError) -> WorkflowError {
    match e {
        RecordError::Store(e) => WorkflowError::Store(e),
        other => WorkflowError::Definition(other.to_string()),
    }
}

fn plan_record(runtime: &Runtime, workflow: &str, collection: &str, mut budget: usize) -> Result<Plan, WorkflowError> {
    let store = runtime.store();
    let mut plan = Plan::default();
    let stored = record_watch(store, workflow)?;
    let mut watch = match stored.clone() {
        Some(w) if w.collection == collection => w,
        other => {
            if other.is_some() {
                plan.writes.push(StateWrite::ForgetAllRecords);
            }
            RecordWatch { collection: collection.to_owned(), baseline: true, cursor: None, after_id: None }
        }
    };
    let collections = &runtime.plane().collections;
    let mut scanned = 0;
    while scanned < MAX_RECORDS_SCANNED_PER_TICK {
        let query = Query {
            collection: collection.to_owned(),
            conditions: Vec::new(),
            limit: RECORD_PAGE,
            cursor: watch.cursor.clone(),
        };
        let page = match records::query(store, collections, &query) {
            Ok(page) => page,
            // A cursor an older keel wrote: start the pass again.
            Err(RecordError::InvalidCursor) if watch.cursor.is_some() => {
                (watch.cursor, watch.after_id) = (None, None);
                continue;
            }
            Err(e) => return Err(record_error(e)),
        };
        scanned += page.records.len().max(1);
        let last_id = page.records.last().map(|r| r.id.clone());
        let upto = if page.next_cursor.is_some() { last_id.as_deref() } else { None };
        // With no condition every record examined is returned, in id order.
        let seen = if plan.writes.iter().any(|w| matches!(w, StateWrite::ForgetAllRecords)) {
            BTreeMap::new()
        } else {
            seen_between(store, workflow, watch.after_id.as_deref(), upto)?
        };
        let mut held = false;
        for record in &page.records {
            let now = (record.version, record.updated_at_ms);
            if seen.get(&record.id) == Some(&now) {
                continue;
            }
            if !watch.baseline {
                if budget == 0 {
                    held = true;
                    plan.held += 1;
                    continue;
                }
                budget -= 1;
                plan.fires.push(Fire {
                    key: format!("record/{}/{}/{}", record.version, record.updated_at_ms, record.id),
                    input: json!({
                        "collection": collection,
                        "id": record.id,
                        "version": record.version,
                        "data": record.data,
                    }),
                    detail: format!("record {collection}/{} version {}", record.id, record.version),
                });
            }
            plan.writes.push(StateWrite::RecordSeen {
                id: record.id.clone(),
                version: record.version,
                updated_at_ms: record.updated_at_ms,
            });
        }
        if held {
            // This page is looked at again next tick, from its start.
            break;
        }
        let present: BTreeSet<&str> = page.records.iter().map(|r| r.id.as_str()).collect();
        for id in seen.keys().filter(|id| !present.contains(id.as_str())) {
            plan.writes.push(StateWrite::ForgetRecord(id.clone()));
        }
        match page.next_cursor {
            Some(cursor) => {
                watch.cursor = Some(cursor);
                watch.after_id = last_id;
            }
            None => {
                watch.cursor = None;
                watch.after_id = None;
                watch.baseline = false;
                break;
            }
        }
    }
    if stored.as_ref() != Some(&watch) {
        plan.writes.push(StateWrite::RecordWatch(watch));
    }
    Ok(plan)
}

// --- state for `keel triggers list` ------------------------------------------

/// Where one workflow's trigger is, for `keel triggers list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TriggerStatus {
    pub workflow: String,
    /// `manual`, `webhook`, [`SCHEDULE`], [`INBOX`] or [`RECORD`].
    pub kind: String,
    /// The trigger in words ("0 9 * * MON-FRI in Europe/Berlin",
    /// "inbox/leads (*.txt)", "collection leads").
    pub trigger: String,
    /// Why pruning paused the workflow, if it did.
    pub paused: Option<String>,
    /// Starts recorded but not finished (after a crash).
    pub starting: usize,
    pub progress: TriggerProgress,
}

/// A trigger's own state.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TriggerProgress {
    /// Not fired by ticks (`manual`, `webhook`).
    NotTicked,
    Schedule {
        /// The next fire (Unix ms); at or before now when one is due.
        next_fire_ms: Option<u64>,
        /// The last fire time handled; `None` before the first tick.
        last_handled_ms: Option<u64>,
        /// Why the schedule cannot be used.
        error: Option<String>,
    },
    Inbox {
        /// Distinct (name, content) pairs that started a run.
        files_processed: u64,
    },
    Record {
        /// Records whose version is remembered.
        records_seen: u64,
        /// The first pass (remembering without firing) is done.
        watching: bool,
    },
}

/// The state of every workflow's trigger at `now_ms`.
pub fn statuses(
    store: &Store,
    defs: &[(WorkflowDef, String)],
    now_ms: u64,
) -> Result<Vec<TriggerStatus>, WorkflowError> {
    let paused = store.paused_workflows()?;
    let mut out = Vec::with_capacity(defs.len());
    for (def, _) in defs {
        let name = def.name.as_str();
        let (kind, trigger, progress) = match &def.trigger {
            Trigger::Manual => ("manual", format!("by hand: keel run {name}"), TriggerProgress::NotTicked),
            Trigger::Webhook { path } => {
                ("webhook", format!("POST /api/v1/hooks/{path} (keel serve)"), TriggerProgress::NotTicked)
            }
            Trigger::Schedule { cron, timezone, .. } => {
                let state = schedule_state(store, name)?.filter(|s| &s.cron == cron && &s.timezone == timezone);
                let last = state.map(|s| s.last_ms);
                let progress = match CronSchedule::parse(cron, timezone) {
                    Ok(schedule) => TriggerProgress::Schedule {
                        next_fire_ms: schedule.next_after(last.unwrap_or(now_ms)),
                        last_handled_ms: last,
                        error: None,
                    },
                    Err(e) => TriggerProgress::Schedule { next_fire_ms: None, last_handled_ms: last, error: Some(e) },
                };
                (SCHEDULE, format!("{cron} in {timezone}"), progress)
            }
            Trigger::Inbox { folder, pattern } => {
                let files_processed = count_prefixed_inbox(store, name)?;
                let shown = relative_path(folder, "");
                (
                    INBOX,
                    format!("{} ({pattern})", shown.trim_end_matches('/')),
                    TriggerProgress::Inbox { files_processed },
                )
            }
            Trigger::Record { collection } => {
                let watch = record_watch(store, name)?.filter(|w| &w.collection == collection);
                let records_seen =
                    if watch.is_some() { seen_between(store, name, None, None)?.len() as u64 } else { 0 };
                let watching = watch.is_some_and(|w| !w.baseline);
                (RECORD, format!("collection {collection}"), TriggerProgress::Record { records_seen, watching })
            }
        };
        out.push(TriggerStatus {
            workflow: name.to_owned(),
            kind: kind.to_owned(),
            trigger,
            paused: paused.get(name).map(|p| p.reason.clone()),
            starting: pending_of(store, name)?.len(),
            progress,
        });
    }
    Ok(out)
}

fn count_prefixed_inbox(store: &Store, workflow: &str) -> Result<u64, StoreError> {
    let txn = store.db().begin_read()?;
    let mut count = 0;
    for item in txn.open_table(INBOX_FILES)?.range((workflow, "", "")..)? {
        let (k, _) = item?;
        if k.value().0 != workflow {
            break;
        }
        count += 1;
    }
    Ok(count)
}

// --- the loop -----------------------------------------------------------------

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names() {
        assert!(glob_matches("*", "a.txt"));
        assert!(glob_matches("*.txt", "a.txt"));
        assert!(!glob_matches("*.txt", ".a.txt"), "hidden files need a pattern starting with '.'");
        assert!(glob_matches(".*", ".hidden"));
        assert!(!glob_matches("*.txt", "a.csv"));
        assert!(!glob_matches("*.txt", "a.txt.bak"));
        assert!(glob_matches("lead-??.json", "lead-07.json"));
        assert!(!glob_matches("lead-??.json", "lead-7.json"));
        assert!(glob_matches("a*b*c", "aXbYbZc"));
        assert!(!glob_matches("a*b*c", "aXbYbZ"));
        assert!(glob_matches("**", ""));
        assert!(glob_matches("", ""));
        assert!(!glob_matches("", "a"));
        assert!(glob_matches("report", "report"));
        assert!(!glob_matches("Report", "report"), "case-sensitive");
        assert!(glob_matches("é?*", "éà"), "characters, not bytes");
        assert!(glob_matches("[a].txt", "[a].txt"), "brackets are literal");
        assert!(glob_matches("*a", "aaaa"));
        assert!(!glob_matches("*a?", "a"));
    }

    #[test]
    fn missed_fires_are_coalesced_into_the_latest() {
        let hourly = CronSchedule::parse("0 * * * *", "UTC").unwrap();
        let h = 3_600_000;
        let base = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        assert_eq!(latest_fire(&hourly, base + 1, base + h - 1), None);
        assert_eq!(latest_fire(&hourly, base, base + h), Some(Due { at_ms: base + h, missed: 1, more: false }));
        let due = latest_fire(&hourly, base + 60_000, base + 3 * h + 60_000).unwrap();
        assert_eq!(due, Due { at_ms: base + 3 * h, missed: 3, more: false });
        // A year of a minutely schedule: too many to count, the latest still found.
        let minutely = CronSchedule::parse("* * * * *", "UTC").unwrap();
        let year = 365 * 24 * h;
        let due = latest_fire(&minutely, base, base + year + 30_000).unwrap();
        assert_eq!(due, Due { at_ms: base + year, missed: MAX_COUNTED_MISSED_FIRES, more: true });
        // Rare fires far apart: found through the growing windows.
        let yearly = CronSchedule::parse("0 0 1 1 *", "UTC").unwrap();
        let due = latest_fire(&yearly, base - 1, base + 3 * year).unwrap();
        assert_eq!((due.missed, due.more), (3, false));
    }

    #[test]
    fn schedule_input_gets_the_fire_time_when_it_is_an_object() {
        assert_eq!(scheduled_input(&json!({"a": 1}), 5), json!({"a": 1, "scheduled_at_ms": 5}));
        assert_eq!(scheduled_input(&json!([1]), 5), json!([1]));
        assert_eq!(scheduled_input(&json!("x"), 5), json!("x"));
        assert_eq!(format_ms(1_767_225_600_000), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn inbox_files_are_hashed_and_their_text_kept_when_small_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("a.txt");
        std::fs::write(&small, "héllo").unwrap();
        let c = read_inbox_file(&small).unwrap();
        assert_eq!(c.sha256, crate::runtime::sha256_hex("héllo".as_bytes()));
        assert_eq!((c.size, c.text.as_deref(), c.note), (6, Some("héllo"), None));

        let binary = dir.path().join("b.bin");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
        let c = read_inbox_file(&binary).unwrap();
        assert_eq!((c.size, c.text), (3, None));
        assert!(c.note.unwrap().contains("not UTF-8"));

        let big = dir.path().join("big.txt");
        let bytes = vec![b'x'; MAX_INBOX_TEXT_BYTES as usize + 1];
        std::fs::write(&big, &bytes).unwrap();
        let c = read_inbox_file(&big).unwrap();
        assert_eq!((c.size, c.text, c.sha256), (bytes.len() as u64, None, crate::runtime::sha256_hex(&bytes)));
        assert!(c.note.unwrap().contains("larger than"));

        let exact = dir.path().join("exact.txt");
        std::fs::write(&exact, &bytes[1..]).unwrap();
        assert!(read_inbox_file(&exact).unwrap().text.is_some(), "exactly the limit keeps its text");
    }

    #[test]
    fn inbox_paths_use_slashes() {
        assert_eq!(relative_path(Path::new("inbox/leads"), "a.txt"), "inbox/leads/a.txt");
        assert_eq!(relative_path(Path::new("inbox"), ""), "inbox/");
    }

    // Crash safety: the states a crash can leave between the three steps
    // of a start, made by calling the steps directly.

    use crate::workflow::definition::{self, AgentCheck};
    use crate::workspace::Workspace;

    /// A schedule whose input is not an object, so every fire has the
    /// same input: recognising runs by input alone would go wrong.
    const NIGHTLY: &str = r#"
[trigger]
kind = "schedule"
cron = "0 3 * * *"
input = "go"

[[steps]]
id = "only"
agent = "echo"
"#;
    const NOW: u64 = 1_767_225_600_000;

    struct Host {
        _dir: tempfile::TempDir,
        root: PathBuf,
        rt: Runtime,
        defs: Vec<(WorkflowDef, String)>,
    }

    fn host() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        std::fs::write(root.join("keel.toml"), "").unwrap();
        let rt = Workspace::open(&root).unwrap().runtime().unwrap();
        let path = root.join("workflows/nightly.toml");
        let def = definition::parse(&path, NIGHTLY, &|_| AgentCheck::Agent).unwrap();
        Host { _dir: dir, root, rt, defs: vec![(def, NIGHTLY.to_owned())] }
    }

    fn pending(key: &str) -> (String, PendingStart) {
        let start = PendingStart {
            kind: SCHEDULE.to_owned(),
            input: json!("go"),
            detail: format!("test {key}"),
            recorded_at_ms: memory::now_ms(),
        };
        (key.to_owned(), start)
    }

    fn all_runs(h: &Host) -> Vec<Run> {
        h.rt.store().recent_runs(usize::MAX).unwrap()
    }

    #[tokio::test]
    async fn a_recorded_start_without_its_run_is_started_once() {
        let h = host();
        record_fires(h.rt.store(), "nightly", &[pending("schedule/1")], vec![]).await.unwrap();
        // Crash: the run was never started.
        let report = tick(&h.rt, &h.root, &h.defs, NOW).await.unwrap();
        assert_eq!(report.fired.len(), 1, "{report:?}");
        assert!(report.fired[0].recovered);
        let runs = all_runs(&h);
        assert_eq!(runs.len(), 1);
        assert_eq!((runs[0].id.as_str(), runs[0].trigger.as_str()), (report.fired[0].run_id.as_str(), SCHEDULE));
        let again = tick(&h.rt, &h.root, &h.defs, NOW).await.unwrap();
        assert!(again.fired.is_empty(), "{again:?}");
        assert_eq!(all_runs(&h).len(), 1);
        assert!(pending_of(h.rt.store(), "nightly").unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_recorded_start_whose_run_exists_is_not_started_again() {
        let h = host();
        let (def, text) = &h.defs[0];
        // An earlier fire, finished properly: its run must not be claimed.
        let (key, start) = pending("schedule/0");
        record_fires(h.rt.store(), "nightly", &[(key.clone(), start.clone())], vec![]).await.unwrap();
        let earlier = h.rt.start_run(def, text, start.input, SCHEDULE, "host").await.unwrap();
        mark_done(h.rt.store(), "nightly", vec![(key, earlier.id.clone())]).await.unwrap();
        // Two fires recorded; the first started its run, then the crash.
        let (key1, start1) = pending("schedule/1");
        record_fires(h.rt.store(), "nightly", &[(key1, start1.clone()), pending("schedule/2")], vec![]).await.unwrap();
        let started = h.rt.start_run(def, text, start1.input, SCHEDULE, "host").await.unwrap();

        let report = tick(&h.rt, &h.root, &h.defs, NOW).await.unwrap();
        let ids: Vec<&str> = report.fired.iter().map(|f| f.run_id.as_str()).collect();
        assert_eq!(report.fired.len(), 2, "{report:?}");
        assert_eq!(ids[0], started.id, "the existing run is recognised, not started again");
        assert!(!ids.contains(&earlier.id.as_str()), "a run of another fire is never claimed");
        assert_eq!(all_runs(&h).len(), 3, "one run per fire");
        assert!(tick(&h.rt, &h.root, &h.defs, NOW).await.unwrap().fired.is_empty());
        assert_eq!(all_runs(&h).len(), 3);
    }
}
