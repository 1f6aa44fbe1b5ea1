//! The audit log is hash-chained: editing, removing or reordering an entry
//! in the file is detected, with its position.

mod common;

use common::{keel, stderr, stdout};
use redb::{ReadableDatabase, TableDefinition};

/// The audit table as an attacker with the file would see it.
const AUDIT: TableDefinition<u64, &str> = TableDefinition::new("audit");

/// A workspace with a few audit entries: install, two writes, denials.
fn workspace_with_history() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, ws) = common::workspace();
    assert!(keel(&ws, &["install", common::guests::HELLO, "--yes", "--allow-unsigned"]).status.success());
    assert!(keel(&ws, &["install", common::guests::UNGRANTED_IMPORT, "--yes", "--allow-unsigned"]).status.success());
    assert!(keel(&ws, &["call", "hello", "--input", r#"{"name":"a"}"#]).status.success());
    assert!(keel(&ws, &["call", "ungranted-import"]).status.success());
    (dir, ws)
}

fn edit_file(ws: &std::path::Path, f: impl FnOnce(&mut redb::Table<u64, &str>)) {
    let db = redb::Database::open(ws.join("keel.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(AUDIT).unwrap();
        f(&mut table);
    }
    txn.commit().unwrap();
}

fn entry(ws: &std::path::Path, seq: u64) -> String {
    let db = redb::Database::open(ws.join("keel.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(AUDIT).unwrap();
    table.get(seq).unwrap().unwrap().value().to_owned()
}

#[test]
fn an_untouched_log_verifies() {
    let (_dir, ws) = workspace_with_history();
    let out = keel(&ws, &["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("audit log intact: 7 entries"), "{}", stdout(&out));
}

#[test]
fn an_edited_entry_is_detected_with_its_position() {
    let (_dir, ws) = workspace_with_history();
    let denied = entry(&ws, 4);
    assert!(denied.contains("\"denied\""), "entry 4 is a denial: {denied}");
    edit_file(&ws, |t| {
        t.insert(4, denied.replace("\"denied\"", "\"allowed\"").as_str()).unwrap();
    });
    let out = keel(&ws, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("audit entry #4 was changed"), "{}", stderr(&out));
}

#[test]
fn a_removed_entry_is_detected() {
    let (_dir, ws) = workspace_with_history();
    edit_file(&ws, |t| {
        t.remove(3).unwrap();
    });
    let out = keel(&ws, &["audit", "verify"]);
    assert!(stderr(&out).contains("audit entry #3 is missing"), "{}", stderr(&out));
}

#[test]
fn swapped_entries_are_detected() {
    let (_dir, ws) = workspace_with_history();
    let (two, three) = (entry(&ws, 2), entry(&ws, 3));
    edit_file(&ws, |t| {
        t.insert(2, three.as_str()).unwrap();
        t.insert(3, two.as_str()).unwrap();
    });
    let out = keel(&ws, &["audit", "verify"]);
    assert!(stderr(&out).contains("audit entry #2 was changed"), "{}", stderr(&out));
}

#[test]
fn a_truncated_log_is_detected() {
    let (_dir, ws) = workspace_with_history();
    edit_file(&ws, |t| {
        t.remove(7).unwrap();
    });
    let out = keel(&ws, &["audit", "verify"]);
    assert!(stderr(&out).contains("ends at entry #6, but entries up to #7 were written"), "{}", stderr(&out));
}

#[test]
fn show_and_export() {
    let (_dir, ws) = workspace_with_history();
    let show = stdout(&keel(&ws, &["audit", "show", "1"]));
    assert!(show.contains("plugin.install") && show.contains("\"hash\""), "{show}");
    let export = stdout(&keel(&ws, &["audit", "export", "--jsonl"]));
    let lines: Vec<serde_json::Value> = export.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 7);
    for pair in lines.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "exported entries chain");
    }
    let missing = keel(&ws, &["audit", "show", "99"]);
    assert!(stderr(&missing).contains("no audit entry #99"), "{}", stderr(&missing));
}
