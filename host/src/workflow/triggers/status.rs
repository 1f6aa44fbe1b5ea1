//! State for `keel triggers list`.

use redb::ReadableDatabase;
use serde::Serialize;

use super::inbox::{INBOX_FILES, relative_path};
use super::record::{record_watch, seen_between};
use super::schedule::schedule_state;
use super::starts::pending_of;
use super::{INBOX, RECORD, SCHEDULE};
use crate::memory::{Store, StoreError};
use crate::workflow::WorkflowError;
use crate::workflow::definition::{Trigger, WorkflowDef};
use crate::workflow::schedule::CronSchedule;

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
