//! Bounds and retention of the memory plane, through a real guest
//! (`memory-plane`) and the runtime's background reclaimer: oversized
//! puts are refused, puts beyond a namespace's bound evict the least
//! recently used entries (audited), retention caps expiries and deletes
//! old notes and records, and expired entries are reclaimed unattended.

mod common;

use std::time::{Duration, Instant};

use keel_host::memory::now_ms;
use keel_host::memory::reclaim::reclaim_once;
use keel_host::memory::records::{self, RecordWrite};
use keel_host::memory::semantic::RecallFilter;
use keel_host::runtime::Runtime;
use keel_host::workspace::Workspace;
use serde_json::{Value, json};

const HOUR_MS: u64 = 3_600_000;

const CONFIG: &str = r#"
[limits]
call_timeout_ms = 5000

[memory.namespaces.notes]
max_entries = 3
max_kib = 1
retention_hours = 1.0

[memory.collections.leads]
retention_hours = 1.0

[memory.reclaim]
interval_seconds = 1
"#;

fn host() -> (tempfile::TempDir, Workspace, Runtime) {
    common::host_with(CONFIG, common::guests::MEMORY_PLANE)
}

async fn run(runtime: &Runtime, ops: Value) -> Vec<Value> {
    common::memory_plane_script(runtime, ops).await
}

#[tokio::test]
async fn puts_beyond_the_bound_evict_the_least_recently_used() {
    let (_dir, ws, rt) = host();
    let too_big = "x".repeat(2000);
    let r = run(&rt, json!([{"op": "put", "namespace": "notes", "key": "big", "value": too_big}])).await;
    assert_eq!(r[0]["error"], "invalid-input", "{r:?}");
    assert!(r[0]["detail"].as_str().unwrap().contains("max_kib"), "says what to raise: {r:?}");

    for key in ["a", "b", "c"] {
        run(&rt, json!([{"op": "put", "namespace": "notes", "key": key, "value": "v"}])).await;
    }
    // Reading `a` makes `b` the coldest.
    let r = run(
        &rt,
        json!([
            {"op": "get", "namespace": "notes", "key": "a"},
        ]),
    )
    .await;
    assert_eq!(r[0], "v");
    run(&rt, json!([{"op": "put", "namespace": "notes", "key": "d", "value": "v"}])).await;
    let r = run(
        &rt,
        json!([
            {"op": "get", "namespace": "notes", "key": "a"},
            {"op": "get", "namespace": "notes", "key": "b"},
            {"op": "get", "namespace": "notes", "key": "d"},
        ]),
    )
    .await;
    assert_eq!(r, [json!("v"), Value::Null, json!("v")]);

    let evictions: Vec<_> =
        ws.store().audit_tail(50).unwrap().into_iter().filter(|e| e.operation == "memory.evict").collect();
    assert_eq!(evictions.len(), 1, "{evictions:?}");
    assert_eq!((evictions[0].actor.as_str(), evictions[0].target.as_str()), ("host", "notes/{b}"));
    let stats = ws.store().kv_stats().unwrap();
    assert_eq!(stats["notes"].entries, 3);
}

#[tokio::test]
async fn retention_caps_the_expiry_a_guest_asks_for() {
    let (_dir, ws, rt) = host();
    let before = now_ms();
    run(
        &rt,
        json!([
            {"op": "put", "namespace": "notes", "key": "forever", "value": "v"},
            {"op": "put", "namespace": "notes", "key": "two-hours", "value": "v", "ttl-ms": 2 * HOUR_MS},
            {"op": "put", "namespace": "leads", "key": "unbounded", "value": "v"},
        ]),
    )
    .await;
    let due = |at: u64| -> Vec<String> {
        ws.store().kv_expired(at, 100).unwrap().into_iter().map(|(_, ns, key)| format!("{ns}/{key}")).collect()
    };
    assert!(due(before + HOUR_MS - 1000).is_empty());
    assert_eq!(due(now_ms() + HOUR_MS), ["notes/forever", "notes/two-hours"], "both capped at one hour");
}

#[tokio::test]
async fn expired_entries_are_reclaimed_in_the_background() {
    let (_dir, ws, rt) = host();
    run(&rt, json!([{"op": "put", "namespace": "leads", "key": "otp", "value": "1234", "ttl-ms": 1}])).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while ws.store().kv_stats().unwrap().contains_key("leads") {
        assert!(Instant::now() < deadline, "the reclaimer did not run: {:?}", ws.store().kv_stats());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reclaimed = ws.store().audit_tail(10).unwrap().into_iter().find(|e| e.operation == "memory.reclaim").unwrap();
    assert_eq!((reclaimed.actor.as_str(), reclaimed.target.as_str()), ("host", "leads"));
    assert!(reclaimed.reason.unwrap().contains("1 expired"));
}

#[tokio::test]
async fn notes_and_records_past_retention_are_deleted() {
    let (_dir, ws, rt) = host();
    let r = run(
        &rt,
        json!([
            {"op": "remember", "namespace": "notes", "text": "Acme wants a demo", "tags": []},
            {"op": "put-record", "collection": "leads", "id": "acme", "data": {"name": "Acme"}},
        ]),
    )
    .await;
    assert!(r.iter().all(|v| v.get("error").is_none()), "{r:?}");
    let plane = rt.plane();
    // A collection without retention keeps its records.
    let keep =
        RecordWrite::Put { collection: "archive".into(), id: "old".into(), data: json!({}), expected_version: None };
    records::write(ws.store(), &plane.collections, &[keep]).unwrap();

    let nothing_yet = reclaim_once(ws.store(), plane, now_ms()).unwrap();
    assert_eq!(nothing_yet.total(), 0, "{nothing_yet:?}");

    let report = reclaim_once(ws.store(), plane, now_ms() + 2 * HOUR_MS).unwrap();
    assert_eq!(report.notes.get("notes"), Some(&1), "{report:?}");
    assert_eq!(report.records.get("leads"), Some(&1), "{report:?}");
    assert!(records::get(ws.store(), "leads", "acme").unwrap().is_none());
    assert!(records::get(ws.store(), "archive", "old").unwrap().is_some());
    let hits = plane.semantic.recall("notes", "demo", 5, &RecallFilter::default(), now_ms(), None).unwrap();
    assert!(hits.is_empty(), "a reclaimed note is not recalled: {hits:?}");
    let r = run(&rt, json!([{"op": "recall", "namespace": "notes", "query": "Acme demo", "k": 5}])).await;
    assert_eq!(r[0], json!([]), "nor through the guest");
}
