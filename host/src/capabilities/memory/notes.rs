//! `remember`, `recall`, `recall-many`, `forget`.

use std::sync::Arc;

use super::{MemoryView, unavailable};
use crate::bindings::GuestError;
use crate::bindings::keel::plugin::memory::{Hit, Note, RecallRequest};
use crate::kernel::Request;
use crate::memory::audit::AuditEntry;
use crate::memory::now_ms;
use crate::memory::semantic::{self, MAX_RECALL_K, RecallFilter, RecallQuery, SemanticError};

fn guest_error(e: SemanticError) -> GuestError {
    match e {
        SemanticError::Store(e) => unavailable(e),
        other => GuestError::InvalidInput(other.to_string()),
    }
}

fn to_wit(hit: semantic::Hit) -> Hit {
    let note = Arc::unwrap_or_clone(hit.note);
    Hit {
        id: note.id,
        text: note.text,
        tags: note.tags,
        metadata: note.metadata.to_string(),
        score: hit.score,
        similarity: hit.similarity,
        created_at_ms: note.created_at_ms,
    }
}

impl MemoryView<'_> {
    pub(super) fn note_remember(&mut self, namespace: &str, note: Note) -> Result<String, GuestError> {
        self.gate.check(self.caller, Request::MemoryWrite { namespace })?;
        let metadata = match note.metadata.trim() {
            "" => serde_json::json!({}),
            text => serde_json::from_str(text)
                .map_err(|e| GuestError::InvalidInput(format!("note metadata is not valid JSON: {e}")))?,
        };
        if !metadata.is_object() {
            return Err(GuestError::InvalidInput("note metadata must be a JSON object".into()));
        }
        let prepared = self.plane.semantic.prepare(&note.text, note.tags, metadata, now_ms()).map_err(guest_error)?;
        let id = prepared.note.id.clone();
        let entry = AuditEntry::allowed(&self.caller.plugin, "memory.remember", format!("{namespace}/{id}"));
        self.writes.remember(namespace, prepared, entry);
        Ok(id)
    }

    pub(super) fn note_recall(&self, requests: Vec<RecallRequest>) -> Result<Vec<Vec<Hit>>, GuestError> {
        let mut queries = Vec::with_capacity(requests.len());
        for r in requests {
            self.gate.check(self.caller, Request::MemoryRead { namespace: &r.namespace })?;
            if r.k as usize > MAX_RECALL_K {
                return Err(GuestError::InvalidInput(format!("k = {} is over the maximum of {MAX_RECALL_K}", r.k)));
            }
            let half_life = self.plane.decay.half_life(&r.namespace);
            queries.push(RecallQuery {
                namespace: r.namespace,
                text: r.query,
                k: r.k as usize,
                filter: RecallFilter { tags: r.tags },
                half_life,
            });
        }
        let results = self.plane.semantic.recall_many(&queries, now_ms()).map_err(guest_error)?;
        Ok(results.into_iter().map(|hits| hits.into_iter().map(to_wit).collect()).collect())
    }

    pub(super) fn note_forget(&mut self, namespace: &str, id: &str) -> Result<bool, GuestError> {
        self.gate.check(self.caller, Request::MemoryWrite { namespace })?;
        let existed = self.writes.has_pending_note(namespace, id)
            || semantic::get_note(self.gate.store(), namespace, id).map_err(unavailable)?.is_some();
        let entry = AuditEntry::allowed(&self.caller.plugin, "memory.forget", format!("{namespace}/{id}"));
        self.writes.forget(namespace, id, entry);
        Ok(existed)
    }
}
