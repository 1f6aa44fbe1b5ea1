//! Runs a script of record and semantic-memory operations; see README.md.

use keel_sdk::memory::{self, Comparison, Condition, RecallRequest, RecordQuery, WriteResult};
use keel_sdk::{Error, Outcome, Task, agent};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Script {
    ops: Vec<Value>,
    #[serde(default)]
    fail: bool,
}

fn s(op: &Value, field: &str) -> String {
    op[field].as_str().unwrap_or_default().to_owned()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

fn request(v: &Value) -> RecallRequest {
    RecallRequest {
        namespace: s(v, "namespace"),
        query: s(v, "query"),
        k: v["k"].as_u64().unwrap_or(5) as u32,
        tags: strings(&v["tags"]),
    }
}

fn hits(hits: Vec<memory::Hit>) -> Value {
    hits.into_iter().map(|h| json!({"id": h.id, "text": h.text, "tags": h.tags, "score": h.score})).collect()
}

/// `written(v)` as `v`; `conflict(v)` as `{"conflict": v}`.
fn written(result: WriteResult) -> Value {
    match result {
        WriteResult::Written(v) => json!(v),
        WriteResult::Conflict(v) => json!({ "conflict": v }),
    }
}

fn run(op: &Value) -> Result<Value, Error> {
    let expected = op["expected"].as_u64();
    match op["op"].as_str().unwrap_or_default() {
        "put-record" => {
            memory::put_record(&s(op, "collection"), &s(op, "id"), &op["data"].to_string(), expected).map(written)
        }
        "get-record" => memory::get_record(&s(op, "collection"), &s(op, "id")).map(|r| {
            r.map_or(
                Value::Null,
                |r| json!({"version": r.version, "data": serde_json::from_str::<Value>(&r.data).unwrap_or_default()}),
            )
        }),
        "delete-record" => memory::delete_record(&s(op, "collection"), &s(op, "id"), expected).map(written),
        "query" => {
            let conditions = op["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| Condition {
                    field: s(c, "field"),
                    op: match c["op"].as_str().unwrap_or("eq") {
                        "lt" => Comparison::Lt,
                        "le" => Comparison::Le,
                        "gt" => Comparison::Gt,
                        "ge" => Comparison::Ge,
                        _ => Comparison::Eq,
                    },
                    value: c["value"].to_string(),
                })
                .collect();
            let q = RecordQuery {
                collection: s(op, "collection"),
                conditions,
                limit: op["limit"].as_u64().unwrap_or(0) as u32,
                cursor: op["cursor"].as_str().map(str::to_owned),
            };
            memory::query_records(&q).map(|page| {
                let ids: Vec<String> = page.records.into_iter().map(|r| r.id).collect();
                json!({"ids": ids, "next": page.next_cursor})
            })
        }
        "remember" => {
            let note = memory::Note { text: s(op, "text"), tags: strings(&op["tags"]), metadata: "{}".into() };
            memory::remember(&s(op, "namespace"), &note).map(Value::from)
        }
        "remember-many" => {
            let notes: Vec<memory::Note> = op["texts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| memory::Note { text: t.as_str().unwrap_or_default().to_owned(), tags: Vec::new(), metadata: "{}".into() })
                .collect();
            memory::remember_many(&s(op, "namespace"), &notes).map(Value::from)
        }
        "recall" => memory::recall(&request(op)).map(hits),
        "recall-many" => {
            let requests: Vec<RecallRequest> = op["requests"].as_array().into_iter().flatten().map(request).collect();
            memory::recall_many(&requests).map(|all| all.into_iter().map(hits).collect())
        }
        "forget" => memory::forget(&s(op, "namespace"), &s(op, "id")).map(Value::from),
        "put" => {
            let (ns, key, value) = (s(op, "namespace"), s(op, "key"), s(op, "value").into_bytes());
            match op["ttl-ms"].as_u64() {
                Some(ttl) => memory::put_expiring(&ns, &key, &value, ttl),
                None => memory::put(&ns, &key, &value),
            }
            .map(|()| Value::Null)
        }
        "get" => memory::get(&s(op, "namespace"), &s(op, "key"))
            .map(|v| v.map_or(Value::Null, |v| Value::from(String::from_utf8_lossy(&v).into_owned()))),
        other => Err(Error::InvalidInput(format!("unknown op {other}"))),
    }
}

fn handle(task: Task) -> Result<Outcome, Error> {
    let script: Script = task.input_json()?;
    let results: Vec<Value> = script
        .ops
        .iter()
        .map(|op| {
            run(op).unwrap_or_else(|e| {
                let (case, detail) = e.case();
                json!({"error": case, "detail": detail})
            })
        })
        .collect();
    if script.fail {
        return Err(Error::InvalidInput("failing on purpose after the ops".into()));
    }
    Outcome::json(&results)
}

agent!(handle);
