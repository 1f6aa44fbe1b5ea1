//! What the memory plane holds, per namespace and collection: the one
//! description that `keel memory stats --json` prints and
//! `GET /api/v1/memory` serves.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Store;
use super::plane::MemoryPlane;
use super::records;
use super::semantic::storage;

/// The retention of namespace `ns`, in hours, if it has one.
pub fn retention_hours(plane: &MemoryPlane, ns: &str) -> Option<f64> {
    plane.rules.namespace_retention(ns).map(|d| d.as_secs_f64() / 3600.0)
}

/// How namespace `ns` is searched: `exact`, or `graph (SLOTS[, N pending])`.
pub fn index_state(plane: &MemoryPlane, ns: &str) -> String {
    let s = plane.semantic.stats(ns);
    match s.graph_slots {
        None => "exact".to_owned(),
        Some(slots) if s.pending == 0 => format!("graph ({slots})"),
        Some(slots) => format!("graph ({slots}, {} pending)", s.pending),
    }
}

/// Entries, bounds and retention of key/value namespaces, record
/// collections (with index state) and semantic namespaces.
pub fn stats_json(store: &Store, plane: &MemoryPlane) -> anyhow::Result<Value> {
    let kv = store.kv_stats()?;
    let collections = records::stats(store)?;
    let notes = storage::note_counts(store)?;
    let audit = store.audit_tail(1)?.first().map_or(0, |e| e.seq);
    let file_bytes = std::fs::metadata(store.path()).map_or(0, |m| m.len());
    let retention = |ns: &str| retention_hours(plane, ns);
    let index_state = |ns: &str| index_state(plane, ns);
    let kv: BTreeMap<_, _> = kv
        .iter()
        .map(|(ns, s)| {
            let bound = plane.rules.kv_bound(ns);
            let v = serde_json::json!({
                "entries": s.entries, "bytes": s.bytes, "expired": s.expired,
                "max_entries": bound.max_entries, "max_bytes": bound.max_bytes,
                "retention_hours": retention(ns),
            });
            (ns.clone(), v)
        })
        .collect();
    let records: BTreeMap<_, _> = collections
        .iter()
        .map(|(c, s)| {
            let indexes: BTreeMap<_, _> =
                s.indexes.iter().map(|(f, ready)| (f.clone(), if *ready { "ready" } else { "stale" })).collect();
            let retention = plane.rules.collections.get(c).map(|d| d.as_secs_f64() / 3600.0);
            (c.clone(), serde_json::json!({"records": s.records, "indexes": indexes, "retention_hours": retention}))
        })
        .collect();
    let notes: BTreeMap<_, _> = notes
        .iter()
        .map(|(ns, n)| {
            let v = serde_json::json!({"notes": n, "index": index_state(ns), "retention_hours": retention(ns)});
            (ns.clone(), v)
        })
        .collect();
    let v = serde_json::json!({
        "schema_version": store.schema_version()?,
        "file_bytes": file_bytes,
        "audit_entries": audit,
        "namespaces": kv,
        "collections": records,
        "notes": notes,
        "embedder": plane.semantic.embedder().id(),
        "embedder_description": plane.semantic.embedder().describe(),
        "embedder_fallback": plane.embedder_fallback,
        "notes_of_other_embedders": plane.semantic.stale_notes(),
    });
    Ok(v)
}
