//! Audit appends per second: one durable commit per append (the floor)
//! against group commit with many concurrent writers, in one run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::percentiles;
use crate::memory::Store;
use crate::memory::audit::AuditEntry;
use crate::memory::committer::Batch;

/// Concurrent writers in the group-commit case (agents, runs, the gate).
pub const WRITERS: usize = 256;

#[derive(Debug, Clone)]
pub struct AuditReport {
    pub single_per_sec: f64,
    pub single_p99: Duration,
    pub group_per_sec: f64,
    pub group_p50: Duration,
    pub group_p99: Duration,
    pub group_entries: usize,
    pub verified: bool,
}

fn entry(i: usize) -> AuditEntry {
    AuditEntry::allowed("bench", "memory.put", format!("bench/key-{i}"))
}

/// Appends `n` entries one commit at a time, then `n * 10` from
/// [`WRITERS`] concurrent tasks sharing commits; checks the chain after.
pub async fn run(n: usize) -> anyhow::Result<AuditReport> {
    let dir = std::env::temp_dir().join(format!("keel-bench-audit-{}-{}", std::process::id(), crate::memory::now_ms()));
    std::fs::create_dir_all(&dir)?;
    let store = Arc::new(Store::open(&dir.join("keel.redb"))?);

    let mut waits = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        store.commit(Batch::audit_only(entry(i))).await?;
        waits.push(t.elapsed());
    }
    let single_per_sec = n as f64 / started.elapsed().as_secs_f64();
    let single_p99 = percentiles(waits).p99;

    let per_writer = (n * 10).div_ceil(WRITERS);
    let started = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut waits = Vec::with_capacity(per_writer);
                for i in 0..per_writer {
                    let t = Instant::now();
                    store.commit(Batch::audit_only(entry(w * per_writer + i))).await?;
                    waits.push(t.elapsed());
                }
                Ok::<_, crate::memory::StoreError>(waits)
            })
        })
        .collect();
    let mut waits = Vec::new();
    for t in tasks {
        waits.extend(t.await??);
    }
    let group_per_sec = waits.len() as f64 / started.elapsed().as_secs_f64();
    let verified = store.audit_verify()?.broken.is_none();
    let group_entries = waits.len();
    let group = percentiles(waits);
    let report = AuditReport {
        single_per_sec,
        single_p99,
        group_p50: group.p50,
        group_p99: group.p99,
        group_per_sec,
        group_entries,
        verified,
    };
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

impl std::fmt::Display for AuditReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        writeln!(f, "audit appends (durable, hash-chained)")?;
        writeln!(f, "{:<40} {:>12} {:>14}", "case", "appends/s", "commit wait p99")?;
        writeln!(
            f,
            "{:<40} {:>12.0} {:>14}",
            "one commit per append (floor)",
            self.single_per_sec,
            ms(self.single_p99)
        )?;
        writeln!(
            f,
            "{:<40} {:>12.0} {:>14}",
            format!("group commit, {WRITERS} writers"),
            self.group_per_sec,
            ms(self.group_p99)
        )?;
        writeln!(
            f,
            "ratio {:.1}x; group wait p50 {}; {} entries, chain {}",
            self.group_per_sec / self.single_per_sec,
            ms(self.group_p50),
            self.group_entries,
            if self.verified { "verified" } else { "BROKEN" }
        )
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_is_faster_and_keeps_the_chain() {
        let r = super::run(200).await.unwrap();
        assert!(r.verified);
        assert_eq!(r.group_entries, 2048);
        assert!(r.group_per_sec > r.single_per_sec, "{r}");
    }
}
