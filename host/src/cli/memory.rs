//! `keel memory`: the operator's view of the memory plane.

use anyhow::bail;
use clap::Subcommand;

use crate::memory::audit::AuditEntry;
use crate::memory::committer::{Batch, Mutation};
use crate::memory::kv::{MAX_KEY_BYTES, MAX_VALUE_BYTES, entry_bytes};
use crate::memory::records::{self, Condition, Op, Query};
use crate::memory::semantic::{RecallFilter, storage};
use crate::memory::{now_ms, reclaim};
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
    /// Sizes, counts, bounds and index state of every namespace and
    /// collection; schema version; audit length.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete expired entries and what is past its retention now, instead
    /// of waiting for the background reclaimer (audited as `host`).
    Reclaim,
    /// Re-embed the notes whose vectors another embedder made (after
    /// changing `[memory] embedder`), with progress; audited as the operator.
    Reindex,
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
            let plane = ws.memory_plane()?;
            let bound = plane.rules.kv_bound(&namespace);
            if entry_bytes(&key, value.len()) > bound.max_bytes {
                bail!(
                    "`{key}` and its value take {} bytes, more than namespace `{namespace}` may hold ({} bytes): \
                     raise `max_kib` under [memory.namespaces.{namespace}] in keel.toml",
                    entry_bytes(&key, value.len()),
                    bound.max_bytes
                );
            }
            let now = now_ms();
            let expires_at_ms = plane.rules.kv_expiry(&namespace, now, ttl_ms.map(|t| now.saturating_add(t)));
            let mutation = Mutation::KvPut { namespace, key, value: value.into_bytes(), expires_at_ms, bound };
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
                println!("{} v{} ({}) {}", r.id, r.version, shown_owner(r.owner.as_deref()), r.data);
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
            // The operator sees every plugin's notes; each line names the owner.
            let filter = RecallFilter { tags, owners: None };
            let half_life = plane.decay.half_life(&namespace);
            let hits = plane.semantic.recall(&namespace, &query, k as usize, &filter, now_ms(), half_life)?;
            if hits.is_empty() {
                println!("nothing recalled from `{namespace}`");
            }
            for h in hits {
                let owner = shown_owner(h.note.owner.as_deref());
                println!("{:.3}  {}  {}  [{}]  ({owner})", h.score, h.note.id, h.note.text, h.note.tags.join(", "));
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
        MemoryCommand::Stats { json } => print_stats(ws, json)?,
        MemoryCommand::Reindex => reindex(ws)?,
        MemoryCommand::Reclaim => {
            let plane = ws.memory_plane()?;
            let report = reclaim::reclaim_once(store, &plane, now_ms())?;
            let kinds = [
                ("expired key/value entries", &report.expired_entries),
                ("notes past retention", &report.notes),
                ("records past retention", &report.records),
            ];
            for (what, counts) in kinds {
                for (name, n) in counts {
                    println!("deleted {n} {what} in `{name}`");
                }
            }
            if report.total() == 0 {
                println!("nothing to reclaim");
            }
        }
    }
    Ok(())
}

/// Who owns a record or note, for listings: `by NAME`, or `shared` for
/// the operator's and those written before owners were recorded.
fn shown_owner(owner: Option<&str>) -> String {
    owner.map_or_else(|| "shared".to_owned(), |o| format!("by {o}"))
}

/// `keel memory reindex`: re-embeds stale notes with a progress bar on a
/// terminal (a line per tenth elsewhere).
fn reindex(ws: &Workspace) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let plane = ws.memory_plane()?;
    if let Some(line) = &plane.embedder_fallback {
        // Re-embedding now would move notes to the fallback, away from the
        // model the operator chose.
        bail!("not reindexing while the configured embedder is unusable: {line}");
    }
    let embedder = plane.semantic.embedder().describe();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        let style =
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} notes re-embedded ({per_sec}, {eta} left)")
                .expect("valid template");
        bar.set_style(style);
        bar
    });
    let mut last_tenth = 0;
    let report = plane.semantic.reindex(ws.store(), "operator", |done, total| match &bar {
        Some(bar) => {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        None if total > 0 && done * 10 / total > last_tenth => {
            last_tenth = done * 10 / total;
            eprintln!("reindex: {done}/{total} notes re-embedded");
        }
        None => {}
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if report.stale == 0 {
        println!("nothing to reindex: every note was embedded by {embedder}");
    } else {
        println!("re-embedded {} notes with {embedder}", report.reembedded);
        if report.skipped > 0 {
            println!("{} notes were forgotten or rewritten meanwhile and left as they are", report.skipped);
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

/// `keel memory stats`: what the memory plane holds, per namespace and
/// collection, with bounds, retention and index state.
fn print_stats(ws: &Workspace, json: bool) -> anyhow::Result<()> {
    let store = ws.store();
    let plane = ws.memory_plane()?;
    if json {
        let v = crate::memory::stats::stats_json(store, &plane)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let kv = store.kv_stats()?;
    let collections = records::stats(store)?;
    let notes = storage::note_counts(store)?;
    let audit = store.audit_tail(1)?.first().map_or(0, |e| e.seq);
    let file_bytes = std::fs::metadata(store.path()).map_or(0, |m| m.len());
    let retention = |ns: &str| crate::memory::stats::retention_hours(&plane, ns);
    let index_state = |ns: &str| crate::memory::stats::index_state(&plane, ns);
    println!("{} (schema v{}, {} KiB)", store.path().display(), store.schema_version()?, file_bytes / 1024);
    println!("audit log: {audit} entries");
    let hours = |h: Option<f64>| h.map_or("-".to_owned(), |h| format!("{h}h"));
    println!();
    if kv.is_empty() {
        println!("key/value: no entries yet");
    } else {
        println!(
            "{:<24} {:>9} {:>8} {:>12} {:>22} {:>10}",
            "NAMESPACE", "ENTRIES", "EXPIRED", "BYTES", "BOUND", "RETENTION"
        );
        for (ns, s) in &kv {
            let b = plane.rules.kv_bound(ns);
            let bound = format!("{} / {} KiB", b.max_entries, b.max_bytes / 1024);
            println!(
                "{ns:<24} {:>9} {:>8} {:>12} {bound:>22} {:>10}",
                s.entries,
                s.expired,
                s.bytes,
                hours(retention(ns))
            );
        }
    }
    println!();
    if collections.is_empty() {
        println!("records: none yet");
    } else {
        println!("{:<24} {:>9} {:>10}  INDEXES", "COLLECTION", "RECORDS", "RETENTION");
        for (c, s) in &collections {
            let indexes: Vec<String> =
                s.indexes.iter().map(|(f, ready)| format!("{f}{}", if *ready { "" } else { " (stale)" })).collect();
            let retention = plane.rules.collections.get(c).map(|d| d.as_secs_f64() / 3600.0);
            println!("{c:<24} {:>9} {:>10}  {}", s.records, hours(retention), indexes.join(", "));
        }
    }
    println!();
    if notes.is_empty() {
        println!("notes: none yet");
    } else {
        println!("{:<24} {:>9} {:>10}  INDEX", "NAMESPACE", "NOTES", "RETENTION");
        for (ns, n) in &notes {
            println!("{ns:<24} {n:>9} {:>10}  {}", hours(retention(ns)), index_state(ns));
        }
    }
    println!("embedder: {}", plane.semantic.embedder().describe());
    if let Some(line) = &plane.embedder_fallback {
        println!("{line}");
    }
    let stale: usize = plane.semantic.stale_notes().values().sum();
    if stale > 0 {
        println!("{stale} notes embedded by another embedder are left out of recall: run `keel memory reindex`");
    }
    Ok(())
}
