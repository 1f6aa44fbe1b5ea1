//! The structured store under load: put, get and query latencies with `n`
//! records in one collection that has a schema and two indexes, on a real
//! (fsynced) redb file in the temp dir.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::{Percentiles, percentiles};
use crate::memory::Store;
use crate::memory::records::{self, CollectionSpec, Collections, Condition, Op, Query, RecordWrite};

/// Records per commit while loading, measured as the batched put.
const BATCH: usize = 100;
/// Most single-record commits measured (each one is an fsync).
const MAX_PUT_ONE_SAMPLES: usize = 1000;
/// Most gets and queries measured per series.
const MAX_READ_SAMPLES: usize = 5000;
/// Records a range query returns.
const RANGE_LIMIT: u32 = 50;
const COLLECTION: &str = "customers";

/// Latencies of one run.
#[derive(Debug, Clone)]
pub struct RecordsReport {
    pub records: usize,
    /// One record per commit (an update of an existing record).
    pub put_one: Percentiles,
    pub put_one_samples: usize,
    /// 100 new records per commit, per commit.
    pub put_batch: Percentiles,
    pub put_batch_samples: usize,
    pub get: Percentiles,
    /// Equality on an indexed string field (one match).
    pub query_eq: Percentiles,
    /// A range on an indexed number field, first page of 50.
    pub query_range: Percentiles,
    pub read_samples: usize,
    pub file_bytes: u64,
}

/// A small deterministic generator, so runs are comparable.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn id(i: usize) -> String {
    format!("cust-{i:08}")
}

fn email(i: usize) -> String {
    format!("customer{i}@example.com")
}

/// Spread over 0..n/10 so a range of width 10 holds ~100 records.
fn amount(i: usize, n: usize) -> f64 {
    ((i * 7919) % n) as f64 / 10.0
}

fn record(i: usize, n: usize, touch: u64) -> Value {
    let tier = ["free", "pro", "enterprise"][i % 3];
    json!({
        "name": format!("Customer {i}"),
        "tier": tier,
        "amount": amount(i, n),
        "contact": {"email": email(i), "phone": "+1 555 0100"},
        "notes": "met at the spring fair; wants a quote for 20 seats",
        "touched": touch,
    })
}

fn collections() -> anyhow::Result<Collections> {
    let spec = CollectionSpec {
        schema: Some(json!({
            "type": "object",
            "required": ["name", "amount", "contact"],
            "properties": {
                "name": {"type": "string", "maxLength": 200},
                "tier": {"enum": ["free", "pro", "enterprise"]},
                "amount": {"type": "number", "minimum": 0},
                "contact": {
                    "type": "object",
                    "required": ["email"],
                    "properties": {"email": {"type": "string"}, "phone": {"type": "string"}}
                }
            }
        })),
        indexes: vec!["contact.email".into(), "amount".into()],
        retention_hours: None,
    };
    Ok(Collections::new(BTreeMap::from([(COLLECTION.to_owned(), spec)]))?)
}

fn timed(samples: &mut Vec<Duration>, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    let t = Instant::now();
    f()?;
    samples.push(t.elapsed());
    Ok(())
}

/// Loads `n` records and measures every series against them.
pub fn run(n: usize) -> anyhow::Result<RecordsReport> {
    anyhow::ensure!(n >= BATCH, "the records benchmark needs at least {BATCH} records");
    let dir =
        std::env::temp_dir().join(format!("keel-bench-records-{}-{}", std::process::id(), crate::memory::now_ms()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = measure(&dir, n);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(dir: &std::path::Path, n: usize) -> anyhow::Result<RecordsReport> {
    let path = dir.join("keel.redb");
    let store = Store::open(&path)?;
    let txn = store.db().begin_write()?;
    records::create_tables(&txn)?;
    txn.commit()?;
    let reg = collections()?;
    let put = |i: usize, touch: u64, expected_version| RecordWrite::Put {
        collection: COLLECTION.into(),
        id: id(i),
        data: record(i, n, touch),
        expected_version,
    };

    let mut put_batch = Vec::with_capacity(n / BATCH + 1);
    for start in (0..n).step_by(BATCH) {
        let writes: Vec<_> = (start..(start + BATCH).min(n)).map(|i| put(i, 0, Some(0))).collect();
        timed(&mut put_batch, || Ok(records::write(&store, &reg, &writes).map(drop)?))?;
    }

    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let put_one_samples = (n / 10).clamp(10, MAX_PUT_ONE_SAMPLES);
    let mut put_one = Vec::with_capacity(put_one_samples);
    for touch in 1..=put_one_samples as u64 {
        let write = [put(rng.below(n), touch, None)];
        timed(&mut put_one, || Ok(records::write(&store, &reg, &write).map(drop)?))?;
    }

    let read_samples = n.min(MAX_READ_SAMPLES);
    let mut get = Vec::with_capacity(read_samples);
    for _ in 0..read_samples {
        let i = rng.below(n);
        timed(&mut get, || {
            let found = records::get(&store, COLLECTION, &id(i))?;
            anyhow::ensure!(found.is_some(), "record {i} is missing");
            Ok(())
        })?;
    }

    let query = |conditions, limit| Query { collection: COLLECTION.into(), conditions, limit, cursor: None };
    let mut query_eq = Vec::with_capacity(read_samples);
    for _ in 0..read_samples {
        let i = rng.below(n);
        let q = query(vec![Condition { field: "contact.email".into(), op: Op::Eq, value: json!(email(i)) }], 10);
        timed(&mut query_eq, || {
            let page = records::query(&store, &reg, &q)?;
            anyhow::ensure!(page.records.len() == 1, "{} records for one email", page.records.len());
            Ok(())
        })?;
    }

    let mut query_range = Vec::with_capacity(read_samples);
    let top = (n / 10) as f64;
    for _ in 0..read_samples {
        let from = (rng.below(n / 10) as f64).min(top - 20.0).max(0.0);
        let q = query(
            vec![
                Condition { field: "amount".into(), op: Op::Ge, value: json!(from) },
                Condition { field: "amount".into(), op: Op::Lt, value: json!(from + 20.0) },
            ],
            RANGE_LIMIT,
        );
        timed(&mut query_range, || {
            let page = records::query(&store, &reg, &q)?;
            anyhow::ensure!(!page.records.is_empty(), "no records in the amount range from {from}");
            Ok(())
        })?;
    }

    drop(store);
    let file_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    Ok(RecordsReport {
        records: n,
        put_one_samples: put_one.len(),
        put_one: percentiles(put_one),
        put_batch_samples: put_batch.len(),
        put_batch: percentiles(put_batch),
        get: percentiles(get),
        query_eq: percentiles(query_eq),
        query_range: percentiles(query_range),
        read_samples,
        file_bytes,
    })
}

impl std::fmt::Display for RecordsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
        writeln!(
            f,
            "records: {} in one collection (schema, 2 indexes), file {:.1} MiB, durable commits",
            self.records,
            self.file_bytes as f64 / (1024.0 * 1024.0)
        )?;
        writeln!(f, "{:<44} {:>8} {:>12} {:>12}", "case", "samples", "p50", "p99")?;
        let rows = [
            ("put, 1 record per commit", self.put_one_samples, self.put_one),
            ("put, 100 records per commit (per commit)", self.put_batch_samples, self.put_batch),
            ("get by id", self.read_samples, self.get),
            ("query: indexed equality", self.read_samples, self.query_eq),
            ("query: indexed range, limit 50", self.read_samples, self.query_range),
        ];
        for (case, samples, p) in rows {
            writeln!(f, "{case:<44} {samples:>8} {:>12} {:>12}", us(p.p50), us(p.p99))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_small_run_reports_every_series() {
        let report = super::run(500).unwrap();
        assert_eq!((report.records, report.put_batch_samples, report.put_one_samples), (500, 5, 50));
        let text = report.to_string();
        assert!(text.contains("indexed range") && text.contains("p99"), "{text}");
    }

    /// `cargo test --release -p keel-host --lib bench::records -- --ignored --nocapture`
    #[test]
    #[ignore = "takes minutes: run it in release to measure"]
    fn hundred_thousand_records() {
        println!("{}", super::run(100_000).unwrap());
    }
}
