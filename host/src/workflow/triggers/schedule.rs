//! The schedule trigger: fires at the times of a cron schedule, missed
//! fires coalesced into one run.

use redb::{ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::starts::StateWrite;
use super::{Fire, MAX_COUNTED_MISSED_FIRES, Plan, from_json};
use crate::memory::{Store, StoreError};
use crate::workflow::WorkflowError;
use crate::workflow::schedule::CronSchedule;

/// Workflow -> its schedule's state (JSON [`ScheduleState`]).
pub(super) const SCHEDULES: TableDefinition<&str, &str> = TableDefinition::new("trigger_schedules");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ScheduleState {
    pub(super) cron: String,
    pub(super) timezone: String,
    /// The last fire time handled (or the time the schedule was first seen).
    pub(super) last_ms: u64,
}

pub(super) fn plan_schedule(
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

pub(super) fn schedule_state(store: &Store, workflow: &str) -> Result<Option<ScheduleState>, StoreError> {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
}
