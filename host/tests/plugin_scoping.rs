//! Multi-tenant data scoping: records and notes carry the plugin that
//! created them. Two plugins granted the same collection and namespace
//! (copies of `memory-plane` under other names and manifests) see only
//! their own and unowned data, unless a grant names the other plugin in
//! `read_from` (read) or `write_from` (overwrite and delete); a refused
//! write is audited.

mod common;

use std::path::Path;

use keel_host::memory::audit::{AuditEntry, Decision};
use keel_host::memory::records::{self, RecordWrite};
use keel_host::runtime::Runtime;
use keel_host::workspace::Workspace;
use serde_json::{Value, json};

/// The plugin whose data the others try to reach.
const OWNER: &str = "memory-plane";

/// `memory-plane` packed with a manifest of its own: plugin `name` granted
/// `leads` and `notes` read-write, with `extra` added to both grants.
fn variant(dir: &Path, name: &str, extra: &str) -> String {
    let manifest = format!(
        "name = '{name}'\nversion = '0.1.0'\nworld = 'agent'\n[capabilities]\nmemory = [\
         {{ namespace = 'leads', access = 'read-write'{extra} }}, {{ namespace = 'notes', access = 'read-write'{extra} }}]\n"
    );
    let bytes = std::fs::read(common::guests::MEMORY_PLANE).unwrap();
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, keel_host::plugin::package::pack(&bytes, &manifest)).unwrap();
    path.to_str().unwrap().to_owned()
}

async fn run_as(runtime: &Runtime, plugin: &str, ops: Value) -> Vec<Value> {
    let input = json!({ "ops": ops }).to_string();
    let out = runtime.call(plugin, input).await.unwrap_or_else(|e| panic!("{plugin} runs its script: {e}"));
    serde_json::from_str(&out.output).unwrap()
}

/// A workspace where the operator wrote an unowned record and note, with
/// the owner and three other plugins installed: `stranger` (same grants,
/// nothing more), `reader` (`read_from` the owner) and `editor`
/// (`write_from` the owner).
fn host() -> (tempfile::TempDir, Workspace, Runtime) {
    let (dir, path) = common::workspace();
    let ws = Workspace::open(&path).unwrap();
    {
        // Written before the runtime loads the index, as an earlier session would.
        let plane = ws.memory_plane().unwrap();
        let shared = RecordWrite::Put {
            collection: "leads".into(),
            id: "shared".into(),
            data: json!({"name": "Shared"}),
            expected_version: None,
        };
        records::write(ws.store(), &plane.collections, &[shared]).unwrap();
        let entry = AuditEntry::allowed("operator", "memory.remember", "notes");
        let text = "The operator's note: invoice meetings are on Fridays";
        plane.semantic.remember(ws.store(), "notes", text, vec![], json!({}), entry).unwrap();
    }
    let runtime = ws.runtime().unwrap();
    common::install(&ws, &runtime, common::guests::MEMORY_PLANE);
    common::install(&ws, &runtime, &variant(dir.path(), "stranger", ""));
    common::install(&ws, &runtime, &variant(dir.path(), "reader", ", read_from = ['memory-plane']"));
    common::install(&ws, &runtime, &variant(dir.path(), "editor", ", write_from = ['memory-plane']"));
    (dir, ws, runtime)
}

/// The ids of a `query` result, sorted.
fn ids(page: &Value) -> Vec<String> {
    let mut ids: Vec<String> =
        page["ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

fn texts(hits: &Value) -> Vec<String> {
    hits.as_array().unwrap().iter().map(|h| h["text"].as_str().unwrap().to_owned()).collect()
}

fn denied(result: &Value) -> bool {
    result["error"] == "denied"
}

#[tokio::test]
async fn another_plugins_records_and_notes_need_an_explicit_grant() {
    let (_dir, ws, rt) = host();
    let r = run_as(
        &rt,
        OWNER,
        json!([
            {"op": "put-record", "collection": "leads", "id": "acme", "data": {"name": "Acme"}},
            {"op": "remember", "namespace": "notes", "text": "Acme asked for an invoice meeting", "tags": ["customer:acme"]},
        ]),
    )
    .await;
    assert_eq!(r[0], 1, "{r:?}");
    let acme_note = r[1].as_str().unwrap().to_owned();
    let stored = records::get(ws.store(), "leads", "acme").unwrap().unwrap();
    assert_eq!(stored.owner.as_deref(), Some(OWNER), "the record is tagged with its creator");
    let note = keel_host::memory::semantic::get_note(ws.store(), "notes", &acme_note).unwrap().unwrap();
    assert_eq!(note.owner.as_deref(), Some(OWNER), "and so is the note");

    // Same grants, no `read_from`: the owner's data is out of sight, the
    // operator's (unowned) data is shared, and its own is its own.
    let recall = json!({"namespace": "notes", "query": "invoice meeting", "k": 5});
    let r =
        run_as(&rt, "stranger", json!([{"op": "put-record", "collection": "leads", "id": "mine", "data": {}}])).await;
    assert_eq!(r[0], 1, "{r:?}");
    let r = run_as(
        &rt,
        "stranger",
        json!([
            {"op": "get-record", "collection": "leads", "id": "mine"},
            {"op": "get-record", "collection": "leads", "id": "acme"},
            {"op": "query", "collection": "leads"},
            {"op": "recall", "namespace": "notes", "query": "invoice meeting", "k": 5},
            {"op": "recall-many", "requests": [recall, {"namespace": "notes", "query": "Acme", "k": 5, "tags": ["customer:acme"]}]},
            {"op": "get-record", "collection": "leads", "id": "shared"},
        ]),
    )
    .await;
    assert_eq!(r[0]["version"], 1, "its own record: {r:?}");
    assert_eq!(r[1], Value::Null, "another plugin's record reads as absent: {r:?}");
    assert_eq!(ids(&r[2]), ["mine", "shared"], "{r:?}");
    assert_eq!(texts(&r[3]), ["The operator's note: invoice meetings are on Fridays"], "{r:?}");
    assert_eq!(texts(&r[4][0]), texts(&r[3]), "{r:?}");
    assert_eq!(r[4][1], json!([]), "{r:?}");
    assert_eq!(r[5]["data"]["name"], "Shared", "{r:?}");

    // Nor may it overwrite or delete the owner's data; each try is denied
    // and audited, and the call's other writes still land.
    let r = run_as(
        &rt,
        "stranger",
        json!([
            {"op": "put-record", "collection": "leads", "id": "acme", "data": {"name": "Hijacked"}},
            {"op": "delete-record", "collection": "leads", "id": "acme"},
            {"op": "forget", "namespace": "notes", "id": acme_note},
            {"op": "put-record", "collection": "leads", "id": "shared", "data": {"name": "Shared", "seen": true}},
        ]),
    )
    .await;
    assert!(denied(&r[0]) && denied(&r[1]) && denied(&r[2]), "{r:?}");
    let detail = r[0]["detail"].as_str().unwrap();
    assert!(detail.contains("belongs to plugin `memory-plane`") && detail.contains("write_from"), "{detail}");
    assert_eq!(r[3], 2, "unowned data stays writable by every plugin granted it: {r:?}");
    let acme = records::get(ws.store(), "leads", "acme").unwrap().unwrap();
    assert_eq!((acme.version, &acme.data), (1, &json!({"name": "Acme"})), "untouched");
    assert!(keel_host::memory::semantic::get_note(ws.store(), "notes", &acme_note).unwrap().is_some());
    let shared = records::get(ws.store(), "leads", "shared").unwrap().unwrap();
    assert_eq!(shared.owner, None, "writing an unowned record does not take it over");
    let denials: Vec<AuditEntry> = ws
        .store()
        .audit_tail(100)
        .unwrap()
        .into_iter()
        .filter(|e| e.actor == "stranger" && e.decision == Decision::Denied)
        .collect();
    let targets: Vec<&str> = denials.iter().map(|e| e.target.as_str()).collect();
    assert_eq!(targets, ["leads/acme", "leads/acme", format!("notes/{acme_note}").as_str()], "{denials:?}");
    assert!(denials.iter().all(|e| e.operation == "memory.write" && e.version.as_deref() == Some("0.1.0")));

    // `read_from` lets a plugin read the owner's data, and no more.
    let r = run_as(
        &rt,
        "reader",
        json!([
            {"op": "get-record", "collection": "leads", "id": "acme"},
            {"op": "query", "collection": "leads"},
            {"op": "recall", "namespace": "notes", "query": "Acme invoice meeting", "k": 5, "tags": ["customer:acme"]},
            {"op": "put-record", "collection": "leads", "id": "acme", "data": {"name": "Hijacked"}},
        ]),
    )
    .await;
    assert_eq!(r[0]["data"]["name"], "Acme", "{r:?}");
    assert_eq!(ids(&r[1]), ["acme", "shared"], "the owner's and unowned records, not the stranger's: {r:?}");
    assert_eq!(texts(&r[2]), ["Acme asked for an invoice meeting"], "{r:?}");
    assert!(denied(&r[3]), "read_from does not allow writes: {r:?}");

    // `write_from` lets it change the owner's data; the record stays the owner's.
    let r = run_as(
        &rt,
        "editor",
        json!([
            {"op": "put-record", "collection": "leads", "id": "acme", "data": {"name": "Acme", "stage": "qualified"}, "expected": 1},
        ]),
    )
    .await;
    assert_eq!(r[0], 2, "{r:?}");
    let acme = records::get(ws.store(), "leads", "acme").unwrap().unwrap();
    assert_eq!((acme.version, acme.owner.as_deref()), (2, Some(OWNER)));
    let r = run_as(&rt, OWNER, json!([{"op": "get-record", "collection": "leads", "id": "acme"}])).await;
    assert_eq!(r[0]["data"]["stage"], "qualified", "{r:?}");
    assert!(ws.store().audit_verify().unwrap().broken.is_none());
}

/// The operator's CLI sees every plugin's data and names its owner.
#[test]
fn the_operator_sees_every_owner() {
    let (dir, path) = common::workspace();
    let ok = |args: &[&str]| {
        let out = common::keel(&path, args);
        assert!(out.status.success(), "keel {args:?}: {}", common::stderr(&out));
        common::stdout(&out)
    };
    ok(&["install", common::guests::MEMORY_PLANE, "--yes", "--allow-unsigned"]);
    ok(&["install", &variant(dir.path(), "stranger", ""), "--yes", "--allow-unsigned"]);
    for (plugin, id) in [(OWNER, "acme"), ("stranger", "globex")] {
        let ops = json!({"ops": [
            {"op": "put-record", "collection": "leads", "id": id, "data": {"name": id}},
            {"op": "remember", "namespace": "notes", "text": format!("{id} wants an invoice meeting")},
        ]});
        ok(&["call", plugin, "--input", &ops.to_string()]);
    }
    ok(&["memory", "remember", "notes", "Invoice meetings are on Fridays"]);
    let query = ok(&["memory", "query", "leads"]);
    assert!(query.contains("acme v1 (by memory-plane)") && query.contains("globex v1 (by stranger)"), "{query}");
    let recall = ok(&["memory", "recall", "notes", "invoice meeting"]);
    for owner in ["(by memory-plane)", "(by stranger)", "(shared)"] {
        assert!(recall.contains(owner), "{owner}: {recall}");
    }
}
