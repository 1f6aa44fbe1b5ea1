//! `keel serve` and `keel token`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::serve::{ServeOptions, auth};
use crate::workspace::Workspace;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Loopback by default: put a TLS proxy in front
    /// to reach it from elsewhere.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,
    /// Another `Host` value to answer to (e.g. a reverse proxy's name with
    /// its port). Repeatable.
    #[arg(long = "allow-host", value_name = "HOST:PORT")]
    pub allowed_hosts: Vec<String>,
    /// Seconds between trigger passes and outbox runs.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval_seconds: u64,
    /// Seconds runs in flight get to finish at shutdown.
    #[arg(long, default_value_t = 10)]
    pub grace_seconds: u64,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Replace the API token (the old one stops working at the next start
    /// of `keel serve`) and print the new one.
    Rotate,
    /// Print a sign-in link to the dashboard of the running `keel serve`
    /// (the token travels in the link's fragment, never to a log).
    Link,
}

/// `keel serve`.
pub async fn serve(ws: Workspace, args: ServeArgs) -> anyhow::Result<()> {
    let options = ServeOptions {
        listen: args.listen,
        allowed_hosts: args.allowed_hosts,
        interval: Duration::from_secs(args.interval_seconds),
        grace: Duration::from_secs(args.grace_seconds),
    };
    let ready = |addr: SocketAddr, ws: &Workspace| {
        let plugins = ws.store().plugin_list().map(|p| p.len()).unwrap_or(0);
        let workflows = ws.workflows().map(|w| w.len()).unwrap_or(0);
        println!(
            "keel serve: listening on http://{addr} (workspace {}, {plugins} plugins, {workflows} workflows); token in {}",
            ws.root().display(),
            ws.root().join(auth::TOKEN_FILE).display()
        );
        println!("keel serve: dashboard at http://{addr}/ (`keel token link` prints a sign-in link)");
    };
    crate::serve::serve(ws, options, ready, shutdown_signal()).await?;
    println!("keel serve: stopped");
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// `keel token rotate` and `keel token link`, on workspace folder `root`.
pub fn token(root: &Path, command: TokenCommand) -> anyhow::Result<()> {
    if !root.join(crate::workspace::CONFIG_FILE).is_file() {
        return Err(crate::workspace::WorkspaceError::NotAWorkspace { dir: root.to_path_buf() }.into());
    }
    match command {
        TokenCommand::Rotate => {
            let token = auth::rotate(root)?;
            println!("{token}");
            eprintln!("written to {}; restart `keel serve` to use it", root.join(auth::TOKEN_FILE).display());
        }
        TokenCommand::Link => {
            let token = auth::read(root)?;
            let addr = crate::serve::read_address(root)
                .with_context(|| format!("is `keel serve` running on workspace {}? start it first", root.display()))?;
            println!("http://{addr}/#token={token}");
        }
    }
    Ok(())
}
