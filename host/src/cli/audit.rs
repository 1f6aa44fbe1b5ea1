//! `keel audit`: read, check and export the audit log.

use std::io::Write;

use anyhow::bail;
use clap::Subcommand;

use crate::memory::audit::{AuditEntry, Decision};
use crate::workspace::Workspace;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show the newest entries, oldest first.
    Tail {
        /// How many entries.
        #[arg(short = 'n', long, default_value_t = 20)]
        count: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one entry in full, with its hashes.
    Show {
        /// The entry's number (the `#N` in `keel audit tail`).
        id: u64,
    },
    /// Recompute the hash chain; exits 1 and names the first bad entry if
    /// anything was edited, removed or reordered.
    Verify,
    /// Write every entry to stdout.
    Export {
        /// One JSON object per line (the only format today).
        #[arg(long, required = true)]
        jsonl: bool,
    },
    /// Replay a random sample of recent finished runs against their
    /// journals with the agents installed now, and report drift: steps
    /// that would decide differently today. Exits 1 on drift.
    Sample {
        /// How many runs.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Sample among this many most recent runs.
        #[arg(long, default_value_t = 500)]
        recent: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(ws: &Workspace, cmd: AuditCommand) -> anyhow::Result<u8> {
    let store = ws.store();
    match cmd {
        AuditCommand::Sample { runs, recent, json } => return sample(ws, runs, recent, json).await,
        AuditCommand::Tail { count, json } => {
            for entry in store.audit_tail(count)? {
                if json {
                    println!("{}", serde_json::to_string(&entry)?);
                } else {
                    println!("{}", format_entry(&entry));
                }
            }
        }
        AuditCommand::Show { id } => match store.audit_get(id)? {
            Some(entry) => println!("{}", serde_json::to_string_pretty(&entry)?),
            None => bail!("no audit entry #{id}: see `keel audit tail` for the numbers"),
        },
        AuditCommand::Verify => {
            let v = store.audit_verify()?;
            if let Some(broken) = v.broken {
                bail!("audit log is NOT intact: {broken}; restore keel.redb from a backup and investigate");
            }
            println!("audit log intact: {} entries, head #{} {}", v.entries, v.head.seq, v.head.hash);
        }
        AuditCommand::Export { jsonl: _ } => {
            let mut out = std::io::stdout().lock();
            store.audit_for_each(|e| writeln!(out, "{}", serde_json::to_string(e).expect("entries serialize")))?;
        }
    }
    Ok(crate::cli::exit::OK)
}

/// `keel audit sample`: replays a random sample of recent finished runs.
async fn sample(ws: &Workspace, runs: usize, recent: usize, json: bool) -> anyhow::Result<u8> {
    use rand::seq::IndexedRandom;

    let finished: Vec<_> = ws.store().recent_runs(recent)?.into_iter().filter(|r| r.state.is_finished()).collect();
    if finished.is_empty() {
        println!("no finished runs to sample: runs appear here once workflows have run (`keel run NAME`)");
        return Ok(crate::cli::exit::OK);
    }
    let chosen: Vec<_> = finished.sample(&mut rand::rng(), runs).collect();
    let runtime = ws.runtime()?;
    let mut reports = Vec::new();
    for run in &chosen {
        reports.push(runtime.replay_run(&run.id, &Default::default(), &Default::default()).await?);
    }
    let drifted = reports.iter().filter(|r| !r.identical()).count();
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for report in &reports {
            super::workflows::print_replay(report);
        }
        println!(
            "sampled {} of {} recent finished runs: {drifted} would decide differently today",
            reports.len(),
            finished.len()
        );
    }
    let entry = AuditEntry::allowed("operator", "audit.sample", format!("{} runs", reports.len()))
        .with_reason(format!("{drifted} drifted"));
    ws.store().commit(crate::memory::committer::Batch::audit_only(entry)).await?;
    Ok(if drifted == 0 { crate::cli::exit::OK } else { crate::cli::exit::ERROR })
}

fn format_entry(e: &AuditEntry) -> String {
    let decision = match e.decision {
        Decision::Allowed => "allowed",
        Decision::Denied => "DENIED",
        Decision::Parked => "parked",
    };
    let reason = e.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
    format!("#{:<6} {:<16} {:<18} {:<28} {decision}{reason}", e.seq, e.actor_with_version(), e.operation, e.target)
}
