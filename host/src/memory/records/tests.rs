use std::collections::BTreeMap;

use redb::ReadableDatabase;
use serde_json::{Value, json};

use super::*;
use crate::memory::Store;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("keel.redb")).unwrap();
    let txn = store.db().begin_write().unwrap();
    create_tables(&txn).unwrap();
    txn.commit().unwrap();
    (dir, store)
}

fn customers(indexes: &[&str]) -> Collections {
    let spec = CollectionSpec {
        schema: Some(json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 0},
                "contact": {"type": "object", "properties": {"email": {"type": "string", "format": "email"}}}
            }
        })),
        indexes: indexes.iter().map(|s| s.to_string()).collect(),
        retention_hours: None,
    };
    Collections::new(BTreeMap::from([("customers".to_owned(), spec)])).unwrap()
}

fn put(collection: &str, id: &str, data: Value, expected_version: Option<u64>) -> RecordWrite {
    RecordWrite::Put { collection: collection.into(), id: id.into(), data, expected_version }
}

fn delete(collection: &str, id: &str, expected_version: Option<u64>) -> RecordWrite {
    RecordWrite::Delete { collection: collection.into(), id: id.into(), expected_version }
}

fn cond(field: &str, op: Op, value: Value) -> Condition {
    Condition { field: field.into(), op, value }
}

fn q(collection: &str, conditions: Vec<Condition>, limit: u32) -> Query {
    Query { collection: collection.into(), conditions, limit, cursor: None }
}

fn ids(page: &Page) -> Vec<&str> {
    page.records.iter().map(|r| r.id.as_str()).collect()
}

/// Every page of `query`, concatenated.
fn all(store: &Store, reg: &Collections, mut query: Query) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let page = super::query(store, reg, &query).unwrap();
        out.extend(page.records.iter().map(|r| r.id.clone()));
        match page.next_cursor {
            None => return out,
            cursor => query.cursor = cursor,
        }
    }
}

fn person(name: &str, age: i64, email: &str) -> Value {
    json!({"name": name, "age": age, "contact": {"email": email}})
}

#[test]
fn versions_count_updates_and_compare_and_set_reports_both_versions() {
    let (_dir, store) = open();
    let reg = Collections::default();
    assert_eq!(write(&store, &reg, &[put("notes", "n1", json!({"t": 1}), Some(0))]).unwrap(), vec![1]);
    assert_eq!(write(&store, &reg, &[put("notes", "n1", json!({"t": 2}), Some(1))]).unwrap(), vec![2]);
    assert_eq!(write(&store, &reg, &[put("notes", "n1", json!({"t": 3}), None)]).unwrap(), vec![3]);
    let got = get(&store, "notes", "n1").unwrap().unwrap();
    assert_eq!((got.id.as_str(), got.version, &got.data), ("n1", 3, &json!({"t": 3})));
    assert!(got.updated_at_ms > 0);

    let err = write(&store, &reg, &[put("notes", "n1", json!({}), Some(2))]).unwrap_err();
    assert!(
        matches!(&err, RecordError::Conflict { collection, id, expected: 2, actual: 3 } if collection == "notes" && id == "n1"),
        "{err:?}"
    );
    assert!(err.to_string().contains("is at version 3, but the write expected it at version 2"), "{err}");
    let err = write(&store, &reg, &[put("notes", "n1", json!({}), Some(0))]).unwrap_err();
    assert!(matches!(err, RecordError::Conflict { expected: 0, actual: 3, .. }), "{err:?}");
    let err = write(&store, &reg, &[delete("notes", "n9", Some(1))]).unwrap_err();
    assert!(matches!(err, RecordError::Conflict { expected: 1, actual: 0, .. }), "{err:?}");
    assert!(err.to_string().contains("is absent, but the write expected it at version 1"), "{err}");

    assert_eq!(write(&store, &reg, &[delete("notes", "n1", Some(3))]).unwrap(), vec![0]);
    assert_eq!(get(&store, "notes", "n1").unwrap(), None);
    assert_eq!(write(&store, &reg, &[delete("notes", "n1", None)]).unwrap(), vec![0], "deleting nothing is fine");
    assert_eq!(write(&store, &reg, &[put("notes", "n1", json!({}), Some(0))]).unwrap(), vec![1]);
}

#[test]
fn a_batch_is_checked_in_order_and_refused_whole() {
    let (_dir, store) = open();
    let reg = Collections::default();
    let batch = [
        put("notes", "a", json!({"v": 1}), Some(0)),
        put("notes", "a", json!({"v": 2}), Some(1)),
        delete("notes", "a", Some(2)),
        put("notes", "a", json!({"v": 3}), Some(0)),
        put("notes", "b", json!({"v": 1}), None),
    ];
    assert_eq!(write(&store, &reg, &batch).unwrap(), vec![1, 2, 0, 1, 1]);

    let txn = store.db().begin_write().unwrap();
    let bad = [put("notes", "c", json!({}), Some(0)), put("notes", "c", json!({}), Some(0))];
    let err = check(&txn, &reg, &bad, None).unwrap_err();
    assert!(matches!(err, RecordError::Conflict { expected: 0, actual: 1, .. }), "{err:?}");
    check(&txn, &reg, &bad[..1], None).unwrap();
    drop(txn);
    assert_eq!(get(&store, "notes", "c").unwrap(), None, "check changes nothing");

    let err = write(&store, &reg, &[put("notes", "d", json!({}), None), put("notes", "a", json!({}), Some(7))]);
    assert!(matches!(err, Err(RecordError::Conflict { .. })));
    assert_eq!(get(&store, "notes", "d").unwrap(), None, "nothing of a refused batch is written");
}

#[test]
fn schema_errors_name_the_pointer_and_what_to_fix() {
    let (_dir, store) = open();
    let reg = customers(&[]);
    let err = write(&store, &reg, &[put("customers", "c1", json!({"name": "Ada", "age": -1}), None)]).unwrap_err();
    let RecordError::Schema { pointer, message, more, .. } = &err else { panic!("{err:?}") };
    assert_eq!((pointer.as_str(), *more), ("/age", 0));
    assert!(message.contains("minimum"), "{message}");
    assert!(err.to_string().contains("at `/age`") && err.to_string().contains("change the record"), "{err}");

    let err = write(&store, &reg, &[put("customers", "c1", json!({"age": 1.5}), None)]).unwrap_err();
    assert!(matches!(&err, RecordError::Schema { more: 1, .. }), "{err:?}");
    let err = write(&store, &reg, &[put("customers", "c1", json!({"name": "A", "contact": {"email": "nope"}}), None)])
        .unwrap_err();
    assert!(matches!(&err, RecordError::Schema { pointer, .. } if pointer == "/contact/email"), "{err:?}");
    let err = write(&store, &reg, &[put("customers", "c1", json!({}), None)]).unwrap_err();
    assert!(err.to_string().contains("at the top level"), "{err}");

    write(&store, &reg, &[put("customers", "c1", person("Ada", 36, "ada@example.com"), None)]).unwrap();
    write(&store, &reg, &[put("other", "x", json!({"anything": true}), None)]).unwrap();
}

#[test]
fn names_shapes_and_sizes_are_checked() {
    let (_dir, store) = open();
    let reg = Collections::default();
    let cases: Vec<(RecordWrite, &str)> = vec![
        (put("notes", "a", json!([1]), None), "not a JSON object"),
        (put("notes", "a", json!({"s": "x".repeat(MAX_RECORD_BYTES)}), None), "over the limit"),
        (put("bad name", "a", json!({}), None), "collection name"),
        (put("notes", "", json!({}), None), "record id"),
        (put("notes", &"i".repeat(MAX_ID_BYTES + 1), json!({}), None), "record id"),
        (delete("notes", "a\nb", None), "control characters"),
    ];
    for (w, needle) in cases {
        let err = write(&store, &reg, std::slice::from_ref(&w)).unwrap_err();
        assert!(err.to_string().contains(needle), "{w:?}: {err}");
        assert!(err.to_string().len() < 400, "messages stay short: {err}");
    }
    write(&store, &reg, &[put("notes", &"i".repeat(MAX_ID_BYTES), json!({}), None)]).unwrap();
}

#[test]
fn a_database_without_the_tables_reads_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("keel.redb")).unwrap();
    let txn = store.db().begin_read().unwrap();
    if txn.open_table(write::RECORDS).is_ok() {
        return; // Store::migrate creates the tables now; nothing left to test.
    }
    drop(txn);
    let reg = customers(&["age"]);
    assert_eq!(get(&store, "customers", "a").unwrap(), None);
    let page = query(&store, &reg, &q("customers", vec![cond("age", Op::Gt, json!(1))], 10)).unwrap();
    assert_eq!(page, Page { records: vec![], next_cursor: None });
    write(&store, &reg, &[put("customers", "a", person("A", 2, "a@example.com"), None)]).unwrap();
    assert_eq!(ids(&query(&store, &reg, &q("customers", vec![cond("age", Op::Gt, json!(1))], 10)).unwrap()), ["a"]);
}

#[test]
fn indexes_follow_puts_and_deletes() {
    let (_dir, store) = open();
    let reg = customers(&["contact.email", "age"]);
    let by_email = |email: &str| q("customers", vec![cond("contact.email", Op::Eq, json!(email))], 10);
    write(
        &store,
        &reg,
        &[
            put("customers", "c1", person("Ada", 36, "ada@example.com"), None),
            put("customers", "c2", person("Bob", 20, "bob@example.com"), None),
        ],
    )
    .unwrap();
    assert_eq!(ids(&query(&store, &reg, &by_email("ada@example.com")).unwrap()), ["c1"]);

    write(&store, &reg, &[put("customers", "c1", person("Ada", 37, "ada@new.example"), Some(1))]).unwrap();
    assert!(query(&store, &reg, &by_email("ada@example.com")).unwrap().records.is_empty());
    let page = query(&store, &reg, &by_email("ada@new.example")).unwrap();
    assert_eq!((ids(&page), page.records[0].version), (vec!["c1"], 2));

    write(&store, &reg, &[put("customers", "c2", json!({"name": "Bob"}), None)]).unwrap();
    assert!(query(&store, &reg, &by_email("bob@example.com")).unwrap().records.is_empty());
    write(&store, &reg, &[delete("customers", "c1", None)]).unwrap();
    assert!(query(&store, &reg, &by_email("ada@new.example")).unwrap().records.is_empty());

    let txn = store.db().begin_read().unwrap();
    let index = txn.open_table(write::INDEX).unwrap();
    assert_eq!(redb::ReadableTableMetadata::len(&index).unwrap(), 0, "no entry outlives its record");
}

#[test]
fn index_queries_order_by_value_then_id_and_page_with_cursors() {
    let (_dir, store) = open();
    let reg = customers(&["age"]);
    let ages = [("a", 30), ("b", 10), ("c", 20), ("d", 10), ("e", 40), ("f", 20)];
    let writes: Vec<_> =
        ages.iter().map(|(id, age)| put("customers", id, person(id, *age, "x@example.com"), None)).collect();
    write(&store, &reg, &writes).unwrap();

    let range = vec![cond("age", Op::Ge, json!(10)), cond("age", Op::Lt, json!(40))];
    let first = query(&store, &reg, &q("customers", range.clone(), 2)).unwrap();
    assert_eq!(ids(&first), ["b", "d"]);
    assert!(first.next_cursor.is_some());
    assert_eq!(all(&store, &reg, q("customers", range, 2)), ["b", "d", "c", "f", "a"]);
    assert_eq!(all(&store, &reg, q("customers", vec![cond("age", Op::Gt, json!(20))], 1)), ["a", "e"]);
    assert_eq!(all(&store, &reg, q("customers", vec![cond("age", Op::Le, json!(20.0))], 3)), ["b", "d", "c", "f"]);
    assert_eq!(all(&store, &reg, q("customers", vec![cond("age", Op::Eq, json!(20))], 1)), ["c", "f"]);
    // Further conditions filter what the index finds.
    let mixed = vec![cond("age", Op::Ge, json!(20)), cond("name", Op::Lt, json!("e"))];
    assert_eq!(all(&store, &reg, q("customers", mixed, 10)), ["c", "a"]);
    // A condition that no value of the field can meet.
    let never = vec![cond("age", Op::Ge, json!(20)), cond("age", Op::Eq, json!("20"))];
    assert_eq!(all(&store, &reg, q("customers", never, 10)), Vec::<String>::new());
    // The last full page knows nothing follows.
    let page = query(&store, &reg, &q("customers", vec![cond("age", Op::Ge, json!(40))], 1)).unwrap();
    assert_eq!((ids(&page), page.next_cursor.as_deref()), (vec!["e"], None));
}

#[test]
fn unindexed_queries_scan_in_id_order() {
    let (_dir, store) = open();
    let reg = Collections::default();
    let writes: Vec<_> = (0..10).map(|i| put("notes", &format!("n{i}"), json!({"n": 9 - i, "s": "x"}), None)).collect();
    write(&store, &reg, &writes).unwrap();
    assert_eq!(all(&store, &reg, q("notes", vec![cond("n", Op::Lt, json!(3))], 2)), ["n7", "n8", "n9"]);
    assert_eq!(all(&store, &reg, q("notes", vec![], 4)).len(), 10);
    assert_eq!(all(&store, &reg, q("other", vec![], 4)), Vec::<String>::new());
}

#[test]
fn a_scan_examines_a_bounded_number_of_records_per_call() {
    let (_dir, store) = open();
    let reg = Collections::default();
    let n = MAX_QUERY_EXAMINED + 5;
    let writes: Vec<_> = (0..n).map(|i| put("notes", &format!("{i:06}"), json!({"i": i}), None)).collect();
    write(&store, &reg, &writes).unwrap();
    let needle = q("notes", vec![cond("i", Op::Eq, json!(n - 1))], 10);
    let first = query(&store, &reg, &needle).unwrap();
    assert!(first.records.is_empty() && first.next_cursor.is_some(), "{:?}", first.next_cursor);
    let second = query(&store, &reg, &Query { cursor: first.next_cursor, ..needle }).unwrap();
    assert_eq!((ids(&second), second.next_cursor.as_deref()), (vec![format!("{:06}", n - 1).as_str()], None));
}

#[test]
fn long_strings_share_index_keys_but_match_exactly() {
    let (_dir, store) = open();
    let reg = customers(&["name"]);
    let long = "x".repeat(MAX_INDEXED_STRING_BYTES + 10);
    let names = [("a", format!("{long}b")), ("b", format!("{long}a")), ("c", long.clone()), ("d", "y".into())];
    let writes: Vec<_> = names.iter().map(|(id, n)| put("customers", id, json!({"name": n}), None)).collect();
    write(&store, &reg, &writes).unwrap();
    let eq = |v: &str| all(&store, &reg, q("customers", vec![cond("name", Op::Eq, json!(v))], 1));
    assert_eq!(eq(&format!("{long}a")), ["b"]);
    assert_eq!(eq(&long), ["c"]);
    let gt = all(&store, &reg, q("customers", vec![cond("name", Op::Gt, json!(format!("{long}a")))], 1));
    assert_eq!(gt, ["a", "d"], "one key for a, b and c, so by id within it");
    let lt = all(&store, &reg, q("customers", vec![cond("name", Op::Lt, json!(format!("{long}b")))], 1));
    assert_eq!(lt, ["b", "c"]);
}

#[test]
fn an_index_declared_later_is_scanned_until_built_and_then_used() {
    let (_dir, store) = open();
    let plain = customers(&[]);
    let writes: Vec<_> = [("a", 3), ("b", 1), ("c", 2)]
        .iter()
        .map(|(id, age)| put("customers", id, person(id, *age, "p@example.com"), None))
        .collect();
    write(&store, &plain, &writes).unwrap();

    let indexed = customers(&["age"]);
    let by_age = || q("customers", vec![cond("age", Op::Ge, json!(0))], 10);
    assert_eq!(all(&store, &indexed, by_age()), ["a", "b", "c"], "not built: a scan in id order");
    write(&store, &indexed, &[put("customers", "d", person("d", 0, "p@example.com"), None)]).unwrap();
    assert_eq!(all(&store, &indexed, by_age()), ["a", "b", "c", "d"], "one write does not make it complete");

    let txn = store.db().begin_write().unwrap();
    assert_eq!(build_indexes(&txn, &indexed).unwrap(), 1);
    assert_eq!(build_indexes(&txn, &indexed).unwrap(), 0, "nothing left to build");
    txn.commit().unwrap();
    assert_eq!(all(&store, &indexed, by_age()), ["d", "b", "c", "a"], "built: index order");

    // Dropped from the config: writes stop maintaining it and mark it stale...
    write(&store, &plain, &[put("customers", "b", person("b", 9, "p@example.com"), None)]).unwrap();
    // ...so declaring it again without a rebuild falls back to a scan.
    assert_eq!(all(&store, &indexed, by_age()), ["a", "b", "c", "d"]);
    let txn = store.db().begin_write().unwrap();
    assert_eq!(build_indexes(&txn, &indexed).unwrap(), 1);
    txn.commit().unwrap();
    assert_eq!(all(&store, &indexed, by_age()), ["d", "c", "a", "b"]);

    // Undeclared for good: the rebuild drops its entries.
    let txn = store.db().begin_write().unwrap();
    build_indexes(&txn, &plain).unwrap();
    txn.commit().unwrap();
    let txn = store.db().begin_read().unwrap();
    assert_eq!(redb::ReadableTableMetadata::len(&txn.open_table(write::INDEX).unwrap()).unwrap(), 0);
    assert_eq!(redb::ReadableTableMetadata::len(&txn.open_table(write::INDEX_STATE).unwrap()).unwrap(), 0);
}

#[test]
fn bad_queries_and_cursors_are_refused() {
    let (_dir, store) = open();
    let reg = customers(&["age"]);
    let writes: Vec<_> =
        (0..3).map(|i| put("customers", &format!("c{i}"), person("p", i, "p@example.com"), None)).collect();
    write(&store, &reg, &writes).unwrap();
    for (query, needle) in [
        (q("customers", vec![], 0), "limit"),
        (q("customers", vec![], MAX_QUERY_LIMIT + 1), "limit"),
        (q("customers", vec![cond("age", Op::Eq, json!(true))], 1), "numbers or strings"),
        (q("customers", vec![cond("a..b", Op::Eq, json!(1))], 1), "empty part"),
        (q("customers", vec![cond("age", Op::Eq, json!(1)); MAX_QUERY_CONDITIONS + 1], 1), "at most"),
    ] {
        let err = super::query(&store, &reg, &query).unwrap_err();
        assert!(matches!(err, RecordError::InvalidQuery { .. }) && err.to_string().contains(needle), "{err}");
    }
    let scan = query(&store, &reg, &q("customers", vec![], 1)).unwrap();
    let on_index = Query { cursor: scan.next_cursor, ..q("customers", vec![cond("age", Op::Ge, json!(0))], 1) };
    assert!(matches!(query(&store, &reg, &on_index), Err(RecordError::InvalidCursor)));
    let garbage = Query { cursor: Some("not hex".into()), ..q("customers", vec![], 1) };
    assert!(matches!(query(&store, &reg, &garbage), Err(RecordError::InvalidCursor)));
}

#[test]
fn queries_read_as_json_with_defaults() {
    let query: Query = serde_json::from_value(json!({
        "collection": "leads",
        "conditions": [{"field": "score", "op": "ge", "value": 5}]
    }))
    .unwrap();
    assert_eq!(query.limit, DEFAULT_QUERY_LIMIT);
    assert_eq!(query.conditions[0].op, Op::Ge);
    assert!(serde_json::from_value::<Query>(json!({"collection": "x", "limt": 5})).is_err());
}

#[test]
fn single_writes_can_be_validated_without_the_database() {
    let reg = customers(&[]);
    validate_write(&reg, &put("customers", "c1", person("Ada", 3, "ada@example.com"), Some(7))).unwrap();
    let err = validate_write(&reg, &put("customers", "c1", json!({"age": 3}), None)).unwrap_err();
    assert!(matches!(err, RecordError::Schema { .. }), "{err:?}");
    assert!(matches!(validate_write(&reg, &delete("customers", "", None)), Err(RecordError::InvalidName { .. })));
}

fn writer(plugin: &str, may_change: &[(&str, &str)]) -> RecordWriter {
    let may_change = may_change.iter().map(|(c, o)| ((*c).to_owned(), (*o).to_owned())).collect();
    RecordWriter { plugin: plugin.to_owned(), may_change }
}

#[test]
fn records_keep_their_creator_and_refuse_other_writers() {
    let (_dir, store) = open();
    let reg = Collections::default();
    let (a, b) = (writer("a", &[]), writer("b", &[]));
    write_as(&store, &reg, &[put("leads", "x", json!({"n": 1}), None)], Some(&a)).unwrap();
    assert_eq!(get(&store, "leads", "x").unwrap().unwrap().owner.as_deref(), Some("a"));

    for refused in [put("leads", "x", json!({"n": 2}), None), delete("leads", "x", None)] {
        let err = write_as(&store, &reg, &[refused], Some(&b)).unwrap_err();
        assert!(matches!(&err, RecordError::NotOwner { owner, plugin, .. } if owner == "a" && plugin == "b"), "{err}");
        assert!(err.to_string().contains("write_from = [\"a\"]"), "{err}");
    }
    // A grant for another collection does not help; one for this one does,
    // and the record stays its creator's.
    let err = write_as(&store, &reg, &[put("leads", "x", json!({"n": 2}), None)], Some(&writer("b", &[("crm", "a")])));
    assert!(matches!(err, Err(RecordError::NotOwner { .. })));
    write_as(&store, &reg, &[put("leads", "x", json!({"n": 2}), None)], Some(&writer("b", &[("leads", "a")]))).unwrap();
    let x = get(&store, "leads", "x").unwrap().unwrap();
    assert_eq!((x.version, x.owner.as_deref()), (2, Some("a")));

    // A record deleted and created again in one batch belongs to the new creator.
    let batch = [delete("leads", "x", None), put("leads", "x", json!({"n": 3}), None)];
    write_as(&store, &reg, &batch, Some(&a)).unwrap();
    write_as(&store, &reg, &[put("leads", "y", json!({"n": 1}), None)], Some(&b)).unwrap();
    let batch = [put("leads", "y", json!({"n": 2}), None)];
    assert!(write_as(&store, &reg, &batch, Some(&a)).is_err(), "b's record is b's");
    // The operator changes anything, and creates unowned records.
    write(&store, &reg, &[put("leads", "y", json!({"n": 3}), None), put("leads", "z", json!({}), None)]).unwrap();
    assert_eq!(get(&store, "leads", "y").unwrap().unwrap().owner.as_deref(), Some("b"));
    assert_eq!(get(&store, "leads", "z").unwrap().unwrap().owner, None);
    write_as(&store, &reg, &[put("leads", "z", json!({"n": 1}), None)], Some(&b)).unwrap();
    assert_eq!(get(&store, "leads", "z").unwrap().unwrap().owner, None, "unowned stays unowned");

    let only_a = ["a".to_owned()];
    let page = query_visible(&store, &reg, &q("leads", vec![], 10), Visible::Owners(&only_a)).unwrap();
    assert_eq!(ids(&page), ["x", "z"]);
    assert!(get_visible(&store, "leads", "y", Visible::Owners(&only_a)).unwrap().is_none());
    assert!(get_visible(&store, "leads", "y", Visible::All).unwrap().is_some());
}

#[test]
fn records_stored_before_owners_read_as_unowned() {
    let (_dir, store) = open();
    let reg = Collections::default();
    // The layout keel wrote before owners: format 1, version, time, JSON.
    let mut old = vec![1u8];
    old.extend_from_slice(&3u64.to_be_bytes());
    old.extend_from_slice(&1_700_000_000_000u64.to_be_bytes());
    old.extend_from_slice(br#"{"name":"Legacy"}"#);
    let txn = store.db().begin_write().unwrap();
    txn.open_table(write::RECORDS).unwrap().insert(("leads", "old"), old.as_slice()).unwrap();
    txn.commit().unwrap();

    let entry = get_visible(&store, "leads", "old", Visible::Owners(&["a".to_owned()])).unwrap().unwrap();
    assert_eq!((entry.version, entry.owner, entry.data), (3, None, json!({"name": "Legacy"})));
    write_as(&store, &reg, &[put("leads", "old", json!({"name": "Legacy", "n": 1}), Some(3))], Some(&writer("a", &[])))
        .unwrap();
    let entry = get(&store, "leads", "old").unwrap().unwrap();
    assert_eq!((entry.version, entry.owner), (4, None), "rewritten in the new layout, still unowned");
}
