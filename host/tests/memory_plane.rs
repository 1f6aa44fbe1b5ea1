//! Records and semantic notes through a real guest (`memory-plane`):
//! versions and conflicts, indexed queries, recall, forget, denials, and
//! all-or-nothing writes per call.

mod common;

use keel_host::memory::committer::{Batch, Mutation};
use keel_host::memory::kv::KvBound;
use keel_host::memory::records::RecordWrite;
use keel_host::runtime::Runtime;
use keel_host::workspace::Workspace;
use serde_json::{Value, json};

const CONFIG: &str = r#"
[limits]
call_timeout_ms = 5000

[memory.collections.leads]
indexes = ["value", "email"]
schema = { type = "object", required = ["name"], properties = { value = { type = "number" } } }

[memory.decay]
default_half_life_hours = 720.0
"#;

fn host() -> (tempfile::TempDir, Workspace, Runtime) {
    common::host_with(CONFIG, common::guests::MEMORY_PLANE)
}

async fn run(runtime: &Runtime, ops: Value) -> Vec<Value> {
    common::memory_plane_script(runtime, ops).await
}

fn lead(name: &str, value: u64) -> Value {
    json!({"name": name, "email": format!("{}@example.com", name.to_lowercase()), "value": value})
}

#[tokio::test]
async fn records_have_versions_and_compare_and_set() {
    let (_dir, _ws, rt) = host();
    let r = run(
        &rt,
        json!([
            {"op": "put-record", "collection": "leads", "id": "ada", "data": lead("Ada", 500), "expected": 0},
            {"op": "get-record", "collection": "leads", "id": "ada"},
            {"op": "put-record", "collection": "leads", "id": "ada", "data": lead("Ada", 600), "expected": 1},
            {"op": "put-record", "collection": "leads", "id": "ada", "data": lead("Ada", 700), "expected": 1},
        ]),
    )
    .await;
    assert_eq!(r[0], 1);
    assert_eq!(r[1]["version"], 1, "the call sees its own write: {r:?}");
    assert_eq!(r[2], 2);
    assert_eq!(r[3], json!({"conflict": 2}), "the record is at 2 now: {r:?}");

    let r = run(
        &rt,
        json!([
            {"op": "get-record", "collection": "leads", "id": "ada"},
            {"op": "put-record", "collection": "leads", "id": "ada", "data": lead("Ada", 1), "expected": 0},
            {"op": "delete-record", "collection": "leads", "id": "ada", "expected": 2},
            {"op": "get-record", "collection": "leads", "id": "ada"},
        ]),
    )
    .await;
    assert_eq!(r[0]["version"], 2);
    assert_eq!(r[0]["data"]["value"], 600);
    assert_eq!(r[1], json!({"conflict": 2}), "must not exist yet: {r:?}");
    assert_eq!(r[2], 2, "deleted at version 2");
    assert_eq!(r[3], Value::Null);
}

#[tokio::test]
async fn the_collection_schema_is_enforced() {
    let (_dir, _ws, rt) = host();
    let r = run(
        &rt,
        json!([
            {"op": "put-record", "collection": "leads", "id": "x", "data": {"value": 3}},
            {"op": "put-record", "collection": "leads", "id": "y", "data": {"name": "Y", "value": "lots"}},
            {"op": "put-record", "collection": "scratch", "id": "z", "data": [1, 2]},
        ]),
    )
    .await;
    assert_eq!(r[0]["error"], "invalid-input");
    assert!(r[0]["detail"].as_str().unwrap().contains("name"), "names what is missing: {r:?}");
    assert_eq!(r[1]["error"], "invalid-input");
    assert_eq!(r[2]["error"], "denied", "no grant for `scratch`: {r:?}");
}

#[tokio::test]
async fn queries_use_indexes_ranges_and_cursors() {
    let (_dir, _ws, rt) = host();
    let puts: Vec<Value> = (1..=7)
        .map(|i| json!({"op": "put-record", "collection": "leads", "id": format!("l{i}"), "data": lead(&format!("N{i}"), i * 100)}))
        .collect();
    run(&rt, Value::Array(puts)).await;
    let r = run(&rt, json!([
        {"op": "query", "collection": "leads", "conditions": [{"field": "value", "op": "ge", "value": 300}, {"field": "value", "op": "lt", "value": 700}], "limit": 3},
        {"op": "query", "collection": "leads", "conditions": [{"field": "email", "op": "eq", "value": "n2@example.com"}]},
    ]))
    .await;
    assert_eq!(r[0]["ids"], json!(["l3", "l4", "l5"]));
    assert_eq!(r[1]["ids"], json!(["l2"]));
    let cursor = r[0]["next"].as_str().expect("more pages").to_owned();
    let r = run(&rt, json!([
        {"op": "query", "collection": "leads", "conditions": [{"field": "value", "op": "ge", "value": 300}, {"field": "value", "op": "lt", "value": 700}], "limit": 3, "cursor": cursor},
    ]))
    .await;
    assert_eq!(r[0]["ids"], json!(["l6"]));
    assert_eq!(r[0]["next"], Value::Null);
}

#[tokio::test]
async fn notes_are_recalled_filtered_and_forgotten() {
    let (_dir, _ws, rt) = host();
    let r = run(&rt, json!([
        {"op": "remember", "namespace": "notes", "text": "Acme asked for a meeting about the invoice", "tags": ["customer:acme"]},
        {"op": "remember", "namespace": "notes", "text": "Globex wants a quote for the website", "tags": ["customer:globex"]},
        {"op": "recall", "namespace": "notes", "query": "meeting about the invoice", "k": 5},
    ]))
    .await;
    let acme = r[0].as_str().unwrap().to_owned();
    assert_eq!(r[2], json!([]), "notes become recallable when the call commits: {r:?}");

    let r = run(
        &rt,
        json!([
            {"op": "recall", "namespace": "notes", "query": "invoice meeting with acme", "k": 1},
            {"op": "recall", "namespace": "notes", "query": "invoice meeting", "k": 5, "tags": ["customer:globex"]},
            {"op": "recall-many", "requests": [
                {"namespace": "notes", "query": "website quote", "k": 1},
                {"namespace": "notes", "query": "invoice", "k": 1}
            ]},
            {"op": "forget", "namespace": "notes", "id": acme},
        ]),
    )
    .await;
    assert_eq!(r[0][0]["id"], acme.as_str(), "{r:?}");
    assert!(r[1].as_array().unwrap().iter().all(|h| h["tags"] == json!(["customer:globex"])), "tag filter: {r:?}");
    assert!(r[2][0][0]["text"].as_str().unwrap().contains("Globex"), "{r:?}");
    assert!(r[2][1][0]["text"].as_str().unwrap().contains("Acme"), "{r:?}");
    assert_eq!(r[3], true);

    let r = run(&rt, json!([{"op": "recall", "namespace": "notes", "query": "invoice meeting acme", "k": 5}])).await;
    assert!(r[0].as_array().unwrap().iter().all(|h| h["id"] != acme.as_str()), "forgotten: {r:?}");
}

#[tokio::test]
async fn read_only_and_ungranted_namespaces_are_denied() {
    let (_dir, ws, rt) = host();
    let r = run(
        &rt,
        json!([
            {"op": "remember", "namespace": "archive", "text": "old news"},
            {"op": "recall", "namespace": "archive", "query": "news"},
            {"op": "recall", "namespace": "private", "query": "anything"},
            {"op": "query", "collection": "private"},
        ]),
    )
    .await;
    assert_eq!(r[0]["error"], "denied", "archive is read-only: {r:?}");
    assert_eq!(r[1], json!([]), "but readable");
    assert_eq!(r[2]["error"], "denied");
    assert_eq!(r[3]["error"], "denied");
    let denials = ws
        .store()
        .audit_tail(20)
        .unwrap()
        .into_iter()
        .filter(|e| e.decision == keel_host::memory::audit::Decision::Denied)
        .count();
    assert_eq!(denials, 3, "every denial audited");
}

#[tokio::test]
async fn a_failing_call_writes_no_record_and_no_note() {
    let (_dir, ws, rt) = host();
    let script = json!({"fail": true, "ops": [
        {"op": "put-record", "collection": "leads", "id": "ghost", "data": lead("Ghost", 1)},
        {"op": "remember", "namespace": "notes", "text": "a note that must not exist"},
    ]});
    rt.call("memory-plane", script.to_string()).await.expect_err("fails on purpose");
    let r = run(
        &rt,
        json!([
            {"op": "get-record", "collection": "leads", "id": "ghost"},
            {"op": "recall", "namespace": "notes", "query": "note that must not exist"},
        ]),
    )
    .await;
    assert_eq!(r, vec![Value::Null, json!([])]);
    assert!(ws.store().audit_tail(50).unwrap().iter().all(|e| !e.target.contains("ghost")));
}

/// Two batches that both create the same record in one group commit: the
/// second is refused whole, the first lands.
#[test]
fn a_conflicting_batch_is_refused_whole() {
    let (_dir, ws, _rt) = host();
    let plane = ws.memory_plane().unwrap();
    let create = |name: &str| Batch {
        mutations: vec![
            Mutation::KvPut {
                namespace: "side".into(),
                key: name.into(),
                value: b"1".to_vec(),
                expires_at_ms: None,
                bound: KvBound::UNBOUNDED,
            },
            Mutation::Records {
                collections: plane.collections.clone(),
                writes: vec![RecordWrite::Put {
                    collection: "leads".into(),
                    id: "same".into(),
                    data: lead(name, 1),
                    expected_version: Some(0),
                }],
                writer: None,
            },
        ],
        audit: vec![],
    };
    ws.store().commit_blocking(create("first")).unwrap();
    let err = ws.store().commit_blocking(create("second")).unwrap_err();
    assert!(err.to_string().contains("change refused"), "{err}");
    assert!(ws.store().kv_get("side", "second").unwrap().is_none(), "nothing of the refused batch landed");
    assert!(ws.store().kv_get("side", "first").unwrap().is_some());
}
