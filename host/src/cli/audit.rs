//! `keel audit`: read the audit log.

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
}

pub fn run(ws: &Workspace, cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Tail { count, json } => {
            for entry in ws.store().audit_tail(count)? {
                if json {
                    println!("{}", serde_json::to_string(&entry)?);
                } else {
                    println!("{}", format_entry(&entry));
                }
            }
        }
    }
    Ok(())
}

fn format_entry(e: &AuditEntry) -> String {
    let decision = match e.decision {
        Decision::Allowed => "allowed",
        Decision::Denied => "DENIED",
    };
    let reason = e.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
    format!("#{:<6} {:<16} {:<18} {:<28} {decision}{reason}", e.seq, e.actor, e.operation, e.target)
}
