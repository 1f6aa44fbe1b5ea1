//! `keel run`, `keel runs ...` and `keel workflows`: starting workflows and
//! looking after their runs.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::memory::now_ms;
use crate::runtime::Runtime;
use crate::workflow::definition::Trigger;
use crate::workflow::replay::ReplayReport;
use crate::workflow::runs::{Run, RunState, StepStatus};
use crate::workspace::Workspace;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workflow's name (its file is workflows/NAME.toml).
    pub name: String,
    /// The run's input as JSON, or @FILE.
    #[arg(long, short, default_value = "{}")]
    pub input: String,
    /// Print the finished run as JSON.
    #[arg(long)]
    pub json: bool,
    /// Only record the run and print its id; `keel runs recover` (or
    /// `keel serve`) drives it.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Recent runs, newest first.
    List {
        /// Only runs in this state (running, waiting-approval, paused,
        /// succeeded, failed, compensating, compensated, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// How many at most.
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One run with each step's state, output and error.
    Show {
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run: pending actions are withdrawn, executed ones undone
    /// where their kinds declare how. Audited.
    Cancel {
        id: String,
        /// Why; audited.
        #[arg(long, default_value = "cancelled by the operator")]
        reason: String,
    },
    /// Pause a run after its current step. Audited.
    Pause { id: String },
    /// Resume a paused run. Audited.
    Resume { id: String },
    /// Continue every unfinished run (after a crash or restart): running
    /// runs from their cursor, compensations where they stopped, waiting
    /// runs whose actions were decided.
    Recover,
}

#[derive(Debug, Args)]
pub struct WorkflowsArgs {
    #[command(subcommand)]
    pub command: Option<WorkflowsCommand>,
    /// Print JSON (listing).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// Lift the pause pruning put on a workflow and resume its paused
    /// runs. Audited.
    Resume { name: String },
}

/// `keel workflows [resume NAME]`.
pub async fn workflows(ws: &Workspace, args: WorkflowsArgs) -> anyhow::Result<()> {
    match args.command {
        None => list(ws, args.json),
        Some(WorkflowsCommand::Resume { name }) => {
            let resumed = ws.runtime()?.resume_workflow(&name).await?;
            println!("workflow {name} resumed; its triggers start runs again");
            for run in &resumed {
                println!("  run {}: {}", run.id, run.state.as_str());
            }
            Ok(())
        }
    }
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The finished run to replay.
    pub run: String,
    /// Replay with this component in place of an installed agent (a
    /// counterfactual): NAME=PATH.wasm. Repeatable.
    #[arg(long = "agent", value_name = "NAME=PATH")]
    pub agents: Vec<String>,
    /// Ask this model live for a tier instead of replaying the recorded
    /// answers (a counterfactual; the calls cost what they cost):
    /// TIER=PROVIDER/MODEL. Repeatable.
    #[arg(long = "model", value_name = "TIER=MODEL")]
    pub models: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `keel replay RUN`.
pub async fn replay(ws: &Workspace, args: ReplayArgs) -> anyhow::Result<u8> {
    let mut agents = std::collections::BTreeMap::new();
    for spec in &args.agents {
        let (name, path) = spec
            .split_once('=')
            .with_context(|| format!("--agent {spec}: write NAME=PATH, e.g. --agent planner=build/planner.wasm"))?;
        agents.insert(name.to_owned(), std::path::PathBuf::from(path));
    }
    let mut models = std::collections::BTreeMap::new();
    for spec in &args.models {
        let (tier, model) = spec.split_once('=').with_context(|| {
            format!("--model {spec}: write TIER=PROVIDER/MODEL, e.g. --model small=openai/gpt-4o-mini")
        })?;
        models.insert(tier.to_owned(), model.to_owned());
    }
    let report = ws.runtime()?.replay_run(&args.run, &agents, &models).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_replay(&report);
    }
    Ok(if report.identical() { crate::cli::exit::OK } else { crate::cli::exit::ERROR })
}

pub(super) fn print_replay(report: &ReplayReport) {
    if report.identical() {
        println!("run {} of {}: identical ({} steps replayed)", report.run, report.workflow, report.steps.len());
        return;
    }
    println!("run {} of {}: DIFFERS", report.run, report.workflow);
    for step in &report.steps {
        if step.identical {
            println!("  {:<20} identical", step.task);
            continue;
        }
        let versions = if step.recorded_version == step.replayed_version {
            format!("{}@{}", step.agent, step.replayed_version)
        } else {
            format!("{}@{} (was {})", step.agent, step.replayed_version, step.recorded_version)
        };
        println!("  {:<20} differs ({versions})", step.task);
        if let Some(d) = &step.divergence {
            let expected =
                d.expected.as_ref().map_or("no further call".to_owned(), |e| format!("{} {}", e.op, e.request));
            println!("  {:<20} at call #{}: recorded {expected}", "", d.seq);
            println!("  {:<20} {:>width$} now {} {}", "", "", d.actual_op, d.actual_request, width = 0);
        }
        for answer in &step.model_answers {
            let recorded = answer.recorded.as_ref().map_or("(no such call)".to_owned(), answer_text);
            println!("  {:<20} model `{}` was: {recorded}", "", answer.tier);
            println!("  {:<20} {} now: {}", "", answer.model, answer_text(&answer.now));
        }
        let now = match &step.replayed_output {
            Ok(v) => v.to_string(),
            Err(e) => format!("error: {e}"),
        };
        println!("  {:<20} recorded output: {}", "", step.recorded_output);
        println!("  {:<20} replayed output: {now}", "");
    }
}

/// A recorded completion result as one short line.
fn answer_text(result: &Value) -> String {
    match (result.get("Ok").and_then(|c| c.get("text")), result.get("Err")) {
        (Some(text), _) => text.to_string(),
        (None, Some(err)) => format!("error {err}"),
        _ => result.to_string(),
    }
}

fn read_input(text: String) -> anyhow::Result<Value> {
    let text = match text.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file).with_context(|| format!("cannot read --input file {file}"))?,
        None => text,
    };
    serde_json::from_str(&text).context("--input is not valid JSON: pass a JSON document, e.g. --input '{\"lead\":1}'")
}

/// `keel run NAME`.
pub async fn run(ws: &Workspace, args: RunArgs) -> anyhow::Result<()> {
    let input = read_input(args.input)?;
    let (def, text) = ws.workflow(&args.name)?;
    if !matches!(def.trigger, Trigger::Manual) {
        eprintln!("note: `{}` is triggered by {}; running it by hand anyway", def.name, trigger_name(&def.trigger));
    }
    let runtime = ws.runtime()?;
    let run = runtime.start_run(&def, &text, input, "manual", "operator").await?;
    if args.no_wait {
        println!("{}", run.id);
        return Ok(());
    }
    eprintln!("run {} of {} started", run.id, def.name);
    let run = runtime.drive_run(&run.id).await?;
    report(&run, args.json)?;
    Ok(())
}

fn trigger_name(trigger: &Trigger) -> String {
    match trigger {
        Trigger::Manual => "hand".into(),
        Trigger::Schedule { cron, timezone, .. } => format!("schedule `{cron}` ({timezone})"),
        Trigger::Webhook { path } => format!("webhook `{path}`"),
        Trigger::Inbox { folder, .. } => format!("inbox folder {}", folder.display()),
        Trigger::Record { collection } => format!("changes to records in `{collection}`"),
    }
}

fn report(run: &Run, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(run)?);
        return Ok(());
    }
    print_run(run);
    match run.state {
        RunState::WaitingApproval => {
            println!(
                "next: `keel approvals list`, then `keel approve N` or `keel reject N`; the run continues when all are decided"
            )
        }
        RunState::Compensating => println!("next: compensation waits for the kill switch: `keel resume`"),
        RunState::Failed | RunState::Compensated => {
            println!("next: `keel runs show {}` and `keel outbox` for what was undone", run.id)
        }
        _ => {}
    }
    Ok(())
}

fn print_run(run: &Run) {
    let took = run.finished_at_ms.unwrap_or_else(now_ms).saturating_sub(run.created_at_ms);
    println!("run {} of {}: {} ({} ms, trigger {})", run.id, run.workflow, run.state.as_str(), took, run.trigger);
    for id in &run.order {
        let Some(step) = run.steps.get(id) else { continue };
        let status = match step.status {
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
        };
        let items = if step.items.is_empty() { String::new() } else { format!(", {} items", step.items.len()) };
        println!("  {id:<20} {status:<10} {}@{} attempt {}{items}", step.agent, step.version, step.attempts);
        if let Some(error) = &step.error {
            println!("  {:<20} error: {error}", "");
        }
    }
    if let Some(output) = run.output().filter(|_| run.state == RunState::Succeeded) {
        println!("output: {output}");
    }
    if let Some(error) = &run.error {
        println!("error: {error}");
    }
    if !run.waiting_on.is_empty() {
        println!("waiting on: {}", run.waiting_on.join(", "));
    }
}

/// `keel runs ...`.
pub async fn runs(ws: &Workspace, command: RunsCommand) -> anyhow::Result<()> {
    match command {
        RunsCommand::List { state, limit, json } => {
            let runs = match state {
                Some(s) => {
                    let state = RunState::parse(&s).with_context(|| {
                        let all: Vec<&str> = RunState::ALL.iter().map(|s| s.as_str()).collect();
                        format!("unknown run state `{s}`: use one of {}", all.join(", "))
                    })?;
                    ws.store().runs_in(state, limit)?
                }
                None => ws.store().recent_runs(limit)?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else if runs.is_empty() {
                println!("no runs yet: `keel run NAME` starts one (workflows are in workflows/*.toml)");
            } else {
                for run in &runs {
                    let step = run.cursor.clone().or_else(|| run.order.last().cloned()).unwrap_or_default();
                    println!("{}  {:<18} {:<16} step {step}", run.id, run.workflow, run.state.as_str());
                }
            }
        }
        RunsCommand::Show { id, json } => {
            let run = ws
                .store()
                .run(&id)?
                .with_context(|| format!("no run `{id}`: `keel runs list` shows the recent ones"))?;
            report(&run, json)?;
        }
        RunsCommand::Cancel { id, reason } => {
            let run = ws.runtime()?.cancel_run(&id, &reason).await?;
            print_run(&run);
        }
        RunsCommand::Pause { id } => {
            let run = ws.runtime()?.pause_run(&id).await?;
            println!("run {} paused; `keel runs resume {}` continues it", run.id, run.id);
        }
        RunsCommand::Resume { id } => {
            let run = ws.runtime()?.resume_run(&id).await?;
            report(&run, false)?;
        }
        RunsCommand::Recover => {
            let runtime = ws.runtime()?;
            let runs = runtime.recover_runs().await?;
            if runs.is_empty() {
                println!("no unfinished runs");
            }
            for run in &runs {
                print_run(run);
            }
        }
    }
    Ok(())
}

/// Continues runs that waited on actions the operator just decided.
pub async fn continue_waiting(runtime: &Runtime) -> anyhow::Result<()> {
    for after in runtime.continue_waiting_runs(usize::MAX).await? {
        let after = after?;
        if after.state != RunState::WaitingApproval {
            eprintln!("run {} of {}: {}", after.id, after.workflow, after.state.as_str());
        }
    }
    Ok(())
}

/// `keel workflows`: each definition, its trigger and steps, checked.
fn list(ws: &Workspace, json: bool) -> anyhow::Result<()> {
    let defs = ws.workflows()?;
    let paused = ws.store().paused_workflows()?;
    if json {
        let list: Vec<Value> = defs
            .iter()
            .map(|(d, _)| {
                serde_json::json!({
                    "name": d.name,
                    "description": d.description,
                    "trigger": trigger_name(&d.trigger),
                    "paused": paused.get(&d.name).map(|p| &p.reason),
                    "steps": d.steps.iter().map(|s| serde_json::json!({"id": s.id, "agent": s.agent})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if defs.is_empty() {
        println!("no workflows: add workflows/NAME.toml (docs/workflows.md)");
    }
    for (def, _) in &defs {
        let steps: Vec<String> = def.steps.iter().map(|s| format!("{} ({})", s.id, s.agent)).collect();
        println!("{:<20} triggered by {}", def.name, trigger_name(&def.trigger));
        println!("{:<20} steps: {}", "", steps.join(" -> "));
        if let Some(p) = paused.get(&def.name) {
            println!("{:<20} PAUSED by {}: {}; `keel workflows resume {}` lifts it", "", p.by, p.reason, def.name);
        }
    }
    Ok(())
}
