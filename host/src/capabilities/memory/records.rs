//! `get-record`, `put-record`, `delete-record`, `query-records`.

use serde_json::Value;

use super::{MemoryView, unavailable};
use crate::bindings::GuestError;
use crate::bindings::keel::plugin::memory::{Comparison, RecordEntry, RecordPage, RecordQuery, WriteResult};
use crate::kernel::Request;
use crate::memory::now_ms;
use crate::memory::records::{self, Condition, Op, Query, RecordError, RecordWrite, RecordWriter, Visible};

fn to_wit(entry: records::RecordEntry) -> RecordEntry {
    RecordEntry {
        id: entry.id,
        version: entry.version,
        data: entry.data.to_string(),
        updated_at_ms: entry.updated_at_ms,
    }
}

fn guest_error(e: RecordError) -> GuestError {
    match e {
        RecordError::Store(e) => unavailable(e),
        other => GuestError::InvalidInput(other.to_string()),
    }
}

fn parse_json(what: &str, text: &str) -> Result<Value, GuestError> {
    serde_json::from_str(text).map_err(|e| GuestError::InvalidInput(format!("{what} is not valid JSON: {e}")))
}

impl MemoryView<'_> {
    /// The owners whose records of `collection` this caller may see
    /// (unowned records aside).
    fn readable_owners(&self, collection: &str) -> Vec<String> {
        self.caller.grants.readable_owners(&self.caller.plugin, collection)
    }

    fn record_writer(&self) -> RecordWriter {
        RecordWriter { plugin: self.caller.plugin.clone(), may_change: self.caller.grants.writable_others() }
    }

    /// The record as this call sees it: its own pending write (stamped
    /// now), else the committed one if its owner is `visible`.
    fn current_record(
        &self,
        collection: &str,
        id: &str,
        visible: Visible<'_>,
    ) -> Result<Option<records::RecordEntry>, GuestError> {
        if let Some(pending) = self.writes.record(collection, id) {
            return Ok(pending.data.clone().map(|data| records::RecordEntry {
                id: id.to_owned(),
                version: pending.version,
                data,
                updated_at_ms: now_ms(),
                owner: None,
            }));
        }
        records::get_visible(self.gate.store(), collection, id, visible).map_err(guest_error)
    }

    /// The record's current version, or the conflict to report. A record
    /// another plugin owns is refused (and the refusal audited) unless the
    /// caller's grant names its owner in `write_from`.
    fn check_expected(
        &self,
        collection: &str,
        id: &str,
        expected: Option<u64>,
    ) -> Result<Result<u64, WriteResult>, GuestError> {
        let current = self.current_record(collection, id, Visible::All)?;
        if let Some(owner) = current.as_ref().and_then(|r| r.owner.as_deref()) {
            let item = format!("{collection}/{id}");
            self.gate.check(self.caller, Request::ChangeOwned { namespace: collection, item: &item, owner })?;
        }
        let current = current.map_or(0, |e| e.version);
        Ok(match expected {
            Some(e) if e != current => Err(WriteResult::Conflict(current)),
            _ => Ok(current),
        })
    }

    pub(super) fn record_get(&self, collection: &str, id: &str) -> Result<Option<RecordEntry>, GuestError> {
        self.gate.check(self.caller, Request::MemoryRead { namespace: collection })?;
        let owners = self.readable_owners(collection);
        Ok(self.current_record(collection, id, Visible::Owners(&owners))?.map(to_wit))
    }

    pub(super) fn record_put(
        &mut self,
        collection: String,
        id: String,
        data: &str,
        expected_version: Option<u64>,
    ) -> Result<WriteResult, GuestError> {
        self.gate.check(self.caller, Request::MemoryWrite { namespace: &collection })?;
        let data = parse_json("record data", data)?;
        let write = RecordWrite::Put { collection, id, data, expected_version };
        records::validate_write(&self.plane.collections, &write).map_err(guest_error)?;
        let current = match self.check_expected(write.collection(), write.id(), expected_version)? {
            Ok(current) => current,
            Err(conflict) => return Ok(conflict),
        };
        let entry = self.caller.allowed("records.put", format!("{}/{}", write.collection(), write.id()));
        let writer = self.record_writer();
        self.writes.record_write(write, &writer, current + 1, entry);
        Ok(WriteResult::Written(current + 1))
    }

    pub(super) fn record_delete(
        &mut self,
        collection: String,
        id: String,
        expected_version: Option<u64>,
    ) -> Result<WriteResult, GuestError> {
        self.gate.check(self.caller, Request::MemoryWrite { namespace: &collection })?;
        let write = RecordWrite::Delete { collection, id, expected_version };
        records::validate_write(&self.plane.collections, &write).map_err(guest_error)?;
        let current = match self.check_expected(write.collection(), write.id(), expected_version)? {
            Ok(current) => current,
            Err(conflict) => return Ok(conflict),
        };
        let entry = self.caller.allowed("records.delete", format!("{}/{}", write.collection(), write.id()));
        let writer = self.record_writer();
        self.writes.record_write(write, &writer, 0, entry);
        Ok(WriteResult::Written(current))
    }

    pub(super) fn record_query(&self, query: RecordQuery) -> Result<RecordPage, GuestError> {
        self.gate.check(self.caller, Request::MemoryRead { namespace: &query.collection })?;
        let conditions = query
            .conditions
            .into_iter()
            .map(|c| {
                let op = match c.op {
                    Comparison::Eq => Op::Eq,
                    Comparison::Lt => Op::Lt,
                    Comparison::Le => Op::Le,
                    Comparison::Gt => Op::Gt,
                    Comparison::Ge => Op::Ge,
                };
                Ok(Condition {
                    value: parse_json(&format!("the value for `{}`", c.field), &c.value)?,
                    field: c.field,
                    op,
                })
            })
            .collect::<Result<Vec<_>, GuestError>>()?;
        let limit = if query.limit == 0 { records::DEFAULT_QUERY_LIMIT } else { query.limit };
        let q = Query { collection: query.collection, conditions, limit, cursor: query.cursor };
        let owners = self.readable_owners(&q.collection);
        let page = records::query_visible(self.gate.store(), &self.plane.collections, &q, Visible::Owners(&owners))
            .map_err(guest_error)?;
        Ok(RecordPage { records: page.records.into_iter().map(to_wit).collect(), next_cursor: page.next_cursor })
    }
}
