//! The semantic store through its public API: remember, recall with decay
//! and tag filters, forget, restart, and the hnsw graph against brute force.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use keel_host::memory::Store;
use keel_host::memory::audit::AuditEntry;
use keel_host::memory::semantic::vector::SplitMix64;
use keel_host::memory::semantic::{
    Embedder, HashedEmbedder, Hit, IndexParams, PreparedNote, RecallFilter, RecallQuery, SemanticIndex, get_note,
};
use serde_json::json;

const NS: &str = "notes";
const HOUR_MS: u64 = 3_600_000;
/// A fixed "now", so scores do not depend on the clock.
const NOW: u64 = 1_700_000_000_000;

fn workspace() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("keel.redb")).unwrap();
    (dir, store)
}

fn hashed(store: &Store) -> SemanticIndex {
    SemanticIndex::load(store, Arc::new(HashedEmbedder)).unwrap()
}

fn audit() -> AuditEntry {
    AuditEntry::allowed("test", "memory.remember", NS)
}

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| (*t).to_owned()).collect()
}

/// Stores notes created at the given times, in one commit.
fn remember_at(store: &Store, index: &SemanticIndex, ns: &str, notes: &[(&str, &[&str], u64)]) -> Vec<String> {
    let prepared: Vec<PreparedNote> =
        notes.iter().map(|(text, t, at)| index.prepare(text, tags(t), json!({}), *at).unwrap()).collect();
    let ids = prepared.iter().map(|p| p.note.id.clone()).collect();
    index.commit_notes(store, ns, prepared, audit()).unwrap();
    ids
}

fn recall(index: &SemanticIndex, query: &str, k: usize, filter_tags: &[&str], half_life: Option<Duration>) -> Vec<Hit> {
    let filter = RecallFilter { tags: tags(filter_tags), owners: None };
    index.recall(NS, query, k, &filter, NOW, half_life).unwrap()
}

fn texts(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.note.text.as_str()).collect()
}

fn ids(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.note.id.as_str()).collect()
}

#[test]
fn a_recent_note_outranks_an_older_equally_similar_one() {
    let (_dir, store) = workspace();
    let index = hashed(&store);
    let text = "the staging database password rotates every monday";
    remember_at(&store, &index, NS, &[(text, &["old"], NOW - 48 * HOUR_MS), (text, &["new"], NOW - HOUR_MS)]);

    let hits = recall(&index, "staging database password", 2, &[], Some(Duration::from_secs(24 * 3600)));
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].note.tags, ["new"]);
    assert!((hits[0].similarity - hits[1].similarity).abs() < 1e-6);
    // One hour old against 48 hours old at a 24-hour half-life.
    let expected = 0.5f32.powf(1.0 / 24.0) / 0.5f32.powf(2.0);
    assert!((hits[0].score / hits[1].score - expected).abs() < 1e-3, "{} {}", hits[0].score, hits[1].score);

    // Without a half-life, age does not matter and the newer wins the tie.
    let flat = recall(&index, "staging database password", 2, &[], None);
    assert_eq!(flat[0].score, flat[1].score);
    assert_eq!(flat[0].note.tags, ["new"]);
}

#[test]
fn decay_lets_a_fresh_related_note_beat_a_stale_closer_one() {
    let (_dir, store) = workspace();
    let index = hashed(&store);
    remember_at(
        &store,
        &index,
        NS,
        &[
            ("quarterly invoice for the cloud provider is due", &[], NOW - 90 * 24 * HOUR_MS),
            ("cloud provider invoice paid", &[], NOW - HOUR_MS),
        ],
    );
    let query = "quarterly invoice for the cloud provider";
    assert_eq!(texts(&recall(&index, query, 1, &[], None)), ["quarterly invoice for the cloud provider is due"]);
    let week = Some(Duration::from_secs(7 * 24 * 3600));
    assert_eq!(texts(&recall(&index, query, 1, &[], week)), ["cloud provider invoice paid"]);
}

#[test]
fn tag_filters_require_every_tag() {
    let (_dir, store) = workspace();
    let index = hashed(&store);
    remember_at(
        &store,
        &index,
        NS,
        &[
            ("deploy the api on friday", &["ops", "api"], NOW),
            ("deploy the web app on friday", &["ops", "web"], NOW),
            ("deploy notes from the retro", &["retro"], NOW),
        ],
    );
    let q = "deploy on friday";
    assert_eq!(recall(&index, q, 10, &[], None).len(), 3);
    assert_eq!(texts(&recall(&index, q, 10, &["ops"], None)).len(), 2);
    assert_eq!(texts(&recall(&index, q, 10, &["ops", "api"], None)), ["deploy the api on friday"]);
    assert!(recall(&index, q, 10, &["api", "web"], None).is_empty());
    assert!(recall(&index, q, 10, &["unknown"], None).is_empty());
}

#[test]
fn forgotten_notes_are_gone_also_after_a_restart() {
    let (_dir, store) = workspace();
    let index = hashed(&store);
    let ids = remember_at(
        &store,
        &index,
        NS,
        &[("the office wifi password is hunter2", &[], NOW), ("the office opens at nine", &[], NOW)],
    );
    assert!(index.forget(&store, NS, &ids[0], audit()).unwrap());
    assert!(!index.forget(&store, NS, &ids[0], audit()).unwrap());
    assert_eq!(texts(&recall(&index, "office wifi password", 5, &[], None)), ["the office opens at nine"]);
    index.wait_indexed();
    assert_eq!(texts(&recall(&index, "office wifi password", 5, &[], None)), ["the office opens at nine"]);
    assert_eq!(get_note(&store, NS, &ids[0]).unwrap(), None);

    drop(index);
    let index = hashed(&store);
    assert_eq!(texts(&recall(&index, "office wifi password", 5, &[], None)), ["the office opens at nine"]);
}

#[test]
fn a_reloaded_index_answers_like_the_live_one() {
    let (_dir, store) = workspace();
    let index = hashed(&store);
    let topics = ["billing", "deploys", "hiring", "customers", "security"];
    let notes: Vec<(String, Vec<&str>, u64)> = (0..60)
        .map(|i| {
            let topic = topics[i % topics.len()];
            (format!("note {i} about {topic} and item {}", i * 7 % 11), vec![topic], NOW - i as u64 * HOUR_MS)
        })
        .collect();
    let borrowed: Vec<(&str, &[&str], u64)> = notes.iter().map(|(t, g, at)| (t.as_str(), &g[..], *at)).collect();
    remember_at(&store, &index, NS, &borrowed);
    remember_at(&store, &index, "elsewhere", &[("note about billing", &[], NOW)]);

    let queries: Vec<RecallQuery> =
        [("billing item 3", vec![]), ("hiring", vec!["hiring".to_owned()]), ("note 42", vec![])]
            .into_iter()
            .map(|(text, tags)| RecallQuery {
                namespace: NS.into(),
                text: text.into(),
                k: 5,
                filter: RecallFilter { tags, owners: None },
                half_life: Some(Duration::from_secs(12 * 3600)),
            })
            .collect();
    let summary = |index: &SemanticIndex| -> Vec<Vec<(String, f32)>> {
        let hits = index.recall_many(&queries, NOW).unwrap();
        hits.iter().map(|hs| hs.iter().map(|h| (h.note.id.clone(), h.score)).collect()).collect()
    };
    let before = summary(&index);
    assert!(before.iter().all(|hits| hits.len() == 5), "{before:?}");
    // The batch answers like separate recalls.
    for (q, hits) in queries.iter().zip(&before) {
        let single = index.recall(NS, &q.text, q.k, &q.filter, NOW, q.half_life).unwrap();
        assert_eq!(ids(&single), hits.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>());
    }
    drop(index);
    assert_eq!(summary(&hashed(&store)), before);
}

/// Embeds `v<seed>` as a random unit vector near one of 30 random topics:
/// random notes with the structure real embeddings have.
struct RandomEmbedder;

fn topics() -> &'static [Vec<f32>] {
    static TOPICS: OnceLock<Vec<Vec<f32>>> = OnceLock::new();
    TOPICS.get_or_init(|| {
        let mut rng = SplitMix64(99);
        (0..30).map(|_| rng.unit_vector(HashedEmbedder::DIM)).collect()
    })
}

impl Embedder for RandomEmbedder {
    fn id(&self) -> &str {
        "test-random-v1"
    }

    fn dim(&self) -> usize {
        HashedEmbedder::DIM
    }

    fn embed(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        texts
            .iter()
            .map(|t| {
                let seed: u64 = t[1..].parse().unwrap();
                SplitMix64(seed).unit_vector_near(&topics()[(seed % 30) as usize], 1.0)
            })
            .collect()
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn the_graph_finds_what_brute_force_finds_and_sees_unindexed_notes() {
    let (_dir, store) = workspace();
    let embedder: Arc<dyn Embedder> = Arc::new(RandomEmbedder);
    // Below the default threshold namespaces are searched exactly.
    let params = IndexParams { exact_threshold: 1_000, ..IndexParams::default() };
    let index = SemanticIndex::load_with(&store, embedder.clone(), params).unwrap();
    let n = 3_000u64;
    let notes: Vec<PreparedNote> =
        (0..n).map(|i| index.prepare(&format!("v{i}"), vec![], json!({}), NOW).unwrap()).collect();
    let vectors: Vec<Vec<f32>> = notes.iter().map(|p| p.vector.clone()).collect();
    let texts_of: Vec<String> = notes.iter().map(|p| p.note.text.clone()).collect();
    index.commit_notes(&store, NS, notes, audit()).unwrap();
    index.wait_indexed();
    let stats = index.stats(NS);
    assert_eq!((stats.notes, stats.graph_slots, stats.pending), (n as usize, Some(n as usize), 0), "{stats:?}");

    let (queries, k) = (40u64, 10);
    let mut found = 0;
    let mut before = Vec::new();
    for q in 0..queries {
        let text = format!("v{}", 1_000_000 + q);
        let qv = &embedder.embed(&[&text])[0];
        let mut exact: Vec<(f32, &str)> =
            vectors.iter().zip(&texts_of).map(|(v, t)| (cosine(qv, v), t.as_str())).collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        let truth: Vec<&str> = exact[..k].iter().map(|(_, t)| *t).collect();
        let hits = index.recall(NS, &text, k, &RecallFilter::default(), NOW, None).unwrap();
        assert_eq!(hits.len(), k);
        found += hits.iter().filter(|h| truth.contains(&h.note.text.as_str())).count();
        before.push(hits.iter().map(|h| h.note.id.clone()).collect::<Vec<_>>());
    }
    let recall_at_k = found as f64 / (queries as usize * k) as f64;
    assert!(recall_at_k >= 0.95, "recall@10 {recall_at_k}");

    // Committed but not yet in the graph: found at once, and as the newer of
    // two identical notes, ranked first.
    let fresh = index.prepare("v77", vec![], json!({"fresh": true}), NOW + 1).unwrap();
    index.commit_notes(&store, NS, vec![fresh], audit()).unwrap();
    let hits = index.recall(NS, "v77", 2, &RecallFilter::default(), NOW, None).unwrap();
    assert_eq!((hits[0].note.metadata.clone(), hits[1].note.text.as_str()), (json!({"fresh": true}), "v77"));

    // After a restart the rebuilt graph answers (almost) the same.
    drop(index);
    let index = SemanticIndex::load_with(&store, embedder, params).unwrap();
    index.wait_indexed();
    let mut same = 0;
    for (q, ids_before) in (0..queries).zip(&before) {
        let hits = index.recall(NS, &format!("v{}", 1_000_000 + q), k, &RecallFilter::default(), NOW, None).unwrap();
        same += hits.iter().filter(|h| ids_before.contains(&h.note.id)).count();
    }
    let overlap = same as f64 / (queries as usize * k) as f64;
    assert!(overlap >= 0.95, "overlap {overlap}");
}

/// Another embedder's vectors live in another space: comparing them would
/// return nonsense, so they are never returned.
#[test]
fn notes_of_another_embedder_are_never_returned() {
    let (_dir, store) = workspace();
    let hashed_index = hashed(&store);
    let other = SemanticIndex::load(&store, Arc::new(RandomEmbedder)).unwrap();
    other.commit_notes(&store, NS, vec![other.prepare("v1", vec![], json!({}), NOW).unwrap()], audit()).unwrap();
    // Fed to the hashed index too, as a committer serving both would.
    let foreign = other.prepare("v2", vec![], json!({}), NOW).unwrap();
    hashed_index.note_committed(NS, foreign.note.clone(), &foreign.vector);
    remember_at(&store, &hashed_index, NS, &[("v1 v2 a hashed note", &[], NOW)]);

    for index in [&hashed_index, &hashed(&store)] {
        assert_eq!(texts(&recall(index, "v1", 10, &[], None)), ["v1 v2 a hashed note"]);
        assert_eq!(texts(&recall(index, "v2", 10, &[], None)), ["v1 v2 a hashed note"]);
    }
    let random = SemanticIndex::load(&store, Arc::new(RandomEmbedder)).unwrap();
    assert_eq!(texts(&random.recall(NS, "v1", 10, &RecallFilter::default(), NOW, None).unwrap()), ["v1"]);
}
