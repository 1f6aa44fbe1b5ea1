//! `keel serve`: the host run headless. One process holds the workspace
//! and does everything that otherwise waits for a CLI command: it continues
//! unfinished runs at start, fires triggers (schedule, inbox, record,
//! webhook), executes ready actions, expires approvals, reloads the
//! policy when `keel.toml` changes, and answers the
//! HTTP API on loopback by default. On SIGTERM or Ctrl-C it stops
//! accepting requests, stops the trigger loop, gives runs in flight a
//! grace period to reach a step boundary (where they are checkpointed
//! anyway), and exits with everything committed.

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod metrics;
pub mod reload;
pub mod webhook;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redb::WriteTransaction;

use crate::memory::{StoreError, now_ms};
use crate::workspace::Workspace;

/// Creates the tables of the serve module.
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    webhook::create_tables(txn)
}

/// The file naming the address a running `keel serve` listens on, for
/// `keel token link`; removed at shutdown.
pub const ADDRESS_FILE: &str = "serve.addr";

struct AddressFile(std::path::PathBuf);

impl AddressFile {
    fn write(root: &std::path::Path, addr: SocketAddr) -> anyhow::Result<AddressFile> {
        let path = root.join(ADDRESS_FILE);
        std::fs::write(&path, addr.to_string()).with_context(|| format!("writing {}", path.display()))?;
        Ok(AddressFile(path))
    }
}

impl Drop for AddressFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The address the `keel serve` of workspace `root` listens on.
pub fn read_address(root: &std::path::Path) -> anyhow::Result<SocketAddr> {
    let path = root.join(ADDRESS_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("no {}", path.display()))?;
    text.trim().parse().with_context(|| format!("{} does not hold an address", path.display()))
}

/// How `keel serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// More `Host` values to answer to (a reverse proxy's name).
    pub allowed_hosts: Vec<String>,
    /// How often triggers fire and ready actions are executed.
    pub interval: Duration,
    /// How long runs in flight get to finish at shutdown.
    pub grace: Duration,
}

/// Serves workspace `ws` until `shutdown` completes. `ready` is told the
/// address once the server listens.
pub async fn serve(
    ws: Workspace,
    options: ServeOptions,
    ready: impl FnOnce(SocketAddr, &Workspace),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let token = auth::read(ws.root())?;
    let runtime = Arc::new(ws.runtime()?);
    // Listed before any request or trigger can start a run, so recovery
    // and a new run's own drive never take the same run.
    let unfinished = runtime.unfinished_runs()?;
    let listener = tokio::net::TcpListener::bind(options.listen).await.with_context(|| {
        format!("cannot listen on {}: is another keel serve running? pick another --listen", options.listen)
    })?;
    let addr = listener.local_addr()?;
    let address_file = AddressFile::write(ws.root(), addr)?;
    let guard = auth::Guard::new(&token, addr, &options.allowed_hosts);
    let workspace = Arc::new(ws);
    let state = Arc::new(api::AppState {
        runtime: runtime.clone(),
        workspace: workspace.clone(),
        guard,
        drives: tokio::sync::Mutex::new(tokio::task::JoinSet::new()),
        metrics: Default::default(),
    });
    ready(addr, &workspace);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, api::router(state.clone())).with_graceful_shutdown({
        let stop_tx = stop_tx.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: no new requests");
            let _ = stop_tx.send(true);
        }
    });
    let recover = async {
        match runtime.recover_listed(unfinished).await {
            Ok(runs) if !runs.is_empty() => tracing::info!(runs = runs.len(), "continued unfinished runs"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "continuing unfinished runs failed"),
        }
    };
    let root = workspace.root().to_path_buf();
    let triggers = crate::workflow::triggers::run_loop(
        runtime.clone(),
        root,
        || workspace.workflows(),
        options.interval,
        stop_rx.clone(),
    );
    let watch = reload::PolicyWatch::new(workspace.root());
    let housekeeping = housekeeping(&runtime, watch, options.interval, stop_rx);
    let (served, (), (), ()) = tokio::join!(server, recover, triggers, housekeeping);
    served.context("the HTTP server failed")?;

    drop(address_file);
    // Runs started by webhooks: a grace period to reach a step boundary.
    let mut drives = std::mem::take(&mut *state.drives.lock().await);
    let finished = tokio::time::timeout(options.grace, async { while drives.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!("runs still in flight after the grace period continue at the next start");
    }
    Ok(())
}

/// Reloads a changed policy, expires approvals, executes due actions and
/// continues decided runs every `interval` until `stop`.
async fn housekeeping(
    runtime: &crate::runtime::Runtime,
    mut policy: reload::PolicyWatch,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        policy.check(runtime).await;
        if let Err(e) = runtime.kernel().expire_approvals(now_ms()) {
            tracing::error!(error = %e, "expiring approvals failed");
        }
        match runtime.execute_ready().await {
            Ok(done) => done.iter().for_each(|e| tracing::info!("action {}", crate::runtime::execute::describe(e))),
            Err(e) => tracing::error!(error = %e, "executing ready actions failed"),
        }
        let continued = runtime.continue_waiting_runs(1000).await.unwrap_or_else(|e| vec![Err(e)]);
        for e in continued.into_iter().filter_map(Result::err) {
            tracing::error!(error = %e, "continuing a waiting run failed");
        }
    }
}
