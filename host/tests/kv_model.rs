//! Reference model for the key/value memory: random puts (some expiring),
//! deletes, gets and key listings through the committer, compared with a
//! `BTreeMap`, with the database closed and reopened between steps.

use std::collections::BTreeMap;

use keel_host::memory::Store;
use keel_host::memory::committer::{Batch, Mutation};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Several writes in one batch, as one call's write set would be.
    Write(Vec<(u8, u8, Option<u8>)>),
    Delete(u8, u8),
    Get(u8, u8),
    List(u8, String),
    Reopen,
}

fn ns(n: u8) -> String {
    format!("ns{}", n % 3)
}

fn key(k: u8) -> String {
    format!("k{:02}", k % 24)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((any::<u8>(), any::<u8>(), prop::option::weighted(0.2, any::<u8>())), 1..4).prop_map(Op::Write),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(n, k)| Op::Delete(n, k)),
        3 => (any::<u8>(), any::<u8>()).prop_map(|(n, k)| Op::Get(n, k)),
        1 => (any::<u8>(), "k[0-2]?").prop_map(|(n, p)| Op::List(n, p)),
        1 => Just(Op::Reopen),
    ]
}

/// Values are "v<k>-<step>" so a stale read is visible.
fn value(step: usize, k: u8) -> Vec<u8> {
    format!("v{k}-{step}").into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn kv_matches_a_btreemap(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.redb");
        let mut store = Store::open(&path).unwrap();
        let mut model: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();

        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Write(writes) => {
                    let mut mutations = Vec::new();
                    for (n, k, expired) in writes {
                        // An expiry in the past reads as absent at once.
                        let expires_at_ms = expired.map(|_| 1);
                        let v = value(step, k);
                        match expires_at_ms {
                            Some(_) => model.remove(&(ns(n), key(k))),
                            None => model.insert((ns(n), key(k)), v.clone()),
                        };
                        mutations.push(Mutation::KvPut { namespace: ns(n), key: key(k), value: v, expires_at_ms });
                    }
                    store.commit_blocking(Batch { mutations, audit: vec![] }).unwrap();
                }
                Op::Delete(n, k) => {
                    model.remove(&(ns(n), key(k)));
                    let mutations = vec![Mutation::KvDelete { namespace: ns(n), key: key(k) }];
                    store.commit_blocking(Batch { mutations, audit: vec![] }).unwrap();
                }
                Op::Get(n, k) => {
                    prop_assert_eq!(store.kv_get(&ns(n), &key(k)).unwrap(), model.get(&(ns(n), key(k))).cloned());
                }
                Op::List(n, prefix) => {
                    let expected: Vec<String> = model
                        .keys()
                        .filter(|(m, k)| *m == ns(n) && k.starts_with(&prefix))
                        .map(|(_, k)| k.clone())
                        .take(5)
                        .collect();
                    prop_assert_eq!(store.kv_list_keys(&ns(n), &prefix, 5).unwrap(), expected);
                }
                Op::Reopen => {
                    drop(store);
                    store = Store::open(&path).unwrap();
                }
            }
        }
        let everything: Vec<_> = (0..3u8)
            .flat_map(|n| store.kv_scan(&ns(n), "", usize::MAX).unwrap().into_iter().map(move |(k, v)| ((ns(n), k), v)))
            .collect();
        prop_assert_eq!(everything, model.into_iter().collect::<Vec<_>>());
    }
}
