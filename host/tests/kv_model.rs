//! Reference model for the key/value cache: random puts (some expiring),
//! deletes, gets, key listings and reclaim passes through the committer,
//! compared with a plain map that models least-recently-used eviction
//! under per-namespace bounds, with the database closed and reopened
//! between steps.

use std::collections::BTreeMap;

use keel_host::memory::Store;
use keel_host::memory::committer::{Batch, Mutation};
use keel_host::memory::kv::{KvBound, entry_bytes};
use keel_host::memory::plane::{MemoryConfig, MemoryPlane};
use keel_host::memory::reclaim::reclaim_once;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Several writes in one batch, as one call's write set would be.
    Write(Vec<(u8, u8, Option<u8>)>),
    Delete(u8, u8),
    Get(u8, u8),
    List(u8, String),
    Reclaim,
    Reopen,
}

fn ns(n: u8) -> String {
    format!("ns{}", n % 3)
}

fn key(k: u8) -> String {
    format!("k{:02}", k % 8)
}

/// ns0 is tight on bytes and entries, ns1 on entries, ns2 unbounded.
fn bound(namespace: &str) -> KvBound {
    match namespace {
        "ns0" => KvBound { max_entries: 4, max_bytes: 34 },
        "ns1" => KvBound { max_entries: 6, max_bytes: u64::MAX },
        _ => KvBound::UNBOUNDED,
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((any::<u8>(), any::<u8>(), prop::option::weighted(0.2, any::<u8>())), 1..4).prop_map(Op::Write),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(n, k)| Op::Delete(n, k)),
        3 => (any::<u8>(), any::<u8>()).prop_map(|(n, k)| Op::Get(n, k)),
        1 => (any::<u8>(), "k[0-2]?").prop_map(|(n, p)| Op::List(n, p)),
        1 => Just(Op::Reclaim),
        1 => Just(Op::Reopen),
    ]
}

/// Values are "v<k>-<step>" so a stale read is visible.
fn value(step: usize, k: u8) -> Vec<u8> {
    format!("v{k}-{step}").into_bytes()
}

struct Stored {
    value: Vec<u8>,
    expired: bool,
    /// Larger is more recently used.
    used: u64,
}

/// The model: every stored entry, expired ones until reclaimed.
#[derive(Default)]
struct Model {
    entries: BTreeMap<(String, String), Stored>,
    clock: u64,
}

impl Model {
    fn usage(&self, namespace: &str) -> (u64, u64, u64) {
        let mut out = (0, 0, 0);
        for ((n, k), s) in &self.entries {
            if n == namespace {
                out.0 += 1;
                out.1 += entry_bytes(k, s.value.len());
                out.2 += u64::from(s.expired);
            }
        }
        out
    }

    fn put(&mut self, namespace: &str, key: &str, value: Vec<u8>, expired: bool) {
        self.clock += 1;
        self.entries.insert((namespace.into(), key.into()), Stored { value, expired, used: self.clock });
        let b = bound(namespace);
        loop {
            let (entries, bytes, _) = self.usage(namespace);
            if entries <= b.max_entries && bytes <= b.max_bytes {
                break;
            }
            let coldest = self
                .entries
                .iter()
                .filter(|((n, k), _)| n == namespace && k != key)
                .min_by_key(|(_, s)| s.used)
                .map(|(id, _)| id.clone());
            match coldest {
                Some(id) => self.entries.remove(&id),
                None => break,
            };
        }
    }

    fn get(&mut self, namespace: &str, key: &str) -> Option<Vec<u8>> {
        self.clock += 1;
        let s = self.entries.get_mut(&(namespace.into(), key.into())).filter(|s| !s.expired)?;
        s.used = self.clock;
        Some(s.value.clone())
    }

    fn live(&self, namespace: &str) -> impl Iterator<Item = (&String, &Vec<u8>)> {
        self.entries.iter().filter(move |((n, _), s)| n == namespace && !s.expired).map(|((_, k), s)| (k, &s.value))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn kv_matches_a_reference_model(ops in prop::collection::vec(op(), 1..48)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.redb");
        let mut store = Store::open(&path).unwrap();
        let mut model = Model::default();

        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Write(writes) => {
                    let mut mutations = Vec::new();
                    for (n, k, expired) in writes {
                        // An expiry in the past reads as absent at once.
                        let expires_at_ms = expired.map(|_| 1);
                        let v = value(step, k);
                        model.put(&ns(n), &key(k), v.clone(), expired.is_some());
                        let bound = bound(&ns(n));
                        mutations.push(Mutation::KvPut { namespace: ns(n), key: key(k), value: v, expires_at_ms, bound });
                    }
                    store.commit_blocking(Batch { mutations, audit: vec![] }).unwrap();
                }
                Op::Delete(n, k) => {
                    model.entries.remove(&(ns(n), key(k)));
                    let mutations = vec![Mutation::KvDelete { namespace: ns(n), key: key(k) }];
                    store.commit_blocking(Batch { mutations, audit: vec![] }).unwrap();
                }
                Op::Get(n, k) => {
                    let expected = model.get(&ns(n), &key(k));
                    prop_assert_eq!(store.kv_get(&ns(n), &key(k)).unwrap(), expected);
                }
                Op::List(n, prefix) => {
                    let expected: Vec<String> =
                        model.live(&ns(n)).map(|(k, _)| k.clone()).filter(|k| k.starts_with(&prefix)).take(5).collect();
                    prop_assert_eq!(store.kv_list_keys(&ns(n), &prefix, 5).unwrap(), expected);
                }
                Op::Reclaim => {
                    let plane = MemoryPlane::load(&store, &MemoryConfig::default()).unwrap();
                    let report = reclaim_once(&store, &plane, keel_host::memory::now_ms()).unwrap();
                    for n in 0..3 {
                        let expired = model.usage(&ns(n)).2;
                        prop_assert_eq!(report.expired_entries.get(&ns(n)).copied().unwrap_or(0), expired);
                    }
                    model.entries.retain(|_, s| !s.expired);
                }
                Op::Reopen => {
                    drop(store);
                    store = Store::open(&path).unwrap();
                }
            }
        }
        let stats = store.kv_stats().unwrap();
        for n in 0..3u8 {
            let got: Vec<_> = store.kv_scan(&ns(n), "", usize::MAX).unwrap();
            let want: Vec<_> = model.live(&ns(n)).map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(got, want);
            let (entries, bytes, expired) = model.usage(&ns(n));
            let s = stats.get(&ns(n)).copied().unwrap_or_default();
            prop_assert_eq!((s.entries, s.bytes, s.expired), (entries, bytes, expired));
            let b = bound(&ns(n));
            prop_assert!(s.entries <= b.max_entries && s.bytes <= b.max_bytes);
        }
    }
}

/// A read makes an entry the most recently used: the next put over the
/// bound evicts the oldest entry that was not read.
#[test]
fn a_read_protects_an_entry_from_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("keel.redb")).unwrap();
    let tight = KvBound { max_entries: 3, max_bytes: u64::MAX };
    let put = |k: &str| {
        let m = Mutation::KvPut {
            namespace: "c".into(),
            key: k.into(),
            value: b"v".to_vec(),
            expires_at_ms: None,
            bound: tight,
        };
        store.commit_blocking(Batch { mutations: vec![m], audit: vec![] }).unwrap();
    };
    put("a");
    put("b");
    put("c");
    assert!(store.kv_get("c", "a").unwrap().is_some());
    put("d");
    let keys = store.kv_list_keys("c", "", 10).unwrap();
    assert_eq!(keys, ["a", "c", "d"], "b was the least recently used");
}
