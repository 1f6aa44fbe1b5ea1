//! The record trigger: records of a collection created or updated since
//! they were last seen, found by a scan that continues from a cursor.

use std::collections::{BTreeMap, BTreeSet};

use redb::{ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::starts::StateWrite;
use super::{Fire, MAX_RECORDS_SCANNED_PER_TICK, Plan, from_json};
use crate::memory::records::{self, Query, RecordError};
use crate::memory::{Store, StoreError};
use crate::runtime::Runtime;
use crate::workflow::WorkflowError;

/// Records asked for per query page.
const RECORD_PAGE: u32 = records::MAX_QUERY_LIMIT;

/// Workflow -> where its record trigger is (JSON [`RecordWatch`]).
pub(super) const RECORD_WATCH: TableDefinition<&str, &str> = TableDefinition::new("trigger_record_watch");
/// (workflow, record id) -> (version, updated at ms) last seen.
pub(super) const RECORD_SEEN: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("trigger_record_seen");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct RecordWatch {
    pub(super) collection: String,
    /// The first pass: records are remembered without firing.
    pub(super) baseline: bool,
    /// The query cursor the pass continues from; `None`: from the start.
    pub(super) cursor: Option<String>,
    /// The last record id the pass has looked at.
    pub(super) after_id: Option<String>,
}

pub(super) fn record_watch(store: &Store, workflow: &str) -> Result<Option<RecordWatch>, StoreError> {
    let txn = store.db().begin_read()?;
    let table = txn.open_table(RECORD_WATCH)?;
    let Some(json) = table.get(workflow)? else { return Ok(None) };
    from_json(|| format!("record trigger state of workflow `{workflow}`"), json.value()).map(Some)
}

/// The remembered (version, update time) of `workflow`'s records with ids
/// in `(after, upto]` (`None`: from the first, to the last).
pub(super) fn seen_between(
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

pub(super) fn plan_record(
    runtime: &Runtime,
    workflow: &str,
    collection: &str,
    mut budget: usize,
) -> Result<Plan, WorkflowError> {
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
