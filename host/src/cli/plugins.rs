//! `keel install | upgrade | rollback | list | inspect | remove | pack | sign`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use super::progress::CompileSpinner;
use crate::plugin::installer::{self, Applied, Plan};
use crate::plugin::review::{self, CapabilityDiff};
use crate::plugin::signing::SecretKey;
use crate::plugin::source;
use crate::plugin::{InstallError, package};
use crate::workspace::Workspace;

/// Where a plugin comes from and how it is checked (shared by `install`
/// and `upgrade`).
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Install NAME[@VERSION] from this plugin index (a JSON file: a path or
    /// an https:// URL).
    #[arg(long, value_name = "URL_OR_PATH")]
    pub index: Option<String>,
    /// The sha256 the file must have (required for a URL).
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// The detached signature (default: the plugin's path or URL + `.sig`,
    /// or the index entry's `sig`).
    #[arg(long, value_name = "FILE_OR_URL")]
    pub signature: Option<String>,
    /// Use this plugin.toml instead of the embedded manifest (it is not
    /// covered by a signature: the plugin then counts as unsigned).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Install a plugin without a valid signature from a trusted key; it is
    /// marked unsigned.
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Grant everything the plugin asks for without asking (for an upgrade,
    /// the capabilities it adds too).
    #[arg(long, short)]
    pub yes: bool,
    /// On upgrade: grant the capabilities the new version adds.
    #[arg(long)]
    pub accept_new: bool,
    /// Give up on a download after this many seconds.
    #[arg(long, value_name = "N", default_value_t = source::DEFAULT_DOWNLOAD_TIMEOUT.as_secs())]
    pub timeout_seconds: u64,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// A plugin file (.wasm with an embedded manifest; see `keel pack`), a
    /// folder holding plugin.wasm (and plugin.toml), an https:// URL (with
    /// --sha256), or NAME[@VERSION] with --index.
    pub target: String,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The installed plugin.
    pub name: String,
    /// The new version: a file, folder or URL (as for `install`); with
    /// --index, the index is asked for NAME's newest version. Without
    /// either, the upgrade waiting for review is applied.
    #[arg(long, value_name = "SOURCE")]
    pub from: Option<String>,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The installed plugin.
    pub name: String,
    /// The kept version to return to (default: the one before the active).
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
}

#[derive(Debug, Args)]
pub struct PackArgs {
    /// The component to pack.
    pub component: PathBuf,
    /// The plugin.toml to embed.
    #[arg(long)]
    pub manifest: PathBuf,
    /// Where to write the plugin (default: replace COMPONENT).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The publisher's secret key (`keel keys generate --out FILE`).
    #[arg(long)]
    pub key: PathBuf,
    /// The plugin file to sign (packed, with its manifest).
    pub plugin: PathBuf,
    /// Where to write the signature (default: PLUGIN.sig).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Where a plugin change is made: in the workspace, or through the
/// `keel serve` that holds it.
pub enum ChangeVia {
    Workspace(Box<Workspace>),
    Server(super::remote::Server),
}

/// Opens the workspace at `root` to change its plugins; while `keel serve`
/// holds the database, the change goes through its API instead.
pub fn open_to_change(root: &std::path::Path) -> anyhow::Result<ChangeVia> {
    match Workspace::open(root) {
        Ok(ws) => Ok(ChangeVia::Workspace(Box::new(ws))),
        Err(crate::workspace::WorkspaceError::Store(crate::memory::StoreError::InUse { .. })) => {
            let server = super::remote::Server::of_workspace(root).with_context(|| {
                format!(
                    "workspace {} is held by another keel process, but no keel serve address is recorded",
                    root.display()
                )
            })?;
            Ok(ChangeVia::Server(server))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("workspace {}", root.display()))),
    }
}

/// Opens the workspace at `root` to remove a plugin, which needs `keel
/// serve` stopped (runs in flight may still use it).
pub fn open_to_remove(root: &std::path::Path) -> anyhow::Result<Workspace> {
    match open_to_change(root)? {
        ChangeVia::Workspace(ws) => Ok(*ws),
        ChangeVia::Server(_) => bail!(
            "`keel serve` holds workspace {}: stop it to remove a plugin (install, upgrade and rollback work while it runs)",
            root.display()
        ),
    }
}

impl SourceArgs {
    fn request(&self, target: &str) -> anyhow::Result<installer::Request> {
        let manifest = match &self.manifest {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read manifest {}", path.display()))?;
                Some((text, path.clone()))
            }
            None => None,
        };
        Ok(installer::Request {
            target: target.to_owned(),
            index: self.index.clone(),
            sha256: self.sha256.clone(),
            signature: self.signature.clone(),
            manifest,
            allow_unsigned: self.allow_unsigned,
            timeout: Duration::from_secs(self.timeout_seconds.max(1)),
        })
    }
}

/// Fetches and checks `target`, shows the review, asks (or takes the
/// flags), applies.
async fn install_target(ws: &Workspace, target: &str, args: &SourceArgs, expect: Option<&str>) -> anyhow::Result<()> {
    let runtime = ws.runtime()?;
    let acquired = installer::acquire(ws, &runtime, &args.request(target)?, &CompileSpinner::default()).await?;
    for warning in &acquired.warnings {
        eprintln!("warning: {warning}");
    }
    let m = &acquired.candidate.manifest;
    if let Some(expected) = expect
        && m.name != expected
    {
        return Err(InstallError::OtherPlugin {
            path: target.into(),
            found: m.name.clone(),
            expected: expected.into(),
        }
        .into());
    }
    let plan = installer::plan(ws, &acquired)?;
    let origin = installer::describe_origin(&acquired.origin);
    let limits = installer::limits(ws, &m.name)?;
    let accepted = match &plan {
        Plan::Install { asks } => {
            eprintln!("{} {} ({}) from {}, {origin}", m.name, m.version, m.world, acquired.origin.source);
            if !m.description.is_empty() {
                eprintln!("  {}", m.description);
            }
            if asks.is_empty() {
                eprintln!("It asks for no capabilities.");
            } else {
                eprintln!("It asks for:");
                for line in asks {
                    eprintln!("  - {line}");
                }
            }
            asks.is_empty() || args.yes || confirm("Grant these capabilities?")?
        }
        Plan::Upgrade(up) => {
            let from = &up.current.version;
            eprintln!("upgrade {} {from} -> {} from {}, {origin}", m.name, m.version, acquired.origin.source);
            print_diff(&up.diff, &limits);
            if let Some(change) = &up.publisher_change {
                eprintln!("  new:     {change}");
            }
            if up.asks_nothing_new() || args.yes || args.accept_new {
                true
            } else if std::io::stdin().is_terminal() {
                if !confirm("Grant the new capabilities?")? {
                    return Err(InstallError::Declined { name: m.name.clone() }.into());
                }
                true
            } else {
                false
            }
        }
    };
    match installer::apply(ws, &runtime, acquired, plan, accepted)? {
        Applied::Installed(record) => println!(
            "installed {} {} (sha256 {}, {})",
            record.name,
            record.version,
            &record.sha256[..16],
            record.provenance()
        ),
        Applied::Upgraded { from, record } => println!(
            "upgraded {} {from} -> {} (sha256 {}, {}); `keel rollback {}` returns to {from}",
            record.name,
            record.version,
            &record.sha256[..16],
            record.provenance(),
            record.name
        ),
        Applied::Staged { record, active } => println!(
            "{} {} asks for new capabilities and was NOT applied: {} {active} keeps running. Review the list above, then run `keel upgrade {} --accept-new` to grant them and switch",
            record.name, record.version, record.name, record.name
        ),
    }
    Ok(())
}

pub async fn install(ws: &Workspace, args: InstallArgs) -> anyhow::Result<()> {
    install_target(ws, &args.target, &args.source, None).await
}

pub async fn upgrade(ws: &Workspace, args: UpgradeArgs) -> anyhow::Result<()> {
    if ws.store().plugin_get(&args.name)?.is_none() {
        return Err(InstallError::NotInstalled { name: args.name }.into());
    }
    match (&args.from, &args.source.index) {
        (Some(from), _) => install_target(ws, from, &args.source, Some(&args.name)).await,
        (None, Some(_)) => install_target(ws, &args.name, &args.source, Some(&args.name)).await,
        (None, None) => accept_pending(ws, &args.name, &args.source),
    }
}

fn print_diff(diff: &CapabilityDiff, limits: &review::Limits) {
    if diff.added.is_empty() && diff.removed.is_empty() {
        eprintln!("It asks for nothing new.");
    }
    for line in review::summary(&diff.added, limits) {
        eprintln!("  new:     {line}");
    }
    for line in review::summary(&diff.removed, limits) {
        eprintln!("  removed: {line}");
    }
}

fn accept_pending(ws: &Workspace, name: &str, args: &SourceArgs) -> anyhow::Result<()> {
    let (current, pending, diff) = installer::pending(ws, name)?;
    eprintln!(
        "upgrade {name} {} -> {} (waiting for review), {}",
        current.version,
        pending.version,
        pending.provenance()
    );
    print_diff(&diff, &installer::limits(ws, name)?);
    let accepted = diff.asks_nothing_new() || args.yes || args.accept_new || {
        if std::io::stdin().is_terminal() && !confirm("Grant the new capabilities?")? {
            return Err(InstallError::Declined { name: name.to_owned() }.into());
        }
        std::io::stdin().is_terminal()
    };
    let runtime = ws.runtime()?;
    let (from, record) = installer::accept_pending(ws, &runtime, name, accepted)?;
    println!("upgraded {} {from} -> {} ({})", record.name, record.version, record.provenance());
    Ok(())
}

pub fn rollback(ws: &Workspace, args: RollbackArgs) -> anyhow::Result<()> {
    let runtime = ws.runtime()?;
    let (from, record) = installer::rollback(ws, &runtime, &args.name, args.to.as_deref())?;
    let grants = if record.grants.is_empty() { "none".to_owned() } else { record.grants.describe().join(", ") };
    println!("rolled {} back from {from} to {} (with the grants it had: {grants})", record.name, record.version);
    Ok(())
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("cannot ask for confirmation without a terminal: rerun with --yes to grant what the plugin asks for");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

pub fn list(ws: &Workspace, json: bool) -> anyhow::Result<()> {
    let plugins = ws.store().plugin_list()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plugins)?);
        return Ok(());
    }
    if plugins.is_empty() {
        println!("no plugins installed: add one with `keel install PATH`");
        return Ok(());
    }
    println!("{:<24} {:<10} {:<10} {:>10}  {:<16}  SHA256", "NAME", "VERSION", "WORLD", "SIZE", "SIGNED BY");
    for p in plugins {
        let signer = p.signed_by.as_ref().map_or("UNSIGNED", |s| s.name.as_str());
        println!(
            "{:<24} {:<10} {:<10} {:>9}K  {:<16}  {}",
            p.name,
            p.version,
            p.world,
            p.size_bytes / 1024,
            signer,
            &p.sha256[..16]
        );
        if let Some(pending) = ws.pending(&p.name)? {
            println!("  {} waits for review: `keel upgrade {} --accept-new`", pending.version, p.name);
        }
    }
    Ok(())
}

pub fn inspect(ws: &Workspace, name: &str, json: bool) -> anyhow::Result<()> {
    let Some(p) = ws.store().plugin_get(name)? else {
        bail!("no plugin named `{name}` is installed: see `keel list`");
    };
    let versions = ws.store().plugin_versions(name)?;
    if json {
        let mut value = serde_json::to_value(&p)?;
        value["versions"] = serde_json::to_value(&versions)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("{} {} ({})", p.name, p.version, p.world);
    if !p.description.is_empty() {
        println!("  {}", p.description);
    }
    println!("sha256:    {}", p.sha256);
    println!("size:      {} bytes", p.size_bytes);
    println!("signature: {}", if p.signed_by.is_some() { p.provenance() } else { "UNSIGNED".to_owned() });
    if !p.source.is_empty() {
        println!("source:    {}", p.source);
    }
    if !versions.is_empty() {
        println!("versions:");
        for v in &versions {
            let state = if v.pending {
                "waiting for review"
            } else if v.record.version == p.version {
                "active"
            } else {
                "kept"
            };
            println!("  {} ({state}, {})", v.record.version, v.record.provenance());
        }
    }
    println!("imports:");
    p.imports.iter().for_each(|i| println!("  {i}"));
    println!("exports:");
    p.exports.iter().for_each(|e| println!("  {e}"));
    for (title, set) in [("requested", &p.requested), ("granted", &p.grants)] {
        println!("{title}:");
        let lines = set.describe();
        if lines.is_empty() {
            println!("  (nothing)");
        }
        lines.iter().for_each(|l| println!("  - {l}"));
    }
    Ok(())
}

pub fn remove(ws: &Workspace, name: &str, purge: bool) -> anyhow::Result<()> {
    if purge {
        let Some(p) = ws.remove_purging(name)? else {
            bail!("no plugin named `{name}` is installed: see `keel list`");
        };
        println!(
            "removed {} {} and its kept versions; purged the {} records and {} notes it owned, and {} key/value entries in [{}]",
            p.record.name,
            p.record.version,
            p.records,
            p.notes,
            p.entries,
            p.namespaces.join(", ")
        );
        return Ok(());
    }
    match ws.remove(name)? {
        Some(p) => println!("removed {} {} and its kept versions (its memory is kept)", p.name, p.version),
        None => bail!("no plugin named `{name}` is installed: see `keel list`"),
    }
    Ok(())
}

pub fn pack(args: PackArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.component).with_context(|| format!("cannot read {}", args.component.display()))?;
    let text =
        std::fs::read_to_string(&args.manifest).with_context(|| format!("cannot read {}", args.manifest.display()))?;
    crate::plugin::PluginManifest::parse(&text, &args.manifest.display().to_string()).map_err(anyhow::Error::msg)?;
    crate::plugin::inspect::check_binary(&bytes, &args.component)?;
    let out = args.output.unwrap_or(args.component);
    std::fs::write(&out, package::pack(&bytes, &text)).with_context(|| format!("cannot write {}", out.display()))?;
    println!("packed {} with {}", out.display(), args.manifest.display());
    Ok(())
}

pub fn sign(args: SignArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.key).with_context(|| format!("cannot read key {}", args.key.display()))?;
    let key = SecretKey::parse(&text, &args.key)?;
    let bytes = std::fs::read(&args.plugin).with_context(|| format!("cannot read {}", args.plugin.display()))?;
    crate::plugin::inspect::check_binary(&bytes, &args.plugin)?;
    if package::embedded_manifest(&bytes).is_none() {
        bail!(
            "{} carries no manifest: pack it first (`keel pack {} --manifest plugin.toml`), so the signature covers what it asks for",
            args.plugin.display(),
            args.plugin.display()
        );
    }
    let sha256 = crate::runtime::sha256_hex(&bytes);
    let out = args.output.unwrap_or_else(|| source::sig_path_for(&args.plugin));
    std::fs::write(&out, key.sign(&sha256).to_text()).with_context(|| format!("cannot write {}", out.display()))?;
    println!("signed {} (sha256 {sha256}) with {}; wrote {}", args.plugin.display(), key.public_key(), out.display());
    Ok(())
}

/// The request body of `POST /api/v1/plugins` for `target` with `args`;
/// a local path is made absolute, as the server reads it.
fn remote_body(target: &str, args: &SourceArgs, expect: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let path = std::path::Path::new(target);
    let target = match path.exists() {
        true => std::fs::canonicalize(path)?.display().to_string(),
        false => target.to_owned(),
    };
    let manifest = match &args.manifest {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("cannot read manifest {}", p.display()))?),
        None => None,
    };
    Ok(serde_json::json!({
        "target": target,
        "index": args.index,
        "sha256": args.sha256,
        "signature": args.signature,
        "manifest": manifest,
        "manifest_path": args.manifest.as_ref().map(|p| p.display().to_string()),
        "allow_unsigned": args.allow_unsigned,
        "expect": expect,
        "timeout_seconds": args.timeout_seconds,
    }))
}

/// `keel install`/`upgrade --from` through the running `keel serve`: the
/// server checks and reviews, this asks (or takes the flags), the server
/// applies; new calls get the new version at once.
async fn change_via_server(
    server: &super::remote::Server,
    target: &str,
    args: &SourceArgs,
    expect: Option<&str>,
) -> anyhow::Result<()> {
    let mut body = remote_body(target, args, expect)?;
    body["review"] = true.into();
    let plugin = server.post("/api/v1/plugins", &body).await?;
    for warning in plugin["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", warning.as_str().unwrap_or_default());
    }
    let (name, version) = (plugin["name"].as_str().unwrap_or("?"), plugin["version"].as_str().unwrap_or("?"));
    let lines = |key: &str| -> Vec<String> {
        plugin["review"][key].as_array().into_iter().flatten().filter_map(|l| l.as_str().map(str::to_owned)).collect()
    };
    let review = &plugin["review"];
    eprintln!("(through keel serve: the change applies to new calls at once)");
    let accepted = if review["kind"] == "install" {
        eprintln!(
            "{name} {version} from {}, {}",
            plugin["source"].as_str().unwrap_or(""),
            plugin["signed"].as_str().unwrap_or("")
        );
        let asks = lines("asks");
        if asks.is_empty() {
            eprintln!("It asks for no capabilities.");
        } else {
            eprintln!("It asks for:");
            asks.iter().for_each(|l| eprintln!("  - {l}"));
        }
        asks.is_empty() || args.yes || confirm("Grant these capabilities?")?
    } else {
        eprintln!("upgrade {name} {} -> {version}", review["from"].as_str().unwrap_or("?"));
        let (new, removed) = (lines("new"), lines("removed"));
        if new.is_empty() && removed.is_empty() {
            eprintln!("It asks for nothing new.");
        }
        new.iter().for_each(|l| eprintln!("  new:     {l}"));
        removed.iter().for_each(|l| eprintln!("  removed: {l}"));
        if let Some(change) = review["publisher_change"].as_str() {
            eprintln!("  new:     {change}");
        }
        review["asks_nothing_new"] == true
            || args.yes
            || args.accept_new
            || (std::io::stdin().is_terminal() && confirm("Grant the new capabilities?")?)
    };
    body["review"] = false.into();
    body["accept"] = accepted.into();
    let done = server.post("/api/v1/plugins", &body).await?;
    let outcome = &done["outcome"];
    let record = &outcome["record"];
    let (name, version) = (record["name"].as_str().unwrap_or(name), record["version"].as_str().unwrap_or(version));
    match outcome["applied"].as_str() {
        Some("installed") => println!("installed {name} {version} in the running keel serve"),
        Some("upgraded") => println!(
            "upgraded {name} {} -> {version} in the running keel serve; `keel rollback {name}` returns",
            outcome["from"].as_str().unwrap_or("?")
        ),
        _ => println!(
            "{name} {version} asks for new capabilities and was NOT applied: {} keeps running; `keel upgrade {name} --accept-new` grants them",
            outcome["active"].as_str().unwrap_or("the active version")
        ),
    }
    Ok(())
}

/// `keel install`, in the workspace or through its running server.
pub async fn install_via(via: ChangeVia, args: InstallArgs) -> anyhow::Result<()> {
    match via {
        ChangeVia::Workspace(ws) => install(&ws, args).await,
        ChangeVia::Server(server) => change_via_server(&server, &args.target, &args.source, None).await,
    }
}

/// `keel upgrade`, in the workspace or through its running server.
pub async fn upgrade_via(via: ChangeVia, args: UpgradeArgs) -> anyhow::Result<()> {
    let server = match via {
        ChangeVia::Workspace(ws) => return upgrade(&ws, args).await,
        ChangeVia::Server(server) => server,
    };
    let name = args.name.clone();
    match (&args.from, &args.source.index) {
        (Some(from), _) => change_via_server(&server, from, &args.source, Some(&name)).await,
        (None, Some(_)) => change_via_server(&server, &name, &args.source, Some(&name)).await,
        (None, None) => {
            if !(args.source.accept_new || args.source.yes) {
                bail!("`keel serve` runs: review with `keel list`, then apply with `keel upgrade {name} --accept-new`");
            }
            let done = server.post(&format!("/api/v1/plugins/{name}/accept"), &serde_json::json!({})).await?;
            let to = done["record"]["version"].as_str().unwrap_or("?");
            println!("upgraded {name} {} -> {to} in the running keel serve", done["from"].as_str().unwrap_or("?"));
            Ok(())
        }
    }
}

/// `keel rollback`, in the workspace or through its running server.
pub async fn rollback_via(via: ChangeVia, args: RollbackArgs) -> anyhow::Result<()> {
    let server = match via {
        ChangeVia::Workspace(ws) => return rollback(&ws, args),
        ChangeVia::Server(server) => server,
    };
    let path = format!("/api/v1/plugins/{}/rollback", args.name);
    let done = server.post(&path, &serde_json::json!({ "to": args.to })).await?;
    let to = done["record"]["version"].as_str().unwrap_or("?");
    println!(
        "rolled {} back from {} to {to} in the running keel serve",
        args.name,
        done["from"].as_str().unwrap_or("?")
    );
    Ok(())
}
