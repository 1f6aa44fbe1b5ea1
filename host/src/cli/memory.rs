//! `keel memory`: the operator's view of the memory plane.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::Subcommand;

use crate::memory::audit::AuditEntry;
use crate::memory::committer::{Batch, Mutation};
use crate::memory::kv::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::memory::now_ms;
use crate::memory::records::{self, Condition, Op, Query};
use crate::memory::semantic::RecallFilter;
use crate::workspace::Workspace;
use serde_json::Value;

#[derive(Debug, Subcommand)]
pub enum MemoryCommand {
    /// Print the value of KEY in NAMESPACE (as text when it is UTF-8).
    Get { namespace: String, key: String },
    /// Store VALUE under KEY in NAMESPACE (audited as the operator).
    Put {
        namespace: String,
        key: String,
        value: String,
        /// Expire the entry after this many milliseconds.
        #[arg(long)]
        ttl_ms: Option<u64>,
    },
    /// Delete KEY from NAMESPACE, or with --note the semantic note with
    /// that id (audited as the operator).
    Forget {
        namespace: String,
        key: String,
        /// KEY is a note id from `keel memory recall`.
        #[arg(long)]
        note: bool,
    },
    /// Find records of COLLECTION, e.g. `--where 'value>=500' --where company=acme`.
    Query {
        collection: String,
        /// FIELD OP VALUE with OP one of = < <= > >=; VALUE is JSON or text.
        #[arg(long = "where", value_name = "CONDITION")]
        conditions: Vec<String>,
        /// Most records to print.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Remember TEXT as a semantic note in NAMESPACE (audited as the operator).
    Remember {
        namespace: String,
        text: String,
        /// A tag for filtering recalls (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Recall the notes of NAMESPACE most similar to QUERY.
    Recall {
        namespace: String,
        query: String,
        /// How many hits.
        #[arg(short, default_value_t = 5)]
        k: u32,
        /// Only notes with this tag (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Sizes and counts per namespace, schema version, audit length.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(ws: &Workspace, cmd: MemoryCommand) -> anyhow::Result<()> {
    let store = ws.store();
    match cmd {
        MemoryCommand::Get { namespace, key } => match store.kv_get(&namespace, &key)? {
            Some(v) => match String::from_utf8(v) {
                Ok(text) => println!("{text}"),
                Err(e) => println!("{}", hex::encode(e.into_bytes())),
            },
            None => bail!("no live entry `{key}` in namespace `{namespace}`: see `keel memory stats`"),
        },
        MemoryCommand::Put { namespace, key, value, ttl_ms } => {
            if key.is_empty() || key.len() > MAX_KEY_BYTES || value.len() > MAX_VALUE_BYTES {
                bail!("keys are 1 to {MAX_KEY_BYTES} bytes and values at most {MAX_VALUE_BYTES} bytes");
            }
            let target = format!("{namespace}/{key}");
            let mutation = Mutation::KvPut {
                namespace,
                key,
                value: value.into_bytes(),
                expires_at_ms: ttl_ms.map(|t| now_ms().saturating_add(t)),
            };
            let entry = AuditEntry::allowed("operator", "memory.put", target.clone());
            store.commit_blocking(Batch { mutations: vec![mutation], audit: vec![entry] })?;
            println!("stored {target}");
        }
        MemoryCommand::Forget { namespace, key, note: true } => {
            let plane = ws.memory_plane()?;
            let entry = AuditEntry::allowed("operator", "memory.forget", format!("{namespace}/{key}"));
            if !plane.semantic.forget(store, &namespace, &key, entry)? {
                bail!("no note `{key}` in namespace `{namespace}`: `keel memory recall` shows note ids");
            }
            println!("forgot note {namespace}/{key}");
        }
        MemoryCommand::Query { collection, conditions, limit } => {
            let plane = ws.memory_plane()?;
            let conditions = conditions.iter().map(|c| parse_condition(c)).collect::<anyhow::Result<Vec<_>>>()?;
            let q = Query { collection, conditions, limit, cursor: None };
            let page = records::query(store, &plane.collections, &q)?;
            for r in &page.records {
                println!("{} v{} {}", r.id, r.version, r.data);
            }
            if page.records.is_empty() {
                println!("no matching records");
            }
            if page.next_cursor.is_some() {
                println!("(more records match: raise --limit)");
            }
        }
        MemoryCommand::Remember { namespace, text, tags } => {
            let plane = ws.memory_plane()?;
            let entry = AuditEntry::allowed("operator", "memory.remember", namespace.clone());
            let note = plane.semantic.remember(store, &namespace, &text, tags, serde_json::json!({}), entry)?;
            println!("remembered {namespace}/{}", note.id);
        }
        MemoryCommand::Recall { namespace, query, k, tags } => {
            let plane = ws.memory_plane()?;
            let filter = RecallFilter { tags };
            let half_life = plane.decay.half_life(&namespace);
            let hits = plane.semantic.recall(&namespace, &query, k as usize, &filter, now_ms(), half_life)?;
            if hits.is_empty() {
                println!("nothing recalled from `{namespace}`");
            }
            for h in hits {
                println!("{:.3}  {}  {}  [{}]", h.score, h.note.id, h.note.text, h.note.tags.join(", "));
            }
        }
        MemoryCommand::Forget { namespace, key, note: false } => {
            if store.kv_get(&namespace, &key)?.is_none() {
                bail!("no live entry `{key}` in namespace `{namespace}`: nothing to forget");
            }
            let target = format!("{namespace}/{key}");
            let mutation = Mutation::KvDelete { namespace, key };
            let entry = AuditEntry::allowed("operator", "memory.delete", target.clone());
            store.commit_blocking(Batch { mutations: vec![mutation], audit: vec![entry] })?;
            println!("forgot {target}");
        }
        MemoryCommand::Stats { json } => {
            let stats = store.kv_stats()?;
            let audit = store.audit_tail(1)?.first().map_or(0, |e| e.seq);
            let file_bytes = std::fs::metadata(store.path()).map_or(0, |m| m.len());
            if json {
                let namespaces: BTreeMap<_, _> = stats
                    .iter()
                    .map(|(ns, s)| (ns.clone(), serde_json::json!({"entries": s.entries, "bytes": s.bytes})))
                    .collect();
                let v = serde_json::json!({
                    "schema_version": store.schema_version()?,
                    "file_bytes": file_bytes,
                    "audit_entries": audit,
                    "namespaces": namespaces,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!("{} (schema v{}, {} KiB)", store.path().display(), store.schema_version()?, file_bytes / 1024);
            println!("audit log: {audit} entries");
            if stats.is_empty() {
                println!("no key/value entries yet");
            } else {
                println!("{:<32} {:>10} {:>12}", "NAMESPACE", "ENTRIES", "BYTES");
                for (ns, s) in &stats {
                    println!("{ns:<32} {:>10} {:>12}", s.entries, s.bytes);
                }
            }
        }
    }
    Ok(())
}

/// Parses `FIELD OP VALUE` (OP one of `>=`, `<=`, `=`, `<`, `>`).
fn parse_condition(text: &str) -> anyhow::Result<Condition> {
    for (token, op) in [(">=", Op::Ge), ("<=", Op::Le), ("=", Op::Eq), ("<", Op::Lt), (">", Op::Gt)] {
        if let Some((field, value)) = text.split_once(token) {
            let value = serde_json::from_str(value.trim()).unwrap_or_else(|_| Value::String(value.trim().to_owned()));
            return Ok(Condition { field: field.trim().to_owned(), op, value });
        }
    }
    bail!("--where {text:?} is not FIELD OP VALUE: write e.g. --where 'value>=500' or --where company=acme")
}
