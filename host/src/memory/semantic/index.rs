//! [`SemanticIndex`]: the semantic store's API over its in-memory side.
//!
//! It validates and embeds notes and queries, writes through the store's
//! committer, and routes each recall to the namespace it names. What a
//! namespace holds and how it changes is in [`namespace`](super::namespace),
//! how it answers a query in [`recall`](super::recall), and the thread that
//! builds its graph in [`worker`](super::worker).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::WriteTransaction;

use super::embed::Embedder;
use super::namespace::{Entry, Event, Namespace, State, lock, read, write};
use super::recall::Query;
use super::storage::{self, StoredNote};
use super::vector::{self, HnswParams};
use super::worker::{Job, run_worker};
use super::{
    EXACT_THRESHOLD, MAX_BATCH_QUERIES, MAX_METADATA_BYTES, MAX_QUERY_BYTES, MAX_RECALL_K, MAX_TAG_BYTES, MAX_TAGS,
    MAX_TEXT_BYTES, SemanticError,
};
use crate::memory::audit::AuditEntry;
use crate::memory::committer::{Batch, CustomMutation, Mutation};
use crate::memory::{Store, now_ms};

/// How the in-memory index is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexParams {
    /// Namespaces with fewer live notes are searched exactly. A namespace
    /// with a graph drops it again below half of this.
    pub exact_threshold: usize,
    pub hnsw: HnswParams,
}

impl Default for IndexParams {
    fn default() -> Self {
        IndexParams { exact_threshold: EXACT_THRESHOLD, hnsw: HnswParams::default() }
    }
}

impl IndexParams {
    pub fn validate(&self) -> Result<(), SemanticError> {
        if self.exact_threshold == 0 {
            let expected = "at least 1";
            return Err(SemanticError::InvalidParams { name: "exact_threshold", value: 0, expected });
        }
        self.hnsw.validate()
    }
}

/// Which notes a recall may return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecallFilter {
    /// A hit must carry every one of these tags.
    pub tags: Vec<String>,
    /// `Some`: a hit must be unowned or owned by one of these plugins (a
    /// plugin's recall: itself and those its grant names); `None`: any
    /// note (the operator).
    pub owners: Option<Vec<String>>,
}

/// One query of a [`SemanticIndex::recall_many`] batch.
#[derive(Debug, Clone, PartialEq)]
pub struct RecallQuery {
    pub namespace: String,
    pub text: String,
    /// Most hits to return, at most [`MAX_RECALL_K`].
    pub k: usize,
    pub filter: RecallFilter,
    /// `None`: no time decay. See [`DecayConfig`](super::DecayConfig).
    pub half_life: Option<Duration>,
}

/// One recalled note.
#[derive(Debug, Clone)]
pub struct Hit {
    pub note: Arc<StoredNote>,
    /// What hits are ranked by: `max(similarity, 0) * 0.5^(age / half_life)`.
    pub score: f32,
    /// Cosine similarity of query and note, in [-1, 1].
    pub similarity: f32,
}

/// A note to write with [`SemanticIndex::prepare_many`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewNote {
    pub text: String,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
}

pub(super) use super::embed::Lane;

/// A validated, embedded note, ready for [`storage::insert_note`] and then
/// [`SemanticIndex::note_committed`].
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedNote {
    pub note: StoredNote,
    pub vector: Vec<f32>,
}

/// What the index holds for one namespace, for `keel` status and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NamespaceStats {
    /// Live notes taken in from the inbox.
    pub notes: usize,
    /// Inbox events (notes committed or forgotten) not taken in yet.
    pub queued: usize,
    /// Slots covered by the hnsw graph; `None` while searched exactly.
    pub graph_slots: Option<usize>,
    /// Slots waiting to be added to the graph (scanned exactly meanwhile).
    pub pending: usize,
}

/// The semantic index of one workspace. Share it (`Arc`): every method
/// takes `&self`.
pub struct SemanticIndex {
    embedder: Arc<dyn Embedder>,
    params: IndexParams,
    /// Notes per namespace whose vectors another embedder made, counted at
    /// load and lowered by [`SemanticIndex::reindex`].
    stale: Mutex<BTreeMap<String, usize>>,
    namespaces: RwLock<HashMap<String, Arc<Namespace>>>,
    /// To the index thread; dropping it stops the thread after its current
    /// step (a graph build in progress finishes first, unobserved).
    jobs: Sender<Job>,
}

impl std::fmt::Debug for SemanticIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemanticIndex").field("embedder", &self.embedder.id()).field("params", &self.params).finish()
    }
}

impl SemanticIndex {
    /// Rebuilds the index from the notes in `store`, with default params.
    pub fn load(store: &Store, embedder: Arc<dyn Embedder>) -> Result<SemanticIndex, SemanticError> {
        SemanticIndex::load_with(store, embedder, IndexParams::default())
    }

    /// Rebuilds the index from the notes in `store`. Notes of another
    /// embedder are skipped (and counted in a warning). Graphs for large
    /// namespaces are built in the background; until then those namespaces
    /// are searched exactly, so results are right from the start, only slower.
    pub fn load_with(
        store: &Store,
        embedder: Arc<dyn Embedder>,
        params: IndexParams,
    ) -> Result<SemanticIndex, SemanticError> {
        params.validate()?;
        let started = Instant::now();
        let mut states: BTreeMap<String, State> = BTreeMap::new();
        let mut foreign: BTreeMap<String, usize> = BTreeMap::new();
        let dim = embedder.dim();
        storage::for_each_note(store, |namespace, note, vector| {
            if !Entry::is_from(&*embedder, &note, &vector) {
                *foreign.entry(namespace.to_owned()).or_default() += 1;
                return;
            }
            if !states.contains_key(namespace) {
                states.insert(namespace.to_owned(), State::new(dim));
            }
            let entry = Entry::new(note, &vector);
            states.get_mut(namespace).expect("just inserted").add(entry.note, &entry.vector);
        })?;
        if !foreign.is_empty() {
            let notes: usize = foreign.values().sum();
            let namespaces: Vec<&str> = foreign.keys().map(String::as_str).collect();
            tracing::warn!(
                "{notes} notes (in {}) were embedded by another embedder than {} and are left out of recall \
                 until `keel memory reindex` re-embeds them",
                namespaces.join(", "),
                embedder.id()
            );
        }
        let (jobs, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("keel-semantic-index".into())
            .spawn(move || run_worker(rx, params))
            .map_err(SemanticError::Thread)?;
        let notes: usize = states.values().map(|s| s.live).sum();
        let namespaces: HashMap<String, Arc<Namespace>> =
            states.into_iter().map(|(name, state)| (name.clone(), Arc::new(Namespace::new(name, state)))).collect();
        let stale = Mutex::new(foreign);
        let index = SemanticIndex { embedder, params, stale, namespaces: RwLock::new(namespaces), jobs };
        for ns in read(&index.namespaces).values() {
            if ns.live() >= params.exact_threshold {
                index.wake(ns);
            }
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(notes, elapsed_ms, embedder = index.embedder.id(), "semantic index loaded");
        Ok(index)
    }

    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    pub fn params(&self) -> &IndexParams {
        &self.params
    }

    /// Validates and embeds a note created at `now_ms`; tags are sorted and
    /// deduplicated. Nothing is written.
    pub fn prepare(
        &self,
        text: &str,
        tags: Vec<String>,
        metadata: serde_json::Value,
        now_ms: u64,
    ) -> Result<PreparedNote, SemanticError> {
        let tags = check_note(text, tags, &metadata)?;
        let vector = self.embed(&[text], Lane::Foreground)?.pop().expect("one vector per text, checked");
        let note = StoredNote {
            id: storage::new_note_id(now_ms),
            text: text.to_owned(),
            tags,
            metadata,
            created_at_ms: now_ms,
            embedder: self.embedder.id().to_owned(),
            owner: None,
        };
        Ok(PreparedNote { note, vector })
    }

    /// Validates and embeds many notes created at `now_ms`, for bulk writes
    /// nobody is waiting on: embedded in batches, in the embedder's
    /// background lane (foreground recalls go first). Nothing is written.
    pub fn prepare_many(&self, notes: Vec<NewNote>, now_ms: u64) -> Result<Vec<PreparedNote>, SemanticError> {
        let mut checked = Vec::with_capacity(notes.len());
        for n in notes {
            let tags = check_note(&n.text, n.tags, &n.metadata)?;
            checked.push(NewNote { tags, ..n });
        }
        let texts: Vec<&str> = checked.iter().map(|n| n.text.as_str()).collect();
        let vectors = self.embed(&texts, Lane::Background)?;
        Ok(checked
            .into_iter()
            .zip(vectors)
            .map(|(n, vector)| PreparedNote {
                note: StoredNote {
                    id: storage::new_note_id(now_ms),
                    text: n.text,
                    tags: n.tags,
                    metadata: n.metadata,
                    created_at_ms: now_ms,
                    embedder: self.embedder.id().to_owned(),
                    owner: None,
                },
                vector,
            })
            .collect())
    }

    /// Notes per namespace left out of recall because another embedder
    /// made their vectors (as found at load, less those reindexed since).
    pub fn stale_notes(&self) -> BTreeMap<String, usize> {
        self.stale.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(super) fn stale_reembedded(&self, namespace: &str) {
        let mut stale = self.stale.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = stale.get_mut(namespace) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                stale.remove(namespace);
            }
        }
    }

    /// Embeds and stores a note created now in `namespace`, with its audit
    /// entry, through the store's committer; then indexes it.
    pub fn remember(
        &self,
        store: &Store,
        namespace: &str,
        text: &str,
        tags: Vec<String>,
        metadata: serde_json::Value,
        entry: AuditEntry,
    ) -> Result<StoredNote, SemanticError> {
        let prepared = self.prepare(text, tags, metadata, now_ms())?;
        let note = prepared.note.clone();
        self.commit_notes(store, namespace, vec![prepared], entry)?;
        Ok(note)
    }

    /// Stores prepared notes in `namespace` with one audit entry through
    /// the store's committer, waits for the commit, then indexes them. For
    /// a write that is part of a larger batch, put [`insert_mutation`]'s
    /// mutation into that batch and call [`SemanticIndex::note_committed`]
    /// after it commits.
    pub fn commit_notes(
        &self,
        store: &Store,
        namespace: &str,
        notes: Vec<PreparedNote>,
        entry: AuditEntry,
    ) -> Result<(), SemanticError> {
        let notes = Arc::new(notes);
        let batch = Batch { mutations: vec![insert_mutation(namespace, notes.clone())], audit: vec![entry] };
        store.commit_blocking(batch)?;
        for p in notes.iter() {
            self.note_committed(namespace, p.note.clone(), &p.vector);
        }
        Ok(())
    }

    /// Deletes note `id` of `namespace` with its audit entry through the
    /// store's committer, then drops it from the index; returns whether the
    /// note existed.
    pub fn forget(&self, store: &Store, namespace: &str, id: &str, entry: AuditEntry) -> Result<bool, SemanticError> {
        let existed = Arc::new(AtomicBool::new(false));
        let (ns, note_id, flag) = (namespace.to_owned(), id.to_owned(), existed.clone());
        let apply = Arc::new(move |txn: &WriteTransaction| {
            flag.store(storage::delete_note(txn, &ns, &note_id)?, AtomicOrdering::SeqCst);
            Ok(())
        });
        let forget = Mutation::Custom(CustomMutation { label: "semantic.forget", apply });
        store.commit_blocking(Batch { mutations: vec![forget], audit: vec![entry] })?;
        self.note_forgotten(namespace, id);
        Ok(existed.load(AtomicOrdering::SeqCst))
    }

    /// Feeds a note whose commit succeeded; call it in commit order (the
    /// committer's thread does). Cheap: the note is queued and the index
    /// thread takes it in; recall sees it at once. A note of another
    /// embedder (or with a malformed vector) is not recalled, and hides an
    /// earlier note with the same id.
    pub fn note_committed(&self, namespace: &str, note: StoredNote, vector: &[f32]) {
        let event = if Entry::is_from(&*self.embedder, &note, vector) {
            Event::Add(Arc::new(Entry::new(note, vector)))
        } else {
            tracing::debug!(namespace, id = note.id, embedder = note.embedder, "note of another embedder not indexed");
            Event::Forget(note.id)
        };
        let ns = self.namespace_or_create(namespace);
        lock(&ns.inbox).push(event);
        self.wake(&ns);
    }

    /// Drops a note whose deletion was committed; in commit order, as
    /// [`SemanticIndex::note_committed`].
    pub fn note_forgotten(&self, namespace: &str, id: &str) {
        if let Some(ns) = self.namespace(namespace) {
            lock(&ns.inbox).push(Event::Forget(id.to_owned()));
            self.wake(&ns);
        }
    }

    /// The `k` best notes of `namespace` for `query_text` at time `now_ms`,
    /// best first; see the module docs for the score.
    pub fn recall(
        &self,
        namespace: &str,
        query_text: &str,
        k: usize,
        filter: &RecallFilter,
        now_ms: u64,
        half_life: Option<Duration>,
    ) -> Result<Vec<Hit>, SemanticError> {
        let owners = filter.owners.as_deref();
        let query = QueryRef { namespace, text: query_text, k, tags: &filter.tags, owners, half_life };
        Ok(self.recall_refs(&[query], now_ms)?.pop().unwrap_or_default())
    }

    /// Many recalls in one pass: one embedder call for all texts, one read
    /// lock per namespace, and one scan of each namespace's exactly-searched
    /// notes that scores every query at once. Hits come back per query, in
    /// order.
    pub fn recall_many(&self, queries: &[RecallQuery], now_ms: u64) -> Result<Vec<Vec<Hit>>, SemanticError> {
        let refs: Vec<QueryRef<'_>> = queries
            .iter()
            .map(|q| QueryRef {
                namespace: &q.namespace,
                text: &q.text,
                k: q.k,
                tags: &q.filter.tags,
                owners: q.filter.owners.as_deref(),
                half_life: q.half_life,
            })
            .collect();
        self.recall_refs(&refs, now_ms)
    }

    /// Blocks until the index thread has taken in everything fed so far and
    /// finished the graphs it owes (tests, benchmarks, orderly shutdown).
    pub fn wait_indexed(&self) {
        let (ack, done) = mpsc::channel();
        if self.jobs.send(Job::Flush(ack)).is_ok() {
            let _ = done.recv();
        }
    }

    /// What the index holds for `namespace`.
    pub fn stats(&self, namespace: &str) -> NamespaceStats {
        let Some(ns) = self.namespace(namespace) else { return NamespaceStats::default() };
        let s = read(&ns.state);
        let queued = lock(&ns.inbox).len();
        let pending = if s.ann.is_some() { s.notes.len() - s.indexed } else { 0 };
        NamespaceStats { notes: s.live, queued, graph_slots: s.ann.as_ref().map(|_| s.indexed), pending }
    }

    fn recall_refs(&self, queries: &[QueryRef<'_>], now_ms: u64) -> Result<Vec<Vec<Hit>>, SemanticError> {
        if queries.len() > MAX_BATCH_QUERIES {
            return Err(SemanticError::TooManyQueries { count: queries.len() });
        }
        for q in queries {
            if q.k > MAX_RECALL_K {
                return Err(SemanticError::TooManyHits { k: q.k });
            }
            check_size("query text", q.text.len(), MAX_QUERY_BYTES, "query with the gist, not the whole document")?;
            check_tags(q.tags.to_vec())?;
            if let Some(h) = q.half_life.filter(|h| h.is_zero()) {
                return Err(SemanticError::InvalidHalfLife { what: "of the query".into(), value: h.as_secs_f64() });
            }
        }
        let texts: Vec<&str> = queries.iter().map(|q| q.text).collect();
        let vectors = self.embed(&texts, Lane::Foreground)?;
        let prepared: Vec<Query<'_>> = queries
            .iter()
            .zip(vectors)
            .map(|(q, v)| Query {
                vector: vector::to_index_vector(&v),
                k: q.k,
                tags: q.tags,
                owners: q.owners,
                half_life_ms: q.half_life.map(|h| h.as_secs_f64() * 1000.0),
                now_ms,
            })
            .collect();
        let mut by_namespace: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, q) in queries.iter().enumerate() {
            by_namespace.entry(q.namespace).or_default().push(i);
        }
        let mut out = vec![Vec::new(); queries.len()];
        for (namespace, positions) in by_namespace {
            let Some(ns) = self.namespace(namespace) else { continue };
            let batch: Vec<&Query<'_>> = positions.iter().map(|i| &prepared[*i]).collect();
            for (i, hits) in positions.into_iter().zip(ns.recall(&batch, &self.params)) {
                out[i] = hits;
            }
        }
        Ok(out)
    }

    /// Embeds `texts` in `lane`, refusing output that breaks the
    /// [`Embedder`] contract.
    pub(super) fn embed(&self, texts: &[&str], lane: Lane) -> Result<Vec<Vec<f32>>, SemanticError> {
        let (id, dim) = (self.embedder.id(), self.embedder.dim());
        let vectors = self
            .embedder
            .try_embed(texts, lane)
            .map_err(|reason| SemanticError::EmbedderUnavailable { id: id.to_owned(), reason })?;
        let detail = if vectors.len() != texts.len() {
            Some(format!("it returned {} vectors for {} texts", vectors.len(), texts.len()))
        } else if let Some(v) = vectors.iter().find(|v| v.len() != dim) {
            Some(format!("it returned a vector of {} numbers", v.len()))
        } else if vectors.iter().any(|v| v.iter().any(|x| !x.is_finite())) {
            Some("it returned a vector with NaN or infinite numbers".to_owned())
        } else {
            None
        };
        match detail {
            Some(detail) => Err(SemanticError::Embedder { id: id.to_owned(), dim, detail }),
            None => Ok(vectors),
        }
    }

    fn namespace(&self, namespace: &str) -> Option<Arc<Namespace>> {
        read(&self.namespaces).get(namespace).cloned()
    }

    fn namespace_or_create(&self, namespace: &str) -> Arc<Namespace> {
        if let Some(ns) = self.namespace(namespace) {
            return ns;
        }
        let mut map = write(&self.namespaces);
        map.entry(namespace.to_owned())
            .or_insert_with(|| Arc::new(Namespace::new(namespace.to_owned(), State::new(self.embedder.dim()))))
            .clone()
    }

    /// Hands `ns` to the index thread unless it is already scheduled.
    fn wake(&self, ns: &Arc<Namespace>) {
        if !ns.scheduled.swap(true, AtomicOrdering::SeqCst) {
            // A send fails only if the thread is gone; recall stays right
            // without it (everything is scanned exactly), only slower.
            let _ = self.jobs.send(Job::Work(ns.clone()));
        }
    }
}

/// The committer mutation that writes `notes` into `namespace` (see
/// [`storage::insert_note`]). Applying it twice writes the same rows.
pub fn insert_mutation(namespace: &str, notes: Arc<Vec<PreparedNote>>) -> Mutation {
    let namespace = namespace.to_owned();
    let apply = Arc::new(move |txn: &WriteTransaction| {
        notes.iter().try_for_each(|p| storage::insert_note(txn, &namespace, &p.note, &p.vector))
    });
    Mutation::Custom(CustomMutation { label: "semantic.remember", apply })
}

/// Checks a note's text, tags and metadata; returns the tags sorted and
/// deduplicated.
fn check_note(text: &str, tags: Vec<String>, metadata: &serde_json::Value) -> Result<Vec<String>, SemanticError> {
    if text.trim().is_empty() {
        return Err(SemanticError::EmptyText);
    }
    check_size("note text", text.len(), MAX_TEXT_BYTES, "split it into notes that each say one thing")?;
    let tags = check_tags(tags)?;
    let metadata_len = serde_json::to_string(metadata).map_or(usize::MAX, |s| s.len());
    check_size("note metadata", metadata_len, MAX_METADATA_BYTES, "keep large data elsewhere and store a reference")?;
    Ok(tags)
}

fn check_size(what: &'static str, bytes: usize, max: usize, advice: &'static str) -> Result<(), SemanticError> {
    if bytes > max {
        return Err(SemanticError::TooLarge { what, bytes, max, advice });
    }
    Ok(())
}

/// Checks tags and returns them sorted and deduplicated.
fn check_tags(mut tags: Vec<String>) -> Result<Vec<String>, SemanticError> {
    if tags.len() > MAX_TAGS {
        return Err(SemanticError::TooManyTags { count: tags.len() });
    }
    if let Some(bad) = tags.iter().find(|t| t.is_empty() || t.len() > MAX_TAG_BYTES || t.trim() != t.as_str()) {
        return Err(SemanticError::InvalidTag { tag: bad.clone() });
    }
    tags.sort_unstable();
    tags.dedup();
    Ok(tags)
}

/// A query as the caller gave it.
struct QueryRef<'a> {
    namespace: &'a str,
    text: &'a str,
    k: usize,
    tags: &'a [String],
    owners: Option<&'a [String]>,
    half_life: Option<Duration>,
}

const _: () = {
    const fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<SemanticIndex>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::semantic::HashedEmbedder;
    use crate::memory::semantic::testing::{Seeds, params, texts};

    #[test]
    fn a_namespace_grows_into_a_graph_and_shrinks_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("keel.redb")).unwrap();
        let index = SemanticIndex::load_with(&store, Arc::new(Seeds), params(40)).unwrap();
        let notes: Vec<PreparedNote> =
            (0..60).map(|i| index.prepare(&format!("v{i}"), vec![], serde_json::Value::Null, i).unwrap()).collect();
        let ids: Vec<String> = notes.iter().map(|p| p.note.id.clone()).collect();
        index.commit_notes(&store, "ns", notes, AuditEntry::allowed("t", "semantic.remember", "ns")).unwrap();
        index.wait_indexed();
        assert_eq!(index.stats("ns"), NamespaceStats { notes: 60, queued: 0, graph_slots: Some(60), pending: 0 });
        for id in &ids[..45] {
            index.forget(&store, "ns", id, AuditEntry::allowed("t", "semantic.forget", "ns")).unwrap();
        }
        index.wait_indexed();
        assert_eq!(index.stats("ns"), NamespaceStats { notes: 15, queued: 0, graph_slots: None, pending: 0 });
        let hits = index.recall("ns", "v50", 1, &RecallFilter::default(), 100, None).unwrap();
        assert_eq!(texts(&hits), ["v50"]);
        assert!(index.recall("ns", "v10", 20, &RecallFilter::default(), 100, None).unwrap().len() == 15);
    }

    #[test]
    fn a_graph_is_laid_out_afresh_when_built_and_when_grown_by_a_quarter() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("keel.redb")).unwrap();
        let index = SemanticIndex::load_with(&store, Arc::new(Seeds), params(40)).unwrap();
        let graph = || {
            let ns = index.namespace("ns").unwrap();
            let s = read(&ns.state);
            (s.ann.clone().unwrap(), s.indexed, s.laid_out)
        };
        let add = |from: u64, to: u64| {
            let notes: Vec<PreparedNote> = (from..to)
                .map(|i| index.prepare(&format!("v{i}"), vec![], serde_json::Value::Null, i).unwrap())
                .collect();
            index.commit_notes(&store, "ns", notes, AuditEntry::allowed("t", "semantic.remember", "ns")).unwrap();
            index.wait_indexed();
        };
        add(0, 60);
        let (built, indexed, laid_out) = graph();
        assert_eq!((indexed, laid_out, built.len()), (60, 60, 60));
        // A sixth more: added to the same graph.
        add(60, 70);
        let (extended, indexed, laid_out) = graph();
        assert!(Arc::ptr_eq(&built, &extended));
        assert_eq!((indexed, laid_out), (70, 60));
        // Over a quarter more than at the last layout: a fresh copy.
        add(70, 80);
        let (relaid, indexed, laid_out) = graph();
        assert!(!Arc::ptr_eq(&built, &relaid));
        assert_eq!((indexed, laid_out, relaid.len()), (80, 80, 80));
        for i in [0, 65, 79] {
            let hits = index.recall("ns", &format!("v{i}"), 1, &RecallFilter::default(), 100, None).unwrap();
            assert_eq!(texts(&hits), [format!("v{i}")]);
        }
    }

    #[test]
    fn inputs_over_the_limits_are_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("keel.redb")).unwrap();
        let index = SemanticIndex::load(&store, Arc::new(HashedEmbedder)).unwrap();
        let null = serde_json::Value::Null;
        let err = |r: Result<PreparedNote, SemanticError>| r.unwrap_err().to_string();
        assert!(err(index.prepare("  ", vec![], null.clone(), 0)).contains("give the note some words"));
        let long = "a".repeat(MAX_TEXT_BYTES + 1);
        assert!(err(index.prepare(&long, vec![], null.clone(), 0)).contains("split it into notes"));
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| i.to_string()).collect();
        assert!(err(index.prepare("x", many, null.clone(), 0)).contains("at most 32 are allowed"));
        assert!(err(index.prepare("x", vec![" padded".into()], null.clone(), 0)).contains("tag ` padded` is invalid"));
        let big = serde_json::json!("m".repeat(MAX_METADATA_BYTES));
        assert!(err(index.prepare("x", vec![], big, 0)).contains("store a reference"));
        let ok = index.prepare("x", vec!["b".into(), "a".into(), "b".into()], null, 0).unwrap();
        assert_eq!(ok.note.tags, ["a", "b"]);

        let filter = RecallFilter::default();
        let e = index.recall("ns", "x", MAX_RECALL_K + 1, &filter, 0, None).unwrap_err();
        assert!(matches!(e, SemanticError::TooManyHits { .. }), "{e}");
        let e = index.recall("ns", "x", 1, &filter, 0, Some(Duration::ZERO)).unwrap_err();
        assert!(matches!(e, SemanticError::InvalidHalfLife { .. }), "{e}");
        assert!(index.recall("unknown", "x", 5, &filter, 0, None).unwrap().is_empty());
        assert!(index.recall("ns", "x", 0, &filter, 0, None).unwrap().is_empty());
    }

    #[test]
    fn an_embedder_that_breaks_its_contract_is_named() {
        struct Broken;
        impl Embedder for Broken {
            fn id(&self) -> &str {
                "broken"
            }
            fn dim(&self) -> usize {
                4
            }
            fn embed(&self, texts: &[&str]) -> Vec<Vec<f32>> {
                texts.iter().map(|_| vec![f32::NAN; 4]).collect()
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("keel.redb")).unwrap();
        let index = SemanticIndex::load(&store, Arc::new(Broken)).unwrap();
        let e = index.prepare("x", vec![], serde_json::Value::Null, 0).unwrap_err();
        assert!(e.to_string().contains("embedder `broken` misbehaved: it returned a vector with NaN"), "{e}");
    }
}
