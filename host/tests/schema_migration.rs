//! A workspace written by an earlier keel (tests/fixtures/workspace-v1)
//! opens, migrates, and keeps everything.

mod common;

use keel_host::memory::SCHEMA_VERSION;
use keel_host::workspace::Workspace;

fn copy_of_v1() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/workspace-v1");
    for file in ["keel.toml", "keel.redb"] {
        std::fs::copy(fixture.join(file), ws.join(file)).unwrap();
    }
    (dir, ws)
}

#[test]
fn a_v1_workspace_migrates_and_keeps_everything() {
    let (_dir, path) = copy_of_v1();
    {
        let ws = Workspace::open(&path).unwrap();
        let store = ws.store();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.kv_get("hello", "Ada").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(store.kv_get("hello", "Grace").unwrap().as_deref(), Some(&b"1"[..]));
        // v3 counts what each namespace holds, for its bound.
        let usage = store.kv_stats().unwrap()["hello"];
        assert_eq!(
            (usage.entries, usage.bytes, usage.expired),
            (2, "Ada".len() as u64 + 1 + "Grace".len() as u64 + 1, 0)
        );
        let verified = store.audit_verify().unwrap();
        assert_eq!((verified.entries, verified.broken), (4, None), "old entries are chained");
        let tail = store.audit_tail(10).unwrap();
        assert_eq!(tail[0].operation, "plugin.install");
        assert_eq!(tail[3].target, "hello/Grace");
    }

    // The plugin installed by the old keel still runs and sees its memory.
    let out = common::keel(&path, &["call", "hello", "--input", r#"{"name":"Ada"}"#]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(common::stdout(&out).contains(r#""times_seen": 3"#), "{}", common::stdout(&out));
    let verify = common::keel(&path, &["audit", "verify"]);
    assert!(common::stdout(&verify).contains("audit log intact: 5 entries"), "{}", common::stdout(&verify));
}

#[test]
fn migrating_twice_changes_nothing() {
    let (_dir, path) = copy_of_v1();
    drop(Workspace::open(&path).unwrap());
    let ws = Workspace::open(&path).unwrap();
    assert_eq!(ws.store().kv_get("hello", "Ada").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(ws.store().audit_verify().unwrap().entries, 4);
}

/// A v3 workspace (before records and notes had owners) opens as v4, and
/// its records, in the old layout, read as unowned data every plugin
/// granted the collection may read.
#[test]
fn records_written_before_owners_stay_shared() {
    use redb::{ReadableDatabase, TableDefinition};
    const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

    let (_dir, path) = common::workspace();
    let ok = |args: &[&str]| {
        let out = common::keel(&path, args);
        assert!(out.status.success(), "keel {args:?}: {}", common::stderr(&out));
        common::stdout(&out)
    };
    ok(&["install", common::guests::MEMORY_PLANE, "--yes", "--allow-unsigned"]);
    {
        // What keel v3 wrote: format 1, version, update time, JSON.
        let db = redb::Database::open(path.join("keel.redb")).unwrap();
        let mut old = vec![1u8];
        old.extend_from_slice(&2u64.to_be_bytes());
        old.extend_from_slice(&1_700_000_000_000u64.to_be_bytes());
        old.extend_from_slice(br#"{"name":"Legacy"}"#);
        let txn = db.begin_write().unwrap();
        txn.open_table(RECORDS).unwrap().insert(("leads", "legacy"), old.as_slice()).unwrap();
        txn.open_table(META).unwrap().insert("schema_version", 3).unwrap();
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        assert_eq!(read.open_table(META).unwrap().get("schema_version").unwrap().unwrap().value(), 3);
    }
    assert_eq!(Workspace::open(&path).unwrap().store().schema_version().unwrap(), SCHEMA_VERSION);
    assert!(ok(&["memory", "query", "leads"]).contains("legacy v2 (shared)"));
    let ops = r#"{"ops":[{"op":"get-record","collection":"leads","id":"legacy"}]}"#;
    let out: serde_json::Value = serde_json::from_str(&ok(&["call", "memory-plane", "--input", ops])).unwrap();
    assert_eq!(out[0], serde_json::json!({"data": {"name": "Legacy"}, "version": 2}));
}
