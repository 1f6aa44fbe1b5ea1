//! The in-memory side of the semantic store, derived from redb.
//!
//! Each namespace keeps its notes (text, tags, vector) in memory, in slots;
//! from [`IndexParams::exact_threshold`] live notes on, an hnsw graph over
//! the slots serves searches, below it an exact scan does.
//!
//! Writes never wait for the graph. [`SemanticIndex::note_committed`] only
//! appends to the namespace's inbox (a short mutex) and wakes the index
//! thread. That thread is the only one that changes a namespace's state: it
//! moves inbox events into slots, builds a graph while recalls go on
//! against the current state and then swaps it in, and adds new slots to
//! the graph in small chunks. A recall holds the state's read lock and sees
//! three parts: slots in the graph (searched), slots not yet in it, and
//! inbox events (both scanned exactly), so a committed note is found from
//! the moment `note_committed` returns.
//!
//! hnsw_rs cannot delete: forgotten notes become empty slots the searches
//! skip, and the graph is rebuilt once empty slots outnumber a quarter of
//! the live notes.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use redb::WriteTransaction;

use super::embed::Embedder;
use super::storage::{self, StoredNote};
use super::vector::{self, AnnIndex, HnswParams, TopK};
use super::{
    EXACT_THRESHOLD, MAX_BATCH_QUERIES, MAX_METADATA_BYTES, MAX_QUERY_BYTES, MAX_RECALL_K, MAX_TAG_BYTES, MAX_TAGS,
    MAX_TEXT_BYTES, SemanticError,
};
use crate::memory::audit::AuditEntry;
use crate::memory::committer::{Batch, CustomMutation, Mutation};
use crate::memory::{Store, now_ms};

/// Slots the index thread adds to a graph per step: small enough that
/// other namespaces and flushes are not kept waiting behind a big backlog.
const INDEX_CHUNK: usize = 256;
/// A graph is rebuilt when its empty slots exceed live notes divided by
/// this: searches would otherwise spend a quarter of their work on the dead.
const DEAD_SHARE_DIVISOR: usize = 4;
/// A namespace without a graph compacts its slots once this many are empty
/// (and at least as many as live ones).
const MIN_DEAD_TO_COMPACT: usize = 64;

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
        for (namespace, notes) in foreign {
            tracing::warn!(
                namespace,
                notes,
                embedder = embedder.id(),
                "notes embedded by another embedder are left out of recall until they are reindexed (not built yet)"
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
        let index = SemanticIndex { embedder, params, namespaces: RwLock::new(namespaces), jobs };
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
        if text.trim().is_empty() {
            return Err(SemanticError::EmptyText);
        }
        check_size("note text", text.len(), MAX_TEXT_BYTES, "split it into notes that each say one thing")?;
        let tags = check_tags(tags)?;
        let metadata_len = serde_json::to_string(&metadata).map_or(usize::MAX, |s| s.len());
        check_size(
            "note metadata",
            metadata_len,
            MAX_METADATA_BYTES,
            "keep large data elsewhere and store a reference",
        )?;
        let vector = self.embed(&[text])?.pop().expect("one vector per text, checked");
        let note = StoredNote {
            id: storage::new_note_id(now_ms),
            text: text.to_owned(),
            tags,
            metadata,
            created_at_ms: now_ms,
            embedder: self.embedder.id().to_owned(),
        };
        Ok(PreparedNote { note, vector })
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
        let query = QueryRef { namespace, text: query_text, k, tags: &filter.tags, half_life };
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
        let vectors = self.embed(&texts)?;
        let prepared: Vec<Query<'_>> = queries
            .iter()
            .zip(vectors)
            .map(|(q, v)| Query {
                vector: vector::to_index_vector(&v),
                k: q.k,
                tags: q.tags,
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

    /// Embeds `texts`, refusing output that breaks the [`Embedder`] contract.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, SemanticError> {
        let (id, dim) = (self.embedder.id(), self.embedder.dim());
        let vectors = self.embedder.embed(texts);
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
    half_life: Option<Duration>,
}

/// A query ready to score notes.
struct Query<'a> {
    vector: Box<[f32]>,
    k: usize,
    tags: &'a [String],
    half_life_ms: Option<f64>,
    now_ms: u64,
}

impl Query<'_> {
    fn accepts(&self, note: &StoredNote) -> bool {
        self.tags.iter().all(|t| note.tags.contains(t))
    }

    /// `max(similarity, 0) * 0.5^(age / half_life)`.
    fn score(&self, similarity: f32, created_at_ms: u64) -> f32 {
        let base = similarity.max(0.0);
        match self.half_life_ms {
            None => base,
            Some(half_life_ms) => {
                let age_ms = self.now_ms.saturating_sub(created_at_ms) as f64;
                base * (-age_ms / half_life_ms).exp2() as f32
            }
        }
    }
}

/// A note with its vector, on its way into a namespace's state.
struct Entry {
    note: Arc<StoredNote>,
    /// The stored vector scaled by [`vector::to_index_vector`].
    vector: Box<[f32]>,
}

impl Entry {
    fn new(note: StoredNote, vector: &[f32]) -> Entry {
        Entry { note: Arc::new(note), vector: vector::to_index_vector(vector) }
    }

    /// Whether `embedder` made `vector`: same id, same length, no NaNs.
    fn is_from(embedder: &dyn Embedder, note: &StoredNote, vector: &[f32]) -> bool {
        note.embedder == embedder.id() && vector.len() == embedder.dim() && vector.iter().all(|x| x.is_finite())
    }
}

/// A change committed to redb but not yet taken into a namespace's state.
enum Event {
    Add(Arc<Entry>),
    Forget(String),
}

impl Event {
    fn id(&self) -> &str {
        match self {
            Event::Add(e) => &e.note.id,
            Event::Forget(id) => id,
        }
    }
}

/// The notes of one namespace that the index thread has taken in.
struct State {
    dim: usize,
    /// Per slot; `None`: forgotten. Graph ids are slot numbers.
    notes: Vec<Option<Arc<StoredNote>>>,
    /// Per slot, `dim` floats each, back to back: exact scans stream
    /// through memory instead of chasing a pointer per note.
    vectors: Vec<f32>,
    /// Per slot, the note's creation time: decay needs it for every scanned
    /// note, and here it costs no pointer chase.
    created: Vec<u64>,
    by_id: HashMap<String, usize>,
    /// Slots per tag (including forgotten ones), so a selective tag filter
    /// scans only its notes instead of searching the graph.
    by_tag: HashMap<String, Vec<usize>>,
    live: usize,
    ann: Option<Arc<AnnIndex>>,
    /// Slots `0..indexed` are in `ann`; later ones are scanned exactly.
    indexed: usize,
}

impl State {
    fn new(dim: usize) -> State {
        State {
            dim,
            notes: Vec::new(),
            vectors: Vec::new(),
            created: Vec::new(),
            by_id: HashMap::new(),
            by_tag: HashMap::new(),
            live: 0,
            ann: None,
            indexed: 0,
        }
    }

    fn add(&mut self, note: Arc<StoredNote>, vector: &[f32]) {
        debug_assert_eq!(vector.len(), self.dim);
        self.forget(&note.id);
        let slot = self.notes.len();
        for tag in &note.tags {
            match self.by_tag.get_mut(tag) {
                Some(slots) => slots.push(slot),
                None => {
                    self.by_tag.insert(tag.clone(), vec![slot]);
                }
            }
        }
        self.by_id.insert(note.id.clone(), slot);
        self.created.push(note.created_at_ms);
        self.notes.push(Some(note));
        self.vectors.extend_from_slice(vector);
        self.live += 1;
    }

    fn forget(&mut self, id: &str) {
        if let Some(slot) = self.by_id.remove(id) {
            self.notes[slot] = None;
            self.live -= 1;
        }
    }

    /// Slot `slot`, unless forgotten.
    fn row(&self, slot: usize) -> Option<Row<'_>> {
        let note = self.notes[slot].as_ref()?;
        Some(Row {
            note,
            vector: &self.vectors[slot * self.dim..(slot + 1) * self.dim],
            created_at_ms: self.created[slot],
        })
    }

    fn dead(&self) -> usize {
        self.notes.len() - self.live
    }

    /// Live notes with their vectors, in slot order.
    fn live(&self) -> impl Iterator<Item = Row<'_>> {
        self.slots(0..self.notes.len())
    }

    /// Slots `slots`, skipping forgotten ones.
    fn slots(&self, slots: std::ops::Range<usize>) -> impl Iterator<Item = Row<'_>> {
        let vectors = self.vectors[slots.start * self.dim..slots.end * self.dim].chunks_exact(self.dim);
        let rows = self.notes[slots.clone()].iter().zip(vectors).zip(&self.created[slots]);
        rows.filter_map(|((note, vector), created)| Some(Row { note: note.as_ref()?, vector, created_at_ms: *created }))
    }

    /// The same live notes in fresh slots (in the same order), no graph.
    fn compacted(&self) -> State {
        let mut next = State::new(self.dim);
        for row in self.live() {
            next.add(row.note.clone(), row.vector);
        }
        next
    }
}

/// What the index thread does next for a namespace.
enum Plan {
    Idle,
    /// Build a graph over all live notes.
    Build,
    /// Add the next slots to the graph.
    Extend,
}

struct Namespace {
    name: String,
    /// Events in commit order; the only thing writers touch.
    inbox: Mutex<Vec<Event>>,
    /// Changed only by the index thread (and by `load` before it starts),
    /// so that thread may read it under a read lock for as long as it
    /// likes: nobody else waits to write.
    state: RwLock<State>,
    /// Whether a [`Job::Work`] for this namespace is on its way.
    scheduled: AtomicBool,
}

impl Namespace {
    fn new(name: String, state: State) -> Namespace {
        Namespace { name, inbox: Mutex::new(Vec::new()), state: RwLock::new(state), scheduled: AtomicBool::new(false) }
    }

    fn live(&self) -> usize {
        read(&self.state).live
    }

    /// One unit of index work; returns whether more may be left.
    fn step(&self, params: &IndexParams) -> bool {
        let plan = {
            // State first, then inbox (recall takes them in the same order):
            // no recall can see the events neither in the inbox nor in state.
            let mut s = write(&self.state);
            for event in std::mem::take(&mut *lock(&self.inbox)) {
                match event {
                    Event::Add(entry) => s.add(entry.note.clone(), &entry.vector),
                    Event::Forget(id) => s.forget(&id),
                }
            }
            let shrunk = s.ann.is_some() && s.live < params.exact_threshold / 2;
            if shrunk || (s.ann.is_none() && s.dead() >= s.live.max(MIN_DEAD_TO_COMPACT)) {
                *s = s.compacted();
            }
            if s.ann.is_none() {
                if s.live >= params.exact_threshold { Plan::Build } else { Plan::Idle }
            } else if s.dead() * DEAD_SHARE_DIVISOR > s.live {
                Plan::Build
            } else if s.indexed < s.notes.len() {
                Plan::Extend
            } else {
                Plan::Idle
            }
        };
        match plan {
            Plan::Idle => false,
            Plan::Build => {
                self.build(params);
                true
            }
            Plan::Extend => {
                self.extend();
                true
            }
        }
    }

    /// Builds a graph over the live notes under the read lock (recall goes
    /// on using the old state; new events wait in the inbox), then swaps it
    /// in with the slots compacted to match.
    fn build(&self, params: &IndexParams) {
        let started = Instant::now();
        let (ann, next) = {
            let s = read(&self.state);
            let ann = AnnIndex::new(&params.hnsw, s.live).expect("params are validated on load");
            let items: Vec<(&[f32], usize)> = s.live().enumerate().map(|(i, row)| (row.vector, i)).collect();
            ann.insert_parallel(&items);
            (ann, s.compacted())
        };
        let notes = next.live;
        let mut s = write(&self.state);
        *s = next;
        s.indexed = s.notes.len();
        s.ann = Some(Arc::new(ann));
        drop(s);
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(namespace = self.name, notes, elapsed_ms, "semantic index graph built");
    }

    /// Adds up to [`INDEX_CHUNK`] slots to the graph (hnsw_rs inserts and
    /// searches concurrently; recall ignores slots past `indexed`).
    fn extend(&self) {
        let end = {
            let s = read(&self.state);
            let Some(ann) = &s.ann else { return };
            let end = (s.indexed + INDEX_CHUNK).min(s.notes.len());
            let items: Vec<(&[f32], usize)> =
                (s.indexed..end).filter_map(|slot| Some((s.row(slot)?.vector, slot))).collect();
            ann.insert_parallel(&items);
            end
        };
        write(&self.state).indexed = end;
    }

    /// Answers `queries` against this namespace; see the module docs.
    fn recall(&self, queries: &[&Query<'_>], params: &IndexParams) -> Vec<Vec<Hit>> {
        let s = read(&self.state);
        let inbox = InboxView::new(&lock(&self.inbox), &s);
        let visible = |n: &StoredNote| inbox.hidden.is_empty() || !inbox.hidden.contains(n.id.as_str());
        let graph = s.ann.as_ref().filter(|_| s.indexed > 0);
        let mut works: Vec<Work<'_, '_>> = queries
            .iter()
            .map(|q| {
                // The rarest required tag bounds the candidates; if few
                // notes carry it, scanning them beats the graph.
                let rarest =
                    q.tags.iter().map(|t| s.by_tag.get(t).map_or(&[][..], Vec::as_slice)).min_by_key(|l| l.len());
                let plan = match (rarest, graph) {
                    (Some(slots), _) if slots.len() <= params.exact_threshold => Scan::Slots(slots),
                    (_, Some(_)) => Scan::Graph,
                    _ => Scan::Full,
                };
                Work { query: q, top: TopK::new(q.k), plan }
            })
            .collect();

        if let Some(ann) = graph {
            for w in works.iter_mut().filter(|w| matches!(w.plan, Scan::Graph)) {
                let ef = params.hnsw.ef_search.max(w.query.k);
                let mut kept = 0;
                for nb in ann.search(&w.query.vector, ef, ef) {
                    let Some(row) = Some(nb.id).filter(|id| *id < s.indexed).and_then(|id| s.row(id)) else { continue };
                    if visible(row.note) && w.query.accepts(row.note) {
                        kept += 1;
                        w.offer(&row, nb.similarity);
                    }
                }
                // Filters or forgotten notes emptied the candidates: fall
                // back to an exact scan of everything.
                if kept < w.query.k && s.live > kept {
                    w.plan = Scan::Full;
                    w.top = TopK::new(w.query.k);
                }
            }
        }
        let in_graph = if graph.is_some() { s.indexed } else { 0 };
        let mut full: Vec<&mut Work<'_, '_>> = works.iter_mut().filter(|w| matches!(w.plan, Scan::Full)).collect();
        scan(s.slots(0..in_graph).filter(|r| visible(r.note)), &mut full, true);
        let mut rest: Vec<&mut Work<'_, '_>> =
            works.iter_mut().filter(|w| matches!(w.plan, Scan::Full | Scan::Graph)).collect();
        scan(s.slots(in_graph..s.notes.len()).filter(|r| visible(r.note)), &mut rest, true);
        for w in works.iter_mut() {
            if let Scan::Slots(slots) = w.plan {
                // Every slot carries the rarest tag; with no other tag
                // required, the notes need not be looked at.
                let check_tags = w.query.tags.len() > 1;
                let rows = slots.iter().filter_map(|slot| s.row(*slot)).filter(|r| visible(r.note));
                scan(rows, &mut [w], check_tags);
            }
        }
        let mut all: Vec<&mut Work<'_, '_>> = works.iter_mut().collect();
        let adds =
            inbox.adds.iter().map(|e| Row { note: &e.note, vector: &e.vector, created_at_ms: e.note.created_at_ms });
        scan(adds, &mut all, true);
        works.into_iter().map(Work::into_hits).collect()
    }
}

/// One slot's note as a scan sees it.
struct Row<'e> {
    note: &'e Arc<StoredNote>,
    vector: &'e [f32],
    created_at_ms: u64,
}

/// Scores each row against every query in `works`, in one pass; with
/// `check_tags` false, the caller vouches that the rows carry the tags.
fn scan<'e>(rows: impl Iterator<Item = Row<'e>>, works: &mut [&mut Work<'_, 'e>], check_tags: bool) {
    if works.is_empty() {
        return;
    }
    for row in rows {
        for w in works.iter_mut() {
            if !check_tags || w.query.accepts(row.note) {
                w.offer(&row, vector::similarity(&w.query.vector, row.vector));
            }
        }
    }
}

/// How one query finds candidates in a namespace.
enum Scan<'s> {
    /// Exact scan of every slot.
    Full,
    /// The graph for slots in it, exact scan for the rest.
    Graph,
    /// Exact scan of these slots (the rarest required tag's).
    Slots(&'s [usize]),
}

/// One query's progress through a namespace.
struct Work<'q, 'e> {
    query: &'q Query<'q>,
    top: TopK<Candidate<'e>>,
    plan: Scan<'e>,
}

impl<'e> Work<'_, 'e> {
    fn offer(&mut self, row: &Row<'e>, similarity: f32) {
        let score = self.query.score(similarity, row.created_at_ms);
        self.top.push(Candidate { score, similarity, note: row.note });
    }

    fn into_hits(self) -> Vec<Hit> {
        let hits = self.top.into_sorted_vec();
        hits.into_iter().map(|c| Hit { note: c.note.clone(), score: c.score, similarity: c.similarity }).collect()
    }
}

/// A scored note; greater is better.
struct Candidate<'e> {
    score: f32,
    similarity: f32,
    note: &'e Arc<StoredNote>,
}

impl Ord for Candidate<'_> {
    /// Score, then similarity, then the newer note, then the smaller id, so
    /// equal inputs give equal rankings (also after a restart).
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (&self.note, &other.note);
        self.score
            .total_cmp(&other.score)
            .then_with(|| self.similarity.total_cmp(&other.similarity))
            .then_with(|| a.created_at_ms.cmp(&b.created_at_ms))
            .then_with(|| b.id.cmp(&a.id))
    }
}

impl PartialOrd for Candidate<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate<'_> {}

/// A recall's view of a namespace's inbox.
#[derive(Default)]
struct InboxView {
    /// The last version of each note added in the inbox and not forgotten
    /// after.
    adds: Vec<Arc<Entry>>,
    /// Ids whose state version the inbox replaces or forgets.
    hidden: HashSet<String>,
}

impl InboxView {
    fn new(events: &[Event], state: &State) -> InboxView {
        if events.is_empty() {
            return InboxView::default();
        }
        let last: HashMap<&str, usize> = events.iter().enumerate().map(|(i, e)| (e.id(), i)).collect();
        let adds = events
            .iter()
            .enumerate()
            .filter_map(|(i, event)| match event {
                Event::Add(e) if last[e.note.id.as_str()] == i => Some(e.clone()),
                _ => None,
            })
            .collect();
        let hidden = last.keys().filter(|id| state.by_id.contains_key(**id)).map(|id| (*id).to_owned()).collect();
        InboxView { adds, hidden }
    }
}

enum Job {
    /// Take in the namespace's inbox and do its index work.
    Work(Arc<Namespace>),
    /// Answer once no work is left.
    Flush(Sender<()>),
}

/// The index thread: steps every namespace with work, round robin, until
/// none is left, then waits for more.
fn run_worker(jobs: Receiver<Job>, params: IndexParams) {
    let mut busy: Vec<Arc<Namespace>> = Vec::new();
    let mut flushes: Vec<Sender<()>> = Vec::new();
    loop {
        let first = if busy.is_empty() {
            match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            }
        } else {
            match jobs.try_recv() {
                Ok(job) => Some(job),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            }
        };
        for job in first.into_iter().chain(std::iter::from_fn(|| jobs.try_recv().ok())) {
            match job {
                Job::Work(ns) if !busy.iter().any(|b| Arc::ptr_eq(b, &ns)) => busy.push(ns),
                Job::Work(_) => {}
                Job::Flush(ack) => flushes.push(ack),
            }
        }
        busy.retain(|ns| {
            // Cleared before the step takes the inbox: an event queued after
            // this schedules the namespace again.
            ns.scheduled.store(false, AtomicOrdering::SeqCst);
            match catch_unwind(AssertUnwindSafe(|| ns.step(&params))) {
                Ok(more) => more,
                Err(_) => {
                    // Recall stays right: what is not in a graph is scanned.
                    tracing::error!(
                        namespace = ns.name,
                        "semantic index work panicked; the namespace is searched exactly"
                    );
                    false
                }
            }
        });
        if busy.is_empty() {
            for ack in flushes.drain(..) {
                let _ = ack.send(());
            }
        }
    }
}

// A panic while a lock is held leaves data that is still consistent enough
// to serve: every write section here is a few assignments.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

const _: () = {
    const fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<SemanticIndex>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::semantic::HashedEmbedder;
    use crate::memory::semantic::vector::SplitMix64;

    const DIM: usize = 32;

    /// `v<seed>` becomes a random unit vector of [`DIM`] floats.
    struct Seeds;

    impl Embedder for Seeds {
        fn id(&self) -> &str {
            "seeds"
        }

        fn dim(&self) -> usize {
            DIM
        }

        fn embed(&self, texts: &[&str]) -> Vec<Vec<f32>> {
            texts.iter().map(|t| SplitMix64(t[1..].parse().unwrap()).unit_vector(DIM)).collect()
        }
    }

    fn params(exact_threshold: usize) -> IndexParams {
        IndexParams { exact_threshold, ..IndexParams::default() }
    }

    fn entry(seed: u64, tags: &[&str]) -> Arc<Entry> {
        let note = StoredNote {
            id: format!("{seed:06}"),
            text: format!("v{seed}"),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            metadata: serde_json::Value::Null,
            created_at_ms: 0,
            embedder: "seeds".into(),
        };
        let vector = Seeds.embed(&[&note.text]).pop().unwrap();
        Arc::new(Entry::new(note, &vector))
    }

    fn add(ns: &Namespace, e: Arc<Entry>) {
        write(&ns.state).add(e.note.clone(), &e.vector);
    }

    fn query<'t>(seed: u64, k: usize, tags: &'t [String]) -> Query<'t> {
        let v = Seeds.embed(&[&format!("v{seed}")]).pop().unwrap();
        Query { vector: vector::to_index_vector(&v), k, tags, half_life_ms: None, now_ms: 0 }
    }

    fn texts(hits: &[Hit]) -> Vec<&str> {
        hits.iter().map(|h| h.note.text.as_str()).collect()
    }

    fn top1(ns: &Namespace, seed: u64, params: &IndexParams) -> Vec<String> {
        let q = query(seed, 1, &[]);
        ns.recall(&[&q], params).remove(0).iter().map(|h| h.note.text.clone()).collect()
    }

    #[test]
    fn graph_slots_pending_slots_and_the_inbox_are_searched_together() {
        let p = params(100);
        let ns = Namespace::new("ns".into(), State::new(DIM));
        for seed in 0..300 {
            add(&ns, entry(seed, &[]));
        }
        ns.build(&p);
        for seed in 300..320 {
            add(&ns, entry(seed, &[]));
        }
        {
            let s = read(&ns.state);
            assert_eq!((s.indexed, s.notes.len()), (300, 320));
        }
        lock(&ns.inbox).extend([Event::Add(entry(320, &[])), Event::Forget(format!("{:06}", 7))]);

        for seed in [3, 250, 310, 320] {
            assert_eq!(top1(&ns, seed, &p), [format!("v{seed}")], "seed {seed}");
        }
        assert_ne!(top1(&ns, 7, &p), ["v7"]);
        let q = query(5, 10, &[]);
        let hits = ns.recall(&[&q], &p).remove(0);
        assert_eq!(hits.len(), 10);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));

        // Taking the inbox in and extending the graph changes nothing.
        while ns.step(&p) {}
        assert_eq!(read(&ns.state).indexed, read(&ns.state).notes.len());
        assert_eq!(ns.recall(&[&q], &p).remove(0).iter().map(|h| &h.note.id).collect::<Vec<_>>(), {
            hits.iter().map(|h| &h.note.id).collect::<Vec<_>>()
        });
        assert_ne!(top1(&ns, 7, &p), ["v7"]);
    }

    #[test]
    fn a_note_replaced_in_the_inbox_is_returned_once_in_its_new_version() {
        let p = params(100);
        let ns = Namespace::new("ns".into(), State::new(DIM));
        add(&ns, entry(1, &["old"]));
        let mut newer = entry(1, &["new"]).note.as_ref().clone();
        newer.text = "v1 again".into();
        let vector = Seeds.embed(&["v1"]).pop().unwrap();
        lock(&ns.inbox).push(Event::Add(Arc::new(Entry::new(newer, &vector))));
        let q = query(1, 5, &[]);
        assert_eq!(texts(&ns.recall(&[&q], &p).remove(0)), ["v1 again"]);
        while ns.step(&p) {}
        assert_eq!(texts(&ns.recall(&[&q], &p).remove(0)), ["v1 again"]);
    }

    #[test]
    fn a_filter_the_graph_cannot_satisfy_falls_back_to_an_exact_scan() {
        // 60 tagged notes: too many for the tag scan (threshold 50), too
        // rare to show up among the graph's nearest candidates.
        let p = params(50);
        let ns = Namespace::new("ns".into(), State::new(DIM));
        for seed in 0..400 {
            add(&ns, entry(seed, if seed % 7 == 0 { &["rare"] } else { &[] }));
        }
        ns.build(&p);
        let tags = vec!["rare".to_owned()];
        let (one, all) = (query(1, 5, &tags), query(1, 5, &[]));
        let both = ns.recall(&[&one, &all], &p);
        assert_eq!(both[0].len(), 5);
        assert!(both[0].iter().all(|h| h.note.tags == tags));
        let mut exact: Vec<(f32, u64)> = (0..400)
            .filter(|s| s % 7 == 0)
            .map(|s| (vector::similarity(&one.vector, &entry(s, &[]).vector), s))
            .collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        let expected: Vec<String> = exact[..5].iter().map(|(_, s)| format!("v{s}")).collect();
        assert_eq!(texts(&both[0]), expected);
        assert_eq!(texts(&both[1])[0], "v1");
    }

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
    fn the_score_halves_with_every_half_life() {
        let q = Query { vector: Box::new([]), k: 1, tags: &[], half_life_ms: Some(1000.0), now_ms: 5000 };
        assert_eq!(q.score(0.8, 5000), 0.8);
        assert!((q.score(0.8, 4000) - 0.4).abs() < 1e-6);
        assert!((q.score(0.8, 3000) - 0.2).abs() < 1e-6);
        assert_eq!(q.score(0.8, 9000), 0.8, "notes from the future are not boosted");
        assert_eq!(q.score(-0.5, 5000), 0.0, "negative similarity is clamped");
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
