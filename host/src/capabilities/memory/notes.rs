//! `remember`, `recall`, `recall-many`, `forget`.

use std::sync::Arc;

use super::{MemoryView, unavailable};
use crate::bindings::GuestError;
use crate::bindings::keel::plugin::memory::{Hit, Note, RecallRequest};
use crate::kernel::Request;
use crate::memory::now_ms;
use crate::memory::semantic::{
    self, MAX_BATCH_NOTES, MAX_RECALL_K, NewNote, PreparedNote, RecallFilter, RecallQuery, SemanticError,
};

fn guest_error(e: SemanticError) -> GuestError {
    match e {
        SemanticError::Store(e) => unavailable(e),
        e @ SemanticError::EmbedderUnavailable { .. } => GuestError::Unavailable(e.to_string()),
        other => GuestError::InvalidInput(other.to_string()),
    }
}

/// A note's metadata: empty, or a JSON object.
fn note_metadata(text: &str) -> Result<serde_json::Value, GuestError> {
    let metadata = match text.trim() {
        "" => return Ok(serde_json::json!({})),
        text => serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| GuestError::InvalidInput(format!("note metadata is not valid JSON: {e}")))?,
    };
    if !metadata.is_object() {
        return Err(GuestError::InvalidInput("note metadata must be a JSON object".into()));
    }
    Ok(metadata)
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
        let metadata = note_metadata(&note.metadata)?;
        let prepared = self.plane.semantic.prepare(&note.text, note.tags, metadata, now_ms()).map_err(guest_error)?;
        Ok(self.stage_note(namespace, prepared))
    }

    /// Bulk writes: one embedder call in the background lane for all.
    pub(super) fn note_remember_many(&mut self, namespace: &str, notes: Vec<Note>) -> Result<Vec<String>, GuestError> {
        self.gate.check(self.caller, Request::MemoryWrite { namespace })?;
        if notes.len() > MAX_BATCH_NOTES {
            return Err(GuestError::InvalidInput(format!(
                "{} notes in one remember-many; at most {MAX_BATCH_NOTES}: split them",
                notes.len()
            )));
        }
        let new = notes
            .into_iter()
            .map(|n| Ok(NewNote { metadata: note_metadata(&n.metadata)?, text: n.text, tags: n.tags }))
            .collect::<Result<Vec<_>, GuestError>>()?;
        let prepared = self.plane.semantic.prepare_many(new, now_ms()).map_err(guest_error)?;
        Ok(prepared.into_iter().map(|p| self.stage_note(namespace, p)).collect())
    }

    /// Adds an embedded note, owned by the caller, to the call's writes;
    /// its id.
    fn stage_note(&mut self, namespace: &str, mut prepared: PreparedNote) -> String {
        prepared.note.owner = Some(self.caller.plugin.clone());
        let id = prepared.note.id.clone();
        let entry = self.caller.allowed("memory.remember", format!("{namespace}/{id}"));
        self.writes.remember(namespace, prepared, entry);
        id
    }

    pub(super) fn note_recall(&self, requests: Vec<RecallRequest>) -> Result<Vec<Vec<Hit>>, GuestError> {
        let mut queries = Vec::with_capacity(requests.len());
        for r in requests {
            self.gate.check(self.caller, Request::MemoryRead { namespace: &r.namespace })?;
            if r.k as usize > MAX_RECALL_K {
                return Err(GuestError::InvalidInput(format!("k = {} is over the maximum of {MAX_RECALL_K}", r.k)));
            }
            let half_life = self.plane.decay.half_life(&r.namespace);
            let owners = self.caller.grants.readable_owners(&self.caller.plugin, &r.namespace);
            queries.push(RecallQuery {
                namespace: r.namespace,
                text: r.query,
                k: r.k as usize,
                filter: RecallFilter { tags: r.tags, owners: Some(owners) },
                half_life,
            });
        }
        let results = self.plane.semantic.recall_many(&queries, now_ms()).map_err(guest_error)?;
        Ok(results.into_iter().map(|hits| hits.into_iter().map(to_wit).collect()).collect())
    }

    /// Forgets a note of the caller's, an unowned one, or one of a plugin
    /// its grant names in `write_from`; another plugin's note is refused
    /// and the refusal audited.
    pub(super) fn note_forget(&mut self, namespace: &str, id: &str) -> Result<bool, GuestError> {
        self.gate.check(self.caller, Request::MemoryWrite { namespace })?;
        let existed = self.writes.has_pending_note(namespace, id) || {
            let stored = semantic::get_note(self.gate.store(), namespace, id).map_err(unavailable)?;
            if let Some(owner) = stored.as_ref().and_then(|n| n.owner.as_deref()) {
                let item = format!("{namespace}/{id}");
                self.gate.check(self.caller, Request::ChangeOwned { namespace, item: &item, owner })?;
            }
            stored.is_some()
        };
        let entry = self.caller.allowed("memory.forget", format!("{namespace}/{id}"));
        self.writes.forget(namespace, id, entry);
        Ok(existed)
    }
}
