//! The durable bookkeeping of starts: a fire is recorded as *starting*
//! before its run is started and marked done after, and the *starting*
//! entries a crash left behind are settled (see "Crash safety" in the
//! [module docs](super)).

use std::collections::BTreeSet;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::inbox::{INBOX_FILES, INBOX_HASHES};
use super::record::{RECORD_SEEN, RECORD_WATCH, RecordWatch};
use super::schedule::{SCHEDULES, ScheduleState};
use super::{Fired, Skipped, WorkflowPass, from_json, to_json};
use crate::memory::audit::AuditEntry;
use crate::memory::committer::{Batch, CustomMutation, Mutation};
use crate::memory::{Store, StoreError};
use crate::workflow::WorkflowError;
use crate::workflow::runs::Run;

/// How much earlier than its *starting* entry a run may appear to have been
/// created and still be recognised as that entry's run (clock steps).
const RECOVERY_SLACK_MS: u64 = 5 * 60 * 1000;

/// (workflow, fire key) -> a start recorded before its run (JSON [`PendingStart`]).
pub(super) const PENDING: TableDefinition<(&str, &str), &str> = TableDefinition::new("trigger_pending");
/// Run id -> (workflow, fire key) of the fire that started it.
pub(super) const STARTED: TableDefinition<&str, (&str, &str)> = TableDefinition::new("trigger_started");

/// A start recorded before it happens (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct PendingStart {
    pub(super) kind: String,
    pub(super) input: Value,
    pub(super) detail: String,
    /// Wall clock when recorded, to recognise the run after a crash.
    pub(super) recorded_at_ms: u64,
}

/// A change to a trigger's state, committed with the fires it goes with.
#[derive(Debug, Clone)]
pub(super) enum StateWrite {
    Schedule(ScheduleState),
    InboxFile { name: String, sha256: String, size: u64, at_ms: u64 },
    InboxHash { name: String, size: u64, modified_ns: u64, sha256: String },
    RecordWatch(RecordWatch),
    RecordSeen { id: String, version: u64, updated_at_ms: u64 },
    ForgetRecord(String),
    ForgetAllRecords,
}

impl WorkflowPass<'_> {
    /// Settles the starts an earlier tick recorded but did not finish.
    pub(super) async fn settle_pending(&mut self) -> Result<(), WorkflowError> {
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
    pub(super) async fn start_all(
        &mut self,
        starts: Vec<(String, PendingStart)>,
        recovered: bool,
    ) -> Result<(), WorkflowError> {
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

/// Step 1 of a start: the fires as *starting*, with the trigger's state
/// and an audit entry per fire, in one commit.
pub(super) async fn record_fires(
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
pub(super) fn pending_of(store: &Store, workflow: &str) -> Result<Vec<(String, PendingStart)>, StoreError> {
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

#[cfg(test)]
mod tests {
    // Crash safety: the states a crash can leave between the three steps
    // of a start, made by calling the steps directly.

    use std::path::PathBuf;

    use serde_json::json;

    use super::*;
    use crate::memory;
    use crate::runtime::Runtime;
    use crate::workflow::definition::{self, AgentCheck, WorkflowDef};
    use crate::workflow::triggers::{SCHEDULE, tick};
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
