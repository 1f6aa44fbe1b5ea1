//! SIGKILL in the middle of a stream of group-committed writes, many
//! times: the database opens, every acknowledged write is there, no batch
//! is half visible, and the audit chain verifies.
//!
//! The test re-runs its own binary as the writer (`KEEL_CRASH_WRITER`), so
//! the killed process is a real, separate one.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keel_host::memory::Store;
use keel_host::memory::audit::AuditEntry;
use keel_host::memory::committer::{Batch, Mutation};
use keel_host::memory::kv::KvBound;

const WRITER_ENV: &str = "KEEL_CRASH_WRITER";
const THREADS: usize = 4;
const ROUNDS: usize = 12;

/// One batch: the value, its mirror, and an audit entry. Seeing one
/// without the other would be a half-applied batch.
fn batch(id: &str) -> Batch {
    let put = |namespace: &str| Mutation::KvPut {
        namespace: namespace.into(),
        key: id.into(),
        value: id.as_bytes().to_vec(),
        expires_at_ms: None,
        bound: KvBound::UNBOUNDED,
    };
    Batch { mutations: vec![put("crash"), put("mirror")], audit: vec![AuditEntry::allowed("writer", "memory.put", id)] }
}

/// The child: writes forever from several threads, printing each id once
/// its commit returned.
fn writer(path: &str, round: usize) -> ! {
    let store = std::sync::Arc::new(Store::open(path.as_ref()).expect("writer opens the store"));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let id = format!("{round:02}-{t}-{i:08}");
                    store.commit_blocking(batch(&id)).expect("commit");
                    println!("ack {id}");
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    unreachable!("writers never stop")
}

#[test]
fn sigkill_mid_stream_loses_no_acknowledged_write() {
    if let Ok(spec) = std::env::var(WRITER_ENV) {
        let (path, round) = spec.split_once('|').unwrap();
        writer(path, round.parse().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.redb");
    drop(Store::open(&path).unwrap());

    let mut acked = Vec::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sigkill_mid_stream_loses_no_acknowledged_write", "--nocapture", "--test-threads=1"])
            .env(WRITER_ENV, format!("{}|{round}", path.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        // Kill after a varying number of acknowledgements.
        let kill_after = 20 + round * 37 % 200;
        let started = Instant::now();
        let mut lines = stdout.lines();
        let mut this_round = 0;
        while this_round < kill_after && started.elapsed() < Duration::from_secs(20) {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(id) = line.strip_prefix("ack ") {
                        acked.push(id.to_owned());
                        this_round += 1;
                    }
                }
                _ => break,
            }
        }
        child.kill().unwrap(); // SIGKILL
        // Acks already printed before the kill landed count too.
        for line in lines.map_while(Result::ok) {
            if let Some(id) = line.strip_prefix("ack ") {
                acked.push(id.to_owned());
            }
        }
        child.wait().unwrap();
        assert!(this_round > 0, "round {round}: the writer acknowledged nothing");

        let store = Store::open(&path).expect("the database opens after SIGKILL");
        let values = store.kv_scan("crash", "", usize::MAX).unwrap();
        let mirrors = store.kv_scan("mirror", "", usize::MAX).unwrap();
        assert_eq!(values, mirrors, "round {round}: a batch is half visible");
        let present: std::collections::HashSet<&str> = values.iter().map(|(k, _)| k.as_str()).collect();
        for id in &acked {
            assert!(present.contains(id.as_str()), "round {round}: acknowledged write {id} was lost");
        }
        let verified = store.audit_verify().unwrap();
        assert_eq!(verified.broken, None, "round {round}");
        assert_eq!(verified.entries as usize, values.len(), "round {round}: one audit entry per batch");
    }
}
