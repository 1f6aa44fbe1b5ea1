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
}

pub fn run(ws: &Workspace, cmd: AuditCommand) -> anyhow::Result<()> {
    let store = ws.store();
    match cmd {
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
    Ok(())
}

fn format_entry(e: &AuditEntry) -> String {
    let decision = match e.decision {
        Decision::Allowed => "allowed",
        Decision::Denied => "DENIED",
        Decision::Parked => "parked",
    };
    let reason = e.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
    format!("#{:<6} {:<16} {:<18} {:<28} {decision}{reason}", e.seq, e.actor, e.operation, e.target)
}
