//! The structured store against an in-memory model: random batches of puts
//! (with random expected versions) and deletes, gets and paged queries on
//! two collections, with the database closed and reopened between steps.
//! Every result must equal what a `BTreeMap` of (collection, id) -> record
//! says it should be.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use keel_host::memory::Store;
use keel_host::memory::records::{
    self, CollectionSpec, Collections, Condition, MAX_INDEXED_STRING_BYTES, Op, Query, RecordError, RecordWrite,
};
use proptest::prelude::*;
use serde_json::{Value, json};

/// `customers` has a schema and two indexes; `notes` is not declared.
const COLLECTIONS: [&str; 2] = ["customers", "notes"];
const IDS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
const INDEXED: [&str; 2] = ["age", "contact.email"];
const FIELDS: [[&str; 3]; 2] = [["age", "contact.email", "name"], ["n", "s", "n"]];

fn registry() -> Collections {
    let spec = CollectionSpec {
        schema: Some(json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 0},
                "contact": {"type": "object"}
            }
        })),
        indexes: INDEXED.iter().map(|s| s.to_string()).collect(),
        retention_hours: None,
    };
    Collections::new(BTreeMap::from([("customers".to_owned(), spec)])).unwrap()
}

/// Strings sharing a prefix longer than an index key holds, so index keys
/// collide and queries must re-check real values.
fn long(suffix: &str) -> String {
    format!("{}{suffix}", "p".repeat(MAX_INDEXED_STRING_BYTES + 3))
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("ann".to_owned()),
        Just("bob".to_owned()),
        Just("b".to_owned()),
        Just(String::new()),
        Just(long("")),
        Just(long("a")),
        Just(long("b")),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![8 => (-1i64..6).prop_map(Value::from), 1 => Just(json!(2.5)), 1 => Just(json!(-0.5)), 1 => Just(json!(1e20))]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![3 => number(), 3 => string().prop_map(Value::from), 1 => Just(json!(true)), 1 => Just(Value::Null)]
}

fn customer() -> impl Strategy<Value = Value> {
    let age = prop_oneof![12 => (0i64..6).prop_map(Value::from), 1 => Just(json!(-1)), 1 => Just(json!(2.5)), 1 => Just(json!("7"))];
    (
        proptest::option::weighted(0.95, string()),
        proptest::option::weighted(0.8, age),
        proptest::option::weighted(0.8, scalar()),
    )
        .prop_map(|(name, age, email)| {
            let mut o = serde_json::Map::new();
            if let Some(n) = name {
                o.insert("name".into(), n.into());
            }
            if let Some(a) = age {
                o.insert("age".into(), a);
            }
            if let Some(e) = email {
                o.insert("contact".into(), json!({"email": e}));
            }
            Value::Object(o)
        })
}

fn note() -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => (
            proptest::option::of(prop_oneof![6 => number(), 1 => scalar()]),
            proptest::option::of(prop_oneof![6 => string().prop_map(Value::from), 1 => scalar()]),
        )
            .prop_map(|(n, s)| {
            let mut o = serde_json::Map::new();
            if let Some(n) = n {
                o.insert("n".into(), n);
            }
            if let Some(s) = s {
                o.insert("s".into(), s);
            }
            Value::Object(o)
        }),
        1 => prop_oneof![Just(json!([1, 2])), Just(json!("text"))],
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Write(Vec<WriteGen>),
    Get(usize, usize),
    Query(Query),
    Reopen,
}

/// A write whose expected version is picked relative to the record's
/// version when the step runs, so compare-and-set succeeds often enough
/// for records to pile up and change.
#[derive(Debug, Clone)]
struct WriteGen {
    collection: usize,
    id: usize,
    /// `None` deletes.
    data: Option<Value>,
    expect: Expect,
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    Any,
    Absent,
    Current,
    /// Current + this, never right.
    Ahead(u64),
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![4 => Just(Expect::Any), 1 => Just(Expect::Absent), 4 => Just(Expect::Current), 1 => (1u64..3).prop_map(Expect::Ahead)]
}

fn write_gen() -> impl Strategy<Value = WriteGen> {
    (0..2usize, 0..IDS.len(), customer(), note(), 0..4u8, expect()).prop_map(|(c, id, cust, note, kind, expect)| {
        WriteGen { collection: c, id, data: (kind > 0).then_some(if c == 0 { cust } else { note }), expect }
    })
}

/// The batch `gens` stands for, given the versions in `model`; each write
/// sees the versions the earlier writes of the batch leave.
fn resolve(model: &Model, gens: &[WriteGen]) -> Vec<RecordWrite> {
    let mut versions: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    gens.iter()
        .map(|g| {
            let key = (COLLECTIONS[g.collection].to_owned(), IDS[g.id].to_owned());
            let current =
                *versions.entry((g.collection, g.id)).or_insert_with(|| model.get(&key).map_or(0, |(v, _)| *v));
            let expected_version = match g.expect {
                Expect::Any => None,
                Expect::Absent => Some(0),
                Expect::Current => Some(current),
                Expect::Ahead(n) => Some(current + n),
            };
            let after = if g.data.is_some() { current + 1 } else { 0 };
            versions.insert((g.collection, g.id), after);
            let (collection, id) = key;
            match &g.data {
                Some(data) => RecordWrite::Put { collection, id, data: data.clone(), expected_version },
                None => RecordWrite::Delete { collection, id, expected_version },
            }
        })
        .collect()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![Just(Op::Eq), Just(Op::Lt), Just(Op::Le), Just(Op::Gt), Just(Op::Ge)]
}

/// Whether conditions on each field of [`FIELDS`] usually compare with a
/// number (`Some(true)`), a string (`Some(false)`) or either (`None`), so
/// most queries can match something.
const FIELD_TYPES: [[Option<bool>; 3]; 2] = [[Some(true), None, Some(false)], [Some(true), Some(false), Some(true)]];

fn query() -> impl Strategy<Value = Query> {
    let condition = (0..3usize, op(), number(), string(), 0..6u8);
    let count = prop_oneof![1 => Just(0usize), 3 => Just(1), 2 => Just(2)];
    let conditions = (proptest::collection::vec(condition, 2), count).prop_map(|(mut v, n)| {
        v.truncate(n);
        v
    });
    (0..2usize, conditions, 1u32..4).prop_map(|(c, conds, limit)| Query {
        collection: COLLECTIONS[c].into(),
        conditions: conds
            .into_iter()
            .map(|(f, op, number, string, roll)| {
                let numeric = match FIELD_TYPES[c][f] {
                    Some(numeric) => numeric != (roll == 0),
                    None => roll % 2 == 0,
                };
                Condition { field: FIELDS[c][f].into(), op, value: if numeric { number } else { string.into() } }
            })
            .collect(),
        limit,
        cursor: None,
    })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => proptest::collection::vec(write_gen(), 1..=3).prop_map(Step::Write),
        2 => (0..2usize, 0..IDS.len()).prop_map(|(c, i)| Step::Get(c, i)),
        5 => query().prop_map(Step::Query),
        1 => Just(Step::Reopen),
    ]
}

/// The outcome of a batch, in terms both sides can produce.
#[derive(Debug, PartialEq)]
enum Outcome {
    Versions(Vec<u64>),
    Conflict { expected: u64, actual: u64 },
    Schema,
    NotAnObject,
}

type Model = BTreeMap<(String, String), (u64, Value)>;

fn model_valid(collection: &str, data: &Value) -> Result<(), Outcome> {
    let Some(o) = data.as_object() else { return Err(Outcome::NotAnObject) };
    if collection != "customers" {
        return Ok(());
    }
    let name_ok = o.get("name").is_some_and(Value::is_string);
    let age_ok = o.get("age").is_none_or(|a| a.as_i64().is_some_and(|a| a >= 0));
    if name_ok && age_ok { Ok(()) } else { Err(Outcome::Schema) }
}

fn model_write(model: &mut Model, writes: &[RecordWrite]) -> Outcome {
    let mut next = model.clone();
    let mut versions = Vec::new();
    for w in writes {
        let key = (w.collection().to_owned(), w.id().to_owned());
        if let RecordWrite::Put { data, .. } = w
            && let Err(e) = model_valid(w.collection(), data)
        {
            return e;
        }
        let actual = next.get(&key).map_or(0, |(v, _)| *v);
        if let Some(expected) = w.expected_version()
            && expected != actual
        {
            return Outcome::Conflict { expected, actual };
        }
        match w {
            RecordWrite::Put { data, .. } => {
                next.insert(key, (actual + 1, data.clone()));
                versions.push(actual + 1);
            }
            RecordWrite::Delete { .. } => {
                next.remove(&key);
                versions.push(0);
            }
        }
    }
    *model = next;
    Outcome::Versions(versions)
}

fn store_write(store: &Store, reg: &Collections, writes: &[RecordWrite]) -> Outcome {
    match records::write(store, reg, writes) {
        Ok(v) => Outcome::Versions(v),
        Err(RecordError::Conflict { expected, actual, .. }) => Outcome::Conflict { expected, actual },
        Err(RecordError::Schema { .. }) => Outcome::Schema,
        Err(RecordError::NotAnObject { .. }) => Outcome::NotAnObject,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn lookup<'a>(data: &'a Value, field: &str) -> Option<&'a Value> {
    field.split('.').try_fold(data, |v, s| v.as_object()?.get(s))
}

/// Small numbers only, so f64 comparison is exact here.
fn model_compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        _ => None,
    }
}

fn model_matches(data: &Value, c: &Condition) -> bool {
    let Some(ord) = lookup(data, &c.field).and_then(|v| model_compare(v, &c.value)) else { return false };
    match c.op {
        Op::Eq => ord.is_eq(),
        Op::Lt => ord.is_lt(),
        Op::Le => ord.is_le(),
        Op::Gt => ord.is_gt(),
        Op::Ge => ord.is_ge(),
    }
}

/// Index order of a (number or string) value: numbers first, then strings
/// by their first MAX_INDEXED_STRING_BYTES bytes.
fn index_order(v: &Value) -> (u8, f64, Vec<u8>) {
    match v {
        Value::Number(n) => (0, n.as_f64().unwrap(), vec![]),
        Value::String(s) => (1, 0.0, s.as_bytes()[..s.len().min(MAX_INDEXED_STRING_BYTES)].to_vec()),
        other => panic!("indexed match on {other}"),
    }
}

fn model_query(model: &Model, q: &Query) -> Vec<(String, u64, Value)> {
    let mut found: Vec<(String, u64, Value)> = model
        .iter()
        .filter(|((c, _), (_, data))| c == &q.collection && q.conditions.iter().all(|k| model_matches(data, k)))
        .map(|((_, id), (v, data))| (id.clone(), *v, data.clone()))
        .collect();
    let index = q.conditions.iter().find(|k| q.collection == "customers" && INDEXED.contains(&k.field.as_str()));
    if let Some(k) = index {
        let order = |data: &Value| index_order(lookup(data, &k.field).unwrap());
        found.sort_by(|a, b| {
            let (x, y) = (order(&a.2), order(&b.2));
            (x.0, x.2.as_slice()).cmp(&(y.0, y.2.as_slice())).then(x.1.total_cmp(&y.1)).then(a.0.cmp(&b.0))
        });
    }
    found
}

/// Every page of `q`, checking each page's size.
fn store_query(store: &Store, reg: &Collections, q: &Query) -> Vec<(String, u64, Value)> {
    let mut q = q.clone();
    let mut out = Vec::new();
    for _ in 0..100 {
        let page = records::query(store, reg, &q).unwrap();
        assert!(page.records.len() <= q.limit as usize, "page over its limit");
        out.extend(page.records.into_iter().map(|r| (r.id, r.version, r.data)));
        match page.next_cursor {
            None => return out,
            next => q.cursor = next,
        }
    }
    panic!("query {q:?} did not finish in 100 pages");
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.redb");
    let reg = registry();
    let mut store = Store::open(&path).unwrap();
    let mut model = Model::new();
    for step in steps {
        match step {
            Step::Write(gens) => {
                let writes = resolve(&model, &gens);
                let expected = model_write(&mut model, &writes);
                prop_assert_eq!(store_write(&store, &reg, &writes), expected, "batch {:?}", writes);
            }
            Step::Get(c, i) => {
                let got = records::get(&store, COLLECTIONS[c], IDS[i]).unwrap().map(|r| (r.version, r.data));
                let want = model.get(&(COLLECTIONS[c].to_owned(), IDS[i].to_owned())).cloned();
                prop_assert_eq!(got, want);
            }
            Step::Query(q) => {
                prop_assert_eq!(store_query(&store, &reg, &q), model_query(&model, &q), "query {:?}", q);
            }
            Step::Reopen => {
                drop(store);
                store = Store::open(&path).unwrap();
            }
        }
    }
    for c in COLLECTIONS {
        let everything = Query { collection: c.into(), conditions: vec![], limit: 2, cursor: None };
        prop_assert_eq!(store_query(&store, &reg, &everything), model_query(&model, &everything));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_store_behaves_like_a_map(steps in proptest::collection::vec(step(), 20..=40)) {
        run(steps)?;
    }
}
