//! Reindexing: re-embedding the notes whose vectors another embedder made,
//! after the workspace switched embedders (`keel memory reindex`).
//!
//! Until a note is re-embedded, recall leaves it out: vectors of two
//! embedders are never compared. Reindexing reads the stale notes from one
//! snapshot, embeds their texts in the embedder's background lane (a
//! foreground recall goes first), and commits [`REINDEX_CHUNK`] notes at a
//! time through the committer, each with an audit entry. A note forgotten
//! or rewritten meanwhile is left as it is. Every chunk is durable on its
//! own: an interrupted reindex keeps what it did, and the next run does the
//! rest.

use std::sync::{Arc, Mutex, PoisonError};

use redb::WriteTransaction;

use super::SemanticError;
use super::index::{Lane, SemanticIndex};
use super::storage::{self, StaleNote, StoredNote};
use crate::memory::Store;
use crate::memory::audit::AuditEntry;
use crate::memory::committer::{Batch, CustomMutation, Mutation};

/// Notes re-embedded per commit: enough that commits do not dominate,
/// few enough that progress moves and an interruption loses little.
pub const REINDEX_CHUNK: usize = 256;

/// What a reindex did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReindexReport {
    /// Notes found with another embedder's vectors.
    pub stale: usize,
    /// Notes re-embedded and committed.
    pub reembedded: usize,
    /// Notes forgotten or rewritten while the reindex ran, left alone.
    pub skipped: usize,
}

impl SemanticIndex {
    /// Re-embeds every note of `store` whose vector another embedder made,
    /// audited as `actor`; `progress(done, total)` is called before the
    /// first chunk and after each. Recall sees each chunk once committed.
    pub fn reindex(
        &self,
        store: &Store,
        actor: &str,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<ReindexReport, SemanticError> {
        let (id, dim) = (self.embedder().id().to_owned(), self.embedder().dim());
        let todo = storage::notes_to_reembed(store, &id, dim)?;
        let mut report = ReindexReport { stale: todo.len(), ..ReindexReport::default() };
        progress(0, todo.len());
        for (i, chunk) in todo.chunks(REINDEX_CHUNK).enumerate() {
            let texts: Vec<&str> = chunk.iter().map(|n| n.text.as_str()).collect();
            let vectors = self.embed(&texts, Lane::Background)?;
            let work: Arc<Vec<(StaleNote, Vec<f32>)>> = Arc::new(chunk.iter().cloned().zip(vectors).collect());
            let done: Arc<Mutex<Vec<(usize, StoredNote)>>> = Arc::default();
            let mutation = reembed_mutation(work.clone(), id.clone(), done.clone());
            let target = format!("{} notes to {id}", chunk.len());
            let audit = vec![AuditEntry::allowed(actor, "memory.reindex", target)];
            store.commit_blocking(Batch { mutations: vec![mutation], audit })?;
            let done = std::mem::take(&mut *done.lock().unwrap_or_else(PoisonError::into_inner));
            report.reembedded += done.len();
            report.skipped += chunk.len() - done.len();
            for (at, note) in done {
                let (stale, vector) = &work[at];
                self.note_committed(&stale.namespace, note, vector);
                self.stale_reembedded(&stale.namespace);
            }
            progress((i * REINDEX_CHUNK + chunk.len()).min(todo.len()), todo.len());
        }
        Ok(report)
    }
}

/// Writes each new vector whose note is unchanged; `done` gets the
/// positions in `work` and the notes as stored. Applying it again starts
/// `done` over.
fn reembed_mutation(
    work: Arc<Vec<(StaleNote, Vec<f32>)>>,
    embedder_id: String,
    done: Arc<Mutex<Vec<(usize, StoredNote)>>>,
) -> Mutation {
    let apply = Arc::new(move |txn: &WriteTransaction| {
        let mut out = Vec::with_capacity(work.len());
        for (at, (stale, vector)) in work.iter().enumerate() {
            if let Some(note) = storage::reembed_note(txn, stale, &embedder_id, vector)? {
                out.push((at, note));
            }
        }
        *done.lock().unwrap_or_else(PoisonError::into_inner) = out;
        Ok(())
    });
    Mutation::Custom(CustomMutation { label: "semantic.reindex", apply })
}
