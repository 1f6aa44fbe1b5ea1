//! How a namespace answers queries: the graph for the slots in it, exact
//! scans for the rest and for selective tag filters, and the score that
//! ranks what both find. See the module docs of [`semantic`](super) for the
//! ranking.

use std::cmp::Ordering;
use std::sync::Arc;

use super::index::{Hit, IndexParams};
use super::namespace::{InboxView, Namespace, lock, read};
use super::storage::StoredNote;
use super::vector::{self, TopK};

/// A query ready to score notes.
pub(super) struct Query<'a> {
    pub(super) vector: Box<[f32]>,
    pub(super) k: usize,
    pub(super) tags: &'a [String],
    /// `Some`: only unowned notes and those of these plugins.
    pub(super) owners: Option<&'a [String]>,
    pub(super) half_life_ms: Option<f64>,
    pub(super) now_ms: u64,
}

impl Query<'_> {
    fn accepts(&self, note: &StoredNote) -> bool {
        self.tags.iter().all(|t| note.tags.contains(t)) && self.shows(note)
    }

    fn shows(&self, note: &StoredNote) -> bool {
        match (self.owners, note.owner.as_deref()) {
            (None, _) | (_, None) => true,
            (Some(owners), Some(owner)) => owners.iter().any(|o| o == owner),
        }
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

impl Namespace {
    /// Answers `queries` against this namespace; see the module docs.
    pub(super) fn recall(&self, queries: &[&Query<'_>], params: &IndexParams) -> Vec<Vec<Hit>> {
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
                        // The graph's similarity is approximate; hits carry
                        // the exact one, as scanned notes do.
                        w.offer(&row, vector::similarity(&w.query.vector, row.vector));
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
                // required and no owner filter, the notes need not be
                // looked at.
                let check_tags = w.query.tags.len() > 1 || w.query.owners.is_some();
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
pub(super) struct Row<'e> {
    pub(super) note: &'e Arc<StoredNote>,
    pub(super) vector: &'e [f32],
    pub(super) created_at_ms: u64,
}

/// Scores each row against every query in `works`, in one pass; with
/// `check_tags` false, the caller vouches that the rows carry the tags
/// and pass the owner filter.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::semantic::Embedder;
    use crate::memory::semantic::namespace::{Entry, Event, State, write};
    use crate::memory::semantic::testing::{DIM, Seeds, params, texts};

    fn entry(seed: u64, tags: &[&str]) -> Arc<Entry> {
        let note = StoredNote {
            id: format!("{seed:06}"),
            text: format!("v{seed}"),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            metadata: serde_json::Value::Null,
            created_at_ms: 0,
            embedder: "seeds".into(),
            owner: None,
        };
        let vector = Seeds.embed(&[&note.text]).pop().unwrap();
        Arc::new(Entry::new(note, &vector))
    }

    fn add(ns: &Namespace, e: Arc<Entry>) {
        write(&ns.state).add(e.note.clone(), &e.vector);
    }

    fn query<'t>(seed: u64, k: usize, tags: &'t [String]) -> Query<'t> {
        let v = Seeds.embed(&[&format!("v{seed}")]).pop().unwrap();
        Query { vector: vector::to_index_vector(&v), k, tags, owners: None, half_life_ms: None, now_ms: 0 }
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
    fn the_score_halves_with_every_half_life() {
        let q = Query { vector: Box::new([]), k: 1, tags: &[], owners: None, half_life_ms: Some(1000.0), now_ms: 5000 };
        assert_eq!(q.score(0.8, 5000), 0.8);
        assert!((q.score(0.8, 4000) - 0.4).abs() < 1e-6);
        assert!((q.score(0.8, 3000) - 0.2).abs() < 1e-6);
        assert_eq!(q.score(0.8, 9000), 0.8, "notes from the future are not boosted");
        assert_eq!(q.score(-0.5, 5000), 0.0, "negative similarity is clamped");
    }
}
