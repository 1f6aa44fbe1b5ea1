//! `keel install | list | inspect | remove | pack`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use super::progress::CompileSpinner;
use crate::plugin::InstallError;
use crate::plugin::package;
use crate::workspace::Workspace;

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The plugin file (.wasm with an embedded manifest; see `keel pack`).
    pub path: PathBuf,
    /// Use this plugin.toml instead of the embedded manifest.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Grant everything the plugin asks for without asking.
    #[arg(long, short)]
    pub yes: bool,
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

pub fn install(ws: &Workspace, args: InstallArgs) -> anyhow::Result<()> {
    let path = &args.path;
    let bytes = std::fs::read(path).map_err(|source| InstallError::Read { path: path.clone(), source })?;
    let manifest_text = match &args.manifest {
        Some(m) => Some(std::fs::read_to_string(m).with_context(|| format!("cannot read manifest {}", m.display()))?),
        None => None,
    };
    let manifest_override = manifest_text.as_deref().zip(args.manifest.as_deref());
    let runtime = ws.runtime()?;
    let candidate = runtime.check_candidate(bytes, path, manifest_override, &CompileSpinner::default())?;

    let m = &candidate.manifest;
    eprintln!("{} {} ({}) from {}", m.name, m.version, m.world, path.display());
    if !m.description.is_empty() {
        eprintln!("  {}", m.description);
    }
    let asks = m.capabilities.describe();
    if asks.is_empty() {
        eprintln!("It asks for no capabilities.");
    } else {
        eprintln!("It asks for:");
        for line in &asks {
            eprintln!("  - {line}");
        }
    }
    if !asks.is_empty() && !args.yes && !confirm("Grant these capabilities?")? {
        return Err(InstallError::Declined { name: m.name.clone() }.into());
    }
    let grants = m.capabilities.clone();
    let record = ws.install(candidate, grants)?;
    println!("installed {} {} (sha256 {})", record.name, record.version, &record.sha256[..16]);
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
    println!("{:<24} {:<10} {:<10} {:>10}  SHA256", "NAME", "VERSION", "WORLD", "SIZE");
    for p in plugins {
        println!("{:<24} {:<10} {:<10} {:>9}K  {}", p.name, p.version, p.world, p.size_bytes / 1024, &p.sha256[..16]);
    }
    Ok(())
}

pub fn inspect(ws: &Workspace, name: &str, json: bool) -> anyhow::Result<()> {
    let Some(p) = ws.store().plugin_get(name)? else {
        bail!("no plugin named `{name}` is installed: see `keel list`");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(());
    }
    println!("{} {} ({})", p.name, p.version, p.world);
    if !p.description.is_empty() {
        println!("  {}", p.description);
    }
    println!("sha256:  {}", p.sha256);
    println!("size:    {} bytes", p.size_bytes);
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

pub fn remove(ws: &Workspace, name: &str) -> anyhow::Result<()> {
    match ws.remove(name)? {
        Some(p) => println!("removed {} {} (its memory is kept)", p.name, p.version),
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
