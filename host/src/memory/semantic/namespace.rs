//! One namespace's notes in memory: slots, their vectors and the hnsw graph
//! over them, and the inbox through which committed changes arrive.
//!
//! Each namespace keeps its notes (text, tags, vector) in memory, in slots;
//! from [`IndexParams::exact_threshold`] live notes on, an hnsw graph over
//! the slots serves searches, below it an exact scan does.
//!
//! Writes never wait for the graph. [`SemanticIndex::note_committed`]
//! (`super::SemanticIndex`) only appends to the namespace's inbox (a short
//! mutex) and wakes the index thread. That thread is the only one that
//! changes a namespace's state: it moves inbox events into slots, builds a
//! graph while recalls go on against the current state and then swaps it
//! in, and adds new slots to the graph in small chunks. A recall holds the
//! state's read lock and sees three parts: slots in the graph (searched),
//! slots not yet in it, and inbox events (both scanned exactly), so a
//! committed note is found from the moment `note_committed` returns.
//!
//! hnsw_rs cannot delete: forgotten notes become empty slots the searches
//! skip, and the graph is rebuilt once empty slots outnumber a quarter of
//! the live notes.
//!
//! A freshly built graph is laid out afresh in memory before it is swapped
//! in ([`AnnIndex::relaid`]), and again once a quarter more points have
//! been added to it, which scatters them over the heap once more.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use super::embed::Embedder;
use super::index::IndexParams;
use super::recall::Row;
use super::storage::StoredNote;
use super::vector::{self, AnnIndex};

/// Slots the index thread adds to a graph per step: small enough that
/// other namespaces and flushes are not kept waiting behind a big backlog.
const INDEX_CHUNK: usize = 256;
/// A graph is rebuilt when its empty slots exceed live notes divided by
/// this: searches would otherwise spend a quarter of their work on the dead.
const DEAD_SHARE_DIVISOR: usize = 4;
/// A namespace without a graph compacts its slots once this many are empty
/// (and at least as many as live ones).
const MIN_DEAD_TO_COMPACT: usize = 64;
/// A graph is laid out afresh once the points added since its last layout
/// exceed that many divided by this.
const RELAYOUT_GROWTH_DIVISOR: usize = 4;

/// A note with its vector, on its way into a namespace's state.
pub(super) struct Entry {
    pub(super) note: Arc<StoredNote>,
    /// The stored vector scaled by [`vector::to_index_vector`].
    pub(super) vector: Box<[f32]>,
}

impl Entry {
    pub(super) fn new(note: StoredNote, vector: &[f32]) -> Entry {
        Entry { note: Arc::new(note), vector: vector::to_index_vector(vector) }
    }

    /// Whether `embedder` made `vector`: same id, same length, no NaNs.
    pub(super) fn is_from(embedder: &dyn Embedder, note: &StoredNote, vector: &[f32]) -> bool {
        note.embedder == embedder.id() && vector.len() == embedder.dim() && vector.iter().all(|x| x.is_finite())
    }
}

/// A change committed to redb but not yet taken into a namespace's state.
pub(super) enum Event {
    Add(Arc<Entry>),
    Forget(String),
}

impl Event {
    pub(super) fn id(&self) -> &str {
        match self {
            Event::Add(e) => &e.note.id,
            Event::Forget(id) => id,
        }
    }
}

/// The notes of one namespace that the index thread has taken in.
pub(super) struct State {
    pub(super) dim: usize,
    /// Per slot; `None`: forgotten. Graph ids are slot numbers.
    pub(super) notes: Vec<Option<Arc<StoredNote>>>,
    /// Per slot, `dim` floats each, back to back: exact scans stream
    /// through memory instead of chasing a pointer per note.
    pub(super) vectors: Vec<f32>,
    /// Per slot, the note's creation time: decay needs it for every scanned
    /// note, and here it costs no pointer chase.
    pub(super) created: Vec<u64>,
    pub(super) by_id: HashMap<String, usize>,
    /// Slots per tag (including forgotten ones), so a selective tag filter
    /// scans only its notes instead of searching the graph.
    pub(super) by_tag: HashMap<String, Vec<usize>>,
    pub(super) live: usize,
    pub(super) ann: Option<Arc<AnnIndex>>,
    /// Slots `0..indexed` are in `ann`; later ones are scanned exactly.
    pub(super) indexed: usize,
    /// Slots `0..laid_out` were in `ann` when it was last laid out afresh.
    pub(super) laid_out: usize,
}

impl State {
    pub(super) fn new(dim: usize) -> State {
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
            laid_out: 0,
        }
    }

    pub(super) fn add(&mut self, note: Arc<StoredNote>, vector: &[f32]) {
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
    pub(super) fn row(&self, slot: usize) -> Option<Row<'_>> {
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
    pub(super) fn live(&self) -> impl Iterator<Item = Row<'_>> {
        self.slots(0..self.notes.len())
    }

    /// Slots `slots`, skipping forgotten ones.
    pub(super) fn slots(&self, slots: std::ops::Range<usize>) -> impl Iterator<Item = Row<'_>> {
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
    /// Lay the grown graph out afresh.
    Relayout,
}

pub(super) struct Namespace {
    pub(super) name: String,
    /// Events in commit order; the only thing writers touch.
    pub(super) inbox: Mutex<Vec<Event>>,
    /// Changed only by the index thread (and by `load` before it starts),
    /// so that thread may read it under a read lock for as long as it
    /// likes: nobody else waits to write.
    pub(super) state: RwLock<State>,
    /// Whether a [`Job::Work`] for this namespace is on its way.
    pub(super) scheduled: AtomicBool,
}

impl Namespace {
    pub(super) fn new(name: String, state: State) -> Namespace {
        Namespace { name, inbox: Mutex::new(Vec::new()), state: RwLock::new(state), scheduled: AtomicBool::new(false) }
    }

    pub(super) fn live(&self) -> usize {
        read(&self.state).live
    }

    /// One unit of index work; returns whether more may be left.
    pub(super) fn step(&self, params: &IndexParams) -> bool {
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
            } else if s.indexed - s.laid_out > s.laid_out / RELAYOUT_GROWTH_DIVISOR {
                Plan::Relayout
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
            Plan::Relayout => {
                self.relayout();
                true
            }
        }
    }

    /// Builds a graph over the live notes under the read lock (recall goes
    /// on using the old state; new events wait in the inbox), then swaps it
    /// in with the slots compacted to match.
    pub(super) fn build(&self, params: &IndexParams) {
        let started = Instant::now();
        let (ann, next) = {
            let s = read(&self.state);
            let ann = AnnIndex::new(&params.hnsw, s.live).expect("params are validated on load");
            let items: Vec<(&[f32], usize)> = s.live().enumerate().map(|(i, row)| (row.vector, i)).collect();
            ann.insert_parallel(&items);
            (self.relaid_or_logged(&ann).unwrap_or(ann), s.compacted())
        };
        let notes = next.live;
        let mut s = write(&self.state);
        *s = next;
        s.indexed = s.notes.len();
        s.laid_out = s.indexed;
        s.ann = Some(Arc::new(ann));
        drop(s);
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(namespace = self.name, notes, elapsed_ms, "semantic index graph built");
    }

    /// Copies the grown graph to fresh memory under the read lock, then
    /// swaps it in. Only this thread adds to the graph, so nothing is
    /// added meanwhile.
    fn relayout(&self) {
        let relaid = {
            let s = read(&self.state);
            let Some(ann) = &s.ann else { return };
            self.relaid_or_logged(ann)
        };
        let mut s = write(&self.state);
        // After a failure too: it is tried again when the graph has grown.
        s.laid_out = s.indexed;
        if let Some(relaid) = relaid {
            s.ann = Some(Arc::new(relaid));
        }
    }

    /// `ann` laid out afresh, or `None` if that failed (said in the log:
    /// the caller keeps `ann`).
    fn relaid_or_logged(&self, ann: &AnnIndex) -> Option<AnnIndex> {
        ann.relaid().inspect_err(|e| tracing::warn!(namespace = self.name, "{e}")).ok()
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
}

/// A recall's view of a namespace's inbox.
#[derive(Default)]
pub(super) struct InboxView {
    /// The last version of each note added in the inbox and not forgotten
    /// after.
    pub(super) adds: Vec<Arc<Entry>>,
    /// Ids whose state version the inbox replaces or forgets.
    pub(super) hidden: HashSet<String>,
}

impl InboxView {
    pub(super) fn new(events: &[Event], state: &State) -> InboxView {
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

// A panic while a lock is held leaves data that is still consistent enough
// to serve: every write section here is a few assignments.
pub(super) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}
