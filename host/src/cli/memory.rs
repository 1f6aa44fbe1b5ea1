//! `keel memory`: the operator's view of the memory plane.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::Subcommand;

use crate::memory::audit::AuditEntry;
use crate::memory::committer::{Batch, Mutation};
use crate::memory::kv::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::memory::now_ms;
use crate::workspace::Workspace;

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
    /// Delete KEY from NAMESPACE (audited as the operator).
    Forget { namespace: String, key: String },
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
        MemoryCommand::Forget { namespace, key } => {
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
