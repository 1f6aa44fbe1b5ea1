//! The operator's side of the kernel: the approval inbox, the kill switch,
//! the outbox and the state of it all. Nothing here is reachable from a
//! plugin.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::kernel::approvals::{Approval, ApprovalStatus};
use crate::kernel::outbox::{Intent, IntentState};
use crate::memory::now_ms;
use crate::runtime::Runtime;
use crate::runtime::execute;
use crate::workspace::Workspace;

/// Who the CLI acts as in the audit log.
const OPERATOR: &str = "operator";

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Proposals waiting for the operator, oldest first.
    List {
        /// Also show decided approvals.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The approval's number, from `keel approvals list`.
    pub id: u64,
    /// Replace the payload before it executes: JSON, or @FILE.
    #[arg(long, value_name = "JSON")]
    pub edit: Option<String>,
}

#[derive(Debug, Args)]
pub struct RejectArgs {
    /// The approval's number, from `keel approvals list`.
    pub id: u64,
    /// Why; audited and shown with the intent.
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct OutboxArgs {
    /// Only intents in this state (awaiting-approval, ready, sending,
    /// executed, failed, needs-reconcile, rejected).
    #[arg(long)]
    pub state: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Execute the ready intents now (and settle ones a crash interrupted).
    #[arg(long, conflicts_with_all = ["state", "json"])]
    pub execute: bool,
}

pub fn approvals(ws: &Workspace, cmd: ApprovalsCommand) -> anyhow::Result<()> {
    let ApprovalsCommand::List { all, json } = cmd;
    let kernel = ws.kernel()?;
    let expired = kernel.expire_approvals(now_ms())?;
    if !expired.is_empty() && !json {
        println!("expired undecided: {}", expired.iter().map(|id| format!("#{id}")).collect::<Vec<_>>().join(", "));
    }
    let list = ws.store().approvals((!all).then_some(ApprovalStatus::Pending))?;
    let mut rows = Vec::new();
    for a in &list {
        rows.push((a, ws.store().intent(&a.intent_key)?));
    }
    if json {
        let v: Vec<Value> = rows.iter().map(|(a, i)| serde_json::json!({"approval": a, "intent": i})).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("{}", if all { "no approvals yet" } else { "nothing waits for you" });
        return Ok(());
    }
    for (a, intent) in rows {
        print_approval(a, intent.as_ref());
    }
    Ok(())
}

fn print_approval(a: &Approval, intent: Option<&Intent>) {
    let status = a.status.as_str();
    println!("#{}  {}  {}  from {}  [{status}]", a.id, a.kind, a.intent_key, a.plugin);
    if let Some(i) = intent {
        if let (Some(amount), Some(currency)) = (i.proposal.amount, &i.proposal.currency) {
            println!("    amount:     {amount} {currency} (minor units)");
        }
        println!("    confidence: {:.2}", i.proposal.confidence);
        println!("    rationale:  {}", i.proposal.rationale);
        println!("    payload:    {}", i.proposal.payload);
    }
    println!("    why asked:  {}", a.reasons.join("; "));
    if let Some(note) = &a.note {
        println!("    note:       {note}");
    }
}

/// Executes what is ready and says, on stderr, what became of each.
pub async fn execute_and_report(runtime: &Runtime) -> anyhow::Result<()> {
    for execution in runtime.execute_ready().await? {
        eprintln!("action {}", execute::describe(&execution));
    }
    super::workflows::continue_waiting(runtime).await
}

pub async fn approve(ws: &Workspace, args: ApproveArgs) -> anyhow::Result<()> {
    let edit = match args.edit {
        None => None,
        Some(text) => {
            let text = match text.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading --edit file {path}"))?,
                None => text,
            };
            Some(serde_json::from_str(&text).context("--edit is not JSON: pass the whole payload as JSON or @FILE")?)
        }
    };
    let runtime = ws.runtime()?;
    let intent = runtime.kernel().approve(args.id, OPERATOR, edit)?;
    println!("approved #{}: {} is ready to execute as {}", args.id, intent.proposal.kind, intent.key);
    if ws.store().kill_switch()?.is_some_and(|s| s.engaged) {
        println!("the kill switch is on: it runs after `keel resume`");
        return Ok(());
    }
    execute_and_report(&runtime).await
}

pub async fn reject(ws: &Workspace, args: RejectArgs) -> anyhow::Result<()> {
    if args.reason.trim().is_empty() {
        bail!("--reason is empty: say why, it is audited and shown to whoever reads the outbox");
    }
    ws.kernel()?.reject(args.id, OPERATOR, &args.reason)?;
    println!("rejected #{}: it will not execute", args.id);
    if !ws.store().runs_in(crate::workflow::runs::RunState::WaitingApproval, 1)?.is_empty() {
        super::workflows::continue_waiting(&ws.runtime()?).await?;
    }
    Ok(())
}

pub fn stop(ws: &Workspace, reason: Option<String>) -> anyhow::Result<()> {
    ws.store().set_kill_switch(true, OPERATOR, reason)?;
    println!("kill switch ON: no action starts from now on; new proposals wait for approval.");
    println!("`keel status` shows what is pending; `keel resume` lifts it.");
    Ok(())
}

pub async fn resume(ws: &Workspace) -> anyhow::Result<()> {
    ws.store().set_kill_switch(false, OPERATOR, None)?;
    println!("kill switch off: approved and queued actions run again.");
    execute_and_report(&ws.runtime()?).await
}

pub fn status(ws: &Workspace, json: bool) -> anyhow::Result<()> {
    let store = ws.store();
    let switch = store.kill_switch()?;
    let counts = store.intent_counts()?;
    let pending = store.approvals(Some(ApprovalStatus::Pending))?;
    let reconcile = store.intents_in(IntentState::NeedsReconcile, 100)?;
    let paused = store.paused_workflows()?;
    let waiting_runs = store.runs_in(crate::workflow::runs::RunState::WaitingApproval, 100)?;
    if json {
        let counts: serde_json::Map<String, Value> =
            counts.iter().map(|(s, n)| (s.as_str().to_owned(), Value::from(*n))).collect();
        let v = serde_json::json!({
            "kill_switch": switch,
            "intents": counts,
            "pending_approvals": pending.iter().map(|a| a.id).collect::<Vec<_>>(),
            "needs_reconcile": reconcile.iter().map(|i| &i.key).collect::<Vec<_>>(),
            "paused_workflows": paused,
            "runs_waiting_approval": waiting_runs.iter().map(|r| &r.id).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match switch.filter(|s| s.engaged) {
        Some(s) => println!(
            "kill switch: ON since {} by {}{}",
            s.since_ms,
            s.by,
            s.reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ),
        None => println!("kill switch: off"),
    }
    let summary: Vec<String> =
        counts.iter().filter(|(_, n)| *n > 0).map(|(s, n)| format!("{n} {}", s.as_str())).collect();
    println!("outbox: {}", if summary.is_empty() { "empty".to_owned() } else { summary.join(", ") });
    println!("approvals waiting: {}", pending.len());
    if !waiting_runs.is_empty() {
        println!("runs waiting for approval: {}", waiting_runs.len());
    }
    for (name, p) in &paused {
        println!("workflow {name} PAUSED by {}: {}; `keel workflows resume {name}` lifts it", p.by, p.reason);
    }
    for i in &reconcile {
        println!(
            "needs reconcile: {} ({} via {}): {}",
            i.key,
            i.proposal.kind,
            i.connector,
            i.note.as_deref().unwrap_or("")
        );
    }
    if !pending.is_empty() {
        println!("next: `keel approvals list`");
    }
    Ok(())
}

pub async fn outbox(ws: &Workspace, args: OutboxArgs) -> anyhow::Result<()> {
    if args.execute {
        return execute_and_report(&ws.runtime()?).await;
    }
    let states: Vec<IntentState> = match &args.state {
        None => IntentState::ALL.to_vec(),
        Some(s) => vec![
            IntentState::ALL
                .into_iter()
                .find(|st| st.as_str() == s)
                .with_context(|| format!("--state {s:?} is not a state: use one of {}", state_names()))?,
        ],
    };
    let mut intents = Vec::new();
    for state in states {
        intents.extend(ws.store().intents_in(state, 1000)?);
    }
    intents.sort_by_key(|i| i.created_at_ms);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&intents)?);
        return Ok(());
    }
    if intents.is_empty() {
        println!("the outbox is empty");
    }
    for i in intents {
        println!(
            "{:<40} {:<18} {:<20} {}",
            i.key,
            i.state.as_str(),
            i.proposal.kind,
            i.note.or(i.receipt).unwrap_or_default()
        );
    }
    Ok(())
}

fn state_names() -> String {
    IntentState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}
