//! The `keel` command line. Errors print as one line on stderr; exit codes
//! are listed in [`exit`] and in docs/cli.md.

mod audit;
mod bench;
mod call;
pub mod exit;
mod kernel;
mod keys;
mod memory;
mod models;
mod plugins;
mod progress;
mod remote;
mod report;
mod serve;
mod triggers;
pub(crate) mod workflows;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::workspace::Workspace;

/// keel: run AI agents as sandboxed WebAssembly components, with governed
/// memory and an audit log.
#[derive(Debug, Parser)]
#[command(name = "keel", version, propagate_version = true, arg_required_else_help = true)]
pub struct Cli {
    /// The workspace folder (holds keel.toml and keel.redb).
    #[arg(long, short = 'w', global = true, env = "KEEL_WORKSPACE", default_value = ".")]
    pub workspace: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a workspace: keel.toml and keel.redb in DIR.
    Init {
        /// Folder to create the workspace in (made if missing).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Check a plugin, show what it asks for, and install it.
    Install(plugins::InstallArgs),
    /// List installed plugins.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a plugin's imports, exports, requested and granted capabilities.
    Inspect {
        /// The plugin's name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a plugin's `handle` once and print its outcome.
    Call(call::CallArgs),
    /// Uninstall a plugin and its kept versions; its memory is kept
    /// unless --purge.
    Remove {
        /// The plugin's name.
        name: String,
        /// Also delete the key/value entries and records of the namespaces
        /// only this plugin could write.
        #[arg(long)]
        purge: bool,
    },
    /// Install a newer version of an installed plugin, showing what it asks
    /// for beyond the installed version; new capabilities wait for you.
    Upgrade(plugins::UpgradeArgs),
    /// Return a plugin to its previous version, with that version's grants.
    Rollback(plugins::RollbackArgs),
    /// Sign a plugin file with a publisher key (writes PLUGIN.sig).
    Sign(plugins::SignArgs),
    /// Publisher keys: generate one, or trust, list and forget publishers.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Embed a plugin.toml into a component, making a single-file plugin.
    Pack(plugins::PackArgs),
    /// Read, check and export the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Read and change the memory plane as the operator.
    #[command(subcommand)]
    Memory(memory::MemoryCommand),
    /// Measure keel against bare wasmtime on this machine.
    Bench(bench::BenchArgs),
    /// The approval inbox: proposals waiting for the operator.
    #[command(subcommand)]
    Approvals(kernel::ApprovalsCommand),
    /// Approve a parked proposal (optionally with an edited payload).
    Approve(kernel::ApproveArgs),
    /// Reject a parked proposal; it never executes.
    Reject(kernel::RejectArgs),
    /// Engage the kill switch: no action starts until `keel resume`.
    Stop {
        /// Why; audited.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift the kill switch.
    Resume,
    /// The kill switch, the outbox by state, approvals waiting.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What the workspace has done: runs, records, actions, model spend.
    Report {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every proposed action and what became of it.
    Outbox(kernel::OutboxArgs),
    /// Which models serve each tier, their prices, budgets and the cache.
    Models {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What model calls cost: per day, plugin, model and run, and per
    /// useful (executed) action.
    Costs(models::CostsArgs),
    /// The model output cache.
    #[command(subcommand)]
    Cache(models::CacheCommand),
    /// Start a run of a workflow and drive it until it finishes or waits
    /// for the operator.
    Run(workflows::RunArgs),
    /// Workflow runs: list, show, cancel, pause, resume, recover.
    #[command(subcommand)]
    Runs(workflows::RunsCommand),
    /// Replay a finished run against its journal (no effects) and report
    /// whether every step decides the same; `--agent NAME=PATH` swaps in
    /// another component. Exits 1 if anything differs.
    Replay(workflows::ReplayArgs),
    /// The workflows in workflows/*.toml, checked, with triggers, steps
    /// and whether pruning paused them; `resume NAME` lifts a pause.
    Workflows(workflows::WorkflowsArgs),
    /// Run headless: the HTTP API, triggers (schedule, inbox, record,
    /// webhook), the outbox and approval expiry, until SIGTERM or Ctrl-C.
    Serve(serve::ServeArgs),
    /// The API token of `keel serve`.
    #[command(subcommand)]
    Token(serve::TokenCommand),
    /// Fire the schedule, inbox and record triggers: one pass (`tick`),
    /// in the foreground until Ctrl-C (`run`), or show their state (`list`).
    #[command(subcommand)]
    Triggers(triggers::TriggersCommand),
}

/// Entry point of the `keel` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Guest log lines would drown the benchmark's table.
    let default_filter = if matches!(cli.command, Command::Bench(_)) { "warn" } else { "warn,keel::guest=info" };
    let telemetry = init_tracing(default_filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keel: cannot start the async runtime: {e}");
            return exit::ERROR.into();
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keel: {}", one_line(&e));
            exit::code_for(&e)
        }
    };
    telemetry.shutdown();
    code.into()
}

/// An anyhow chain as one line: "context: cause: cause".
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// Log lines on stderr, and spans over OTLP when configured (the returned
/// handle flushes them at exit).
fn init_tracing(default_filter: &str) -> crate::telemetry::Telemetry {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    use std::io::IsTerminal;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let (otlp, telemetry) = crate::telemetry::otlp_layer();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter);
    tracing_subscriber::registry().with(otlp).with(fmt).init();
    telemetry
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let open = || Workspace::open(&cli.workspace).with_context(|| format!("workspace {}", cli.workspace.display()));
    match cli.command {
        Command::Init { dir } => {
            let ws = Workspace::init(&dir)?;
            crate::serve::auth::rotate(ws.root())?;
            println!("created workspace in {}", ws.root().display());
            println!(
                "the API token of `keel serve` is in {} (readable by you only)",
                ws.root().join(crate::serve::auth::TOKEN_FILE).display()
            );
            println!("next: keel --workspace {} install PLUGIN.wasm", ws.root().display());
        }
        Command::Install(args) => plugins::install_via(plugins::open_to_change(&cli.workspace)?, args).await?,
        Command::List { json } => plugins::list(&open()?, json)?,
        Command::Inspect { name, json } => plugins::inspect(&open()?, &name, json)?,
        Command::Call(args) => call::call(&open()?, args).await?,
        Command::Remove { name, purge } => plugins::remove(&plugins::open_to_remove(&cli.workspace)?, &name, purge)?,
        Command::Upgrade(args) => plugins::upgrade_via(plugins::open_to_change(&cli.workspace)?, args).await?,
        Command::Rollback(args) => plugins::rollback_via(plugins::open_to_change(&cli.workspace)?, args).await?,
        Command::Sign(args) => plugins::sign(args)?,
        Command::Keys(cmd) => keys::run(cmd, open)?,
        Command::Pack(args) => plugins::pack(args)?,
        Command::Audit(cmd) => return audit::run(&open()?, cmd).await,
        Command::Memory(cmd) => memory::run(&open()?, cmd)?,
        Command::Bench(args) => bench::run(args).await?,
        Command::Approvals(cmd) => kernel::approvals(&open()?, cmd)?,
        Command::Approve(args) => kernel::approve(&open()?, args).await?,
        Command::Reject(args) => kernel::reject(&open()?, args).await?,
        Command::Stop { reason } => kernel::stop(&open()?, reason)?,
        Command::Resume => kernel::resume(&open()?).await?,
        Command::Status { json } => kernel::status(&open()?, json)?,
        Command::Report { json } => report::report(&open()?, json)?,
        Command::Outbox(args) => kernel::outbox(&open()?, args).await?,
        Command::Models { json } => models::models(&open()?, json)?,
        Command::Costs(args) => models::costs(&open()?, args)?,
        Command::Cache(cmd) => models::cache(&open()?, cmd).await?,
        Command::Run(args) => workflows::run(&open()?, args).await?,
        Command::Runs(cmd) => workflows::runs(&open()?, cmd).await?,
        Command::Workflows(args) => workflows::workflows(&open()?, args).await?,
        Command::Replay(args) => return workflows::replay(&open()?, args).await,
        Command::Triggers(cmd) => triggers::run(&open()?, cmd).await?,
        Command::Serve(args) => serve::serve(open()?, args).await?,
        // The token file only: works while `keel serve` holds the database.
        Command::Token(cmd) => serve::token(&cli.workspace, cmd)?,
    }
    Ok(exit::OK)
}
