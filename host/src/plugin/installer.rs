//! Installing, upgrading and rolling back plugins, without a terminal: the
//! steps `keel install`, `keel upgrade` and `keel rollback` take, for any
//! front end (the CLI prompts and prints; an API answers in JSON).
//!
//! [`acquire`] fetches the file (pinned), checks its signature and runs the
//! install checks, writing nothing but the compile cache. [`plan`] compares
//! it with what is installed. [`apply`] installs, upgrades, or keeps the
//! version waiting for review when it asks for something new that the
//! operator has not accepted. Changes land in one commit each; a runtime
//! that serves calls picks the new version up at its next call
//! (`Runtime::prepare` compares records) while calls in flight finish on
//! the version they started with.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::review::{self, CapabilityDiff};
use super::signing::{SignatureError, SignatureFile};
use super::source::{Fetched, Fetcher, Source};
use super::{InstallError, PluginManifest, World};
use crate::memory::plugins::{PluginRecord, Signer};
use crate::runtime::{Candidate, CompileProgress, Runtime};
use crate::workspace::{InstallOrigin, Workspace};

/// Where a plugin comes from and how it is checked.
#[derive(Debug, Clone)]
pub struct Request {
    /// A path, a folder, a URL, or with `index` `NAME[@VERSION]`.
    pub target: String,
    pub index: Option<String>,
    /// The sha256 the file must have (required for a URL).
    pub sha256: Option<String>,
    /// The detached signature, if not beside the plugin.
    pub signature: Option<String>,
    /// A manifest to use instead of the embedded one: text and its file.
    pub manifest: Option<(String, PathBuf)>,
    /// Install without a valid signature from a trusted key.
    pub allow_unsigned: bool,
    pub timeout: Duration,
}

/// A checked plugin, ready to be installed.
#[derive(Debug)]
pub struct Acquired {
    pub candidate: Candidate,
    pub origin: InstallOrigin,
    /// Things the operator should read (e.g. installed unsigned).
    pub warnings: Vec<String>,
}

/// Fetches (pinned), checks the signature, then runs the install checks.
/// Nothing is written but the compile cache.
pub async fn acquire(
    ws: &Workspace,
    runtime: &Runtime,
    req: &Request,
    progress: &dyn CompileProgress,
) -> Result<Acquired, InstallError> {
    let source = Source::parse(&req.target, req.index.as_deref());
    let fetcher = Fetcher::new(req.timeout)?;
    let mut fetched = fetcher.fetch(&source, req.sha256.as_deref(), req.signature.as_deref()).await?;
    if req.manifest.is_some() {
        fetched.manifest = req.manifest.clone();
    }
    let mut warnings = Vec::new();
    let signed_by = check_signature(ws, &fetched, req.allow_unsigned, &mut warnings)?;
    let override_text = fetched.manifest.as_ref().map(|(t, p)| (t.as_str(), p.as_path()));
    let candidate = runtime.check_candidate(fetched.bytes.clone(), &fetched.label, override_text, progress)?;
    if let Some(entry) = &fetched.entry {
        let m = &candidate.manifest;
        if m.name != entry.name || m.version != entry.version {
            return Err(InstallError::IndexMismatch {
                origin: fetched.origin.clone(),
                listed: format!("{}@{}", entry.name, entry.version),
                found: format!("{}@{}", m.name, m.version),
            });
        }
    }
    let source = match (&source, &fetched.entry) {
        (Source::Index { index, .. }, Some(e)) => format!("index {index} {}@{}", e.name, e.version),
        _ => fetched.origin.clone(),
    };
    Ok(Acquired { candidate, origin: InstallOrigin { signed_by, source }, warnings })
}

/// The signer if the signature verifies under a trusted key; `None` if the
/// operator allowed an unsigned (or untrusted) plugin; an error otherwise.
/// A signature that does not match the bytes is refused even then.
fn check_signature(
    ws: &Workspace,
    fetched: &Fetched,
    allow_unsigned: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<Signer>, InstallError> {
    let trusted = ws.store().trusted_keys()?;
    let keys: Vec<String> = trusted.iter().map(|k| k.key.clone()).collect();
    let mut unsigned = |why: String| {
        if allow_unsigned {
            warnings.push(format!("{why}; installing it unsigned because of --allow-unsigned"));
            Ok(None)
        } else {
            Err(InstallError::Unsigned { why })
        }
    };
    let Some((bytes, origin)) = &fetched.signature else {
        return unsigned(format!("{} is unsigned (no signature at {})", fetched.origin, fetched.signature_tried));
    };
    let sig = SignatureFile::parse(bytes, origin)?;
    let key = match sig.verify(&fetched.sha256, &keys, fetched.publisher_key.as_deref(), origin) {
        Ok(key) => key,
        Err(SignatureError::Untrusted { key, .. }) => {
            return unsigned(format!(
                "{} is signed by key {key}, which this workspace does not trust (`keel keys add NAME {key}` trusts it)",
                fetched.origin
            ));
        }
        Err(e @ SignatureError::NotThePublisher { .. }) => return unsigned(e.to_string()),
        Err(e) => return Err(e.into()),
    };
    if let Some((_, manifest)) = &fetched.manifest {
        return unsigned(format!(
            "{} is signed, but its manifest {} is a separate file the signature does not cover (pack it into the plugin with `keel pack` before signing)",
            fetched.origin,
            manifest.display()
        ));
    }
    let name = trusted.iter().find(|k| k.key == key).map(|k| k.name.clone()).unwrap_or_default();
    Ok(Some(Signer { name, key }))
}

/// The workspace limits that bound plugin `plugin`, and the other
/// plugins' grants, for the review.
pub fn limits(ws: &Workspace, plugin: &str) -> Result<review::Limits, InstallError> {
    let others = ws.store().plugin_list()?.into_iter().map(|p| (p.name, p.grants)).collect();
    Ok(review::Limits {
        plugin: plugin.to_owned(),
        policy: ws.config().policy.clone(),
        model_budget: ws.config().model.budget.clone(),
        others,
    })
}

/// What installing an acquired plugin would do.
#[derive(Debug, Clone)]
pub enum Plan {
    /// A first install: what it asks for, one line each.
    Install { asks: Vec<String> },
    /// A new version of an installed plugin.
    Upgrade(Box<Upgrade>),
}

/// An upgrade's review.
#[derive(Debug, Clone)]
pub struct Upgrade {
    pub current: PluginRecord,
    pub diff: CapabilityDiff,
    /// Set when a signed plugin comes from another key (or unsigned now).
    pub publisher_change: Option<String>,
    /// The diff (and any publisher change) on one line, for the audit log.
    pub line: String,
}

impl Upgrade {
    /// True if applying it grants nothing not granted before, from the
    /// same publisher.
    pub fn asks_nothing_new(&self) -> bool {
        self.diff.asks_nothing_new() && self.publisher_change.is_none()
    }
}

/// `signed by NAME (KEY)` or `UNSIGNED`.
pub fn describe_origin(origin: &InstallOrigin) -> String {
    match &origin.signed_by {
        Some(s) => format!("signed by {} ({})", s.name, s.key),
        None => "UNSIGNED".to_owned(),
    }
}

/// Compares `acquired` with what is installed; refuses the installed
/// version again, or a kept version number with other bytes.
pub fn plan(ws: &Workspace, acquired: &Acquired) -> Result<Plan, InstallError> {
    let m = &acquired.candidate.manifest;
    let limits = limits(ws, &m.name)?;
    let Some(current) = ws.store().plugin_get(&m.name)? else {
        return Ok(Plan::Install { asks: review::summary(&m.capabilities, &limits) });
    };
    let sha = &acquired.candidate.sha256;
    let kept = ws.store().plugin_versions(&m.name)?;
    if m.version == current.version && *sha == current.sha256 {
        return Err(InstallError::AlreadyInstalled { name: current.name, version: current.version });
    }
    let same = kept.iter().map(|v| &v.record).chain([&current]).find(|r| r.version == m.version && r.sha256 != *sha);
    if let Some(same) = same {
        return Err(InstallError::SameVersionOtherBytes {
            name: current.name.clone(),
            version: same.version.clone(),
            installed: same.sha256[..16].to_owned(),
            offered: sha[..16].to_owned(),
        });
    }
    let diff = CapabilityDiff::between(&current.grants, &m.capabilities);
    let mut line = diff.one_line(&limits);
    let old_key = current.signed_by.as_ref().map(|s| s.key.as_str());
    let new_key = acquired.origin.signed_by.as_ref().map(|s| s.key.as_str());
    let publisher_change = (old_key.is_some() && old_key != new_key).then(|| {
        format!(
            "publisher: {} was {}, this version is {}",
            current.name,
            current.provenance(),
            describe_origin(&acquired.origin)
        )
    });
    if let Some(change) = &publisher_change {
        line = format!("{line}; {change}");
    }
    Ok(Plan::Upgrade(Box::new(Upgrade { current, diff, publisher_change, line })))
}

/// What [`apply`] did.
#[derive(Debug, Clone)]
pub enum Applied {
    Installed(PluginRecord),
    Upgraded {
        from: String,
        record: PluginRecord,
    },
    /// Kept waiting for review; `active` keeps running.
    Staged {
        record: PluginRecord,
        active: String,
    },
}

/// Carries out `plan`. `accepted`: the operator granted what a first
/// install asks for, or what an upgrade adds. An upgrade that adds nothing
/// applies either way; one that adds something and is not accepted is
/// kept waiting for review.
pub fn apply(
    ws: &Workspace,
    runtime: &Runtime,
    acquired: Acquired,
    plan: Plan,
    accepted: bool,
) -> Result<Applied, InstallError> {
    let Acquired { candidate, origin, .. } = acquired;
    let world = candidate.manifest.world;
    let grants = candidate.manifest.capabilities.clone();
    let applied = match plan {
        Plan::Install { asks } => {
            if !asks.is_empty() && !accepted {
                return Err(InstallError::Declined { name: candidate.manifest.name.clone() });
            }
            Applied::Installed(ws.install_from(candidate, grants, origin)?)
        }
        Plan::Upgrade(up) if up.asks_nothing_new() || accepted => {
            let record = ws.upgrade(candidate, grants, origin, &up.line)?;
            Applied::Upgraded { from: up.current.version, record }
        }
        Plan::Upgrade(up) => {
            Applied::Staged { record: ws.stage(candidate, origin, &up.line)?, active: up.current.version }
        }
    };
    if world == World::Connector {
        runtime.kernel().reload_registry()?;
    }
    Ok(applied)
}

/// The manifest of a kept version as stored, to check its bytes again even
/// if it was installed with a separate manifest.
fn kept_manifest(record: &PluginRecord) -> String {
    let manifest = PluginManifest {
        name: record.name.clone(),
        version: record.version.clone(),
        world: record.world,
        description: record.description.clone(),
        capabilities: record.requested.clone(),
    };
    toml::to_string(&manifest).expect("manifests serialize")
}

/// Checks the stored bytes of a kept version again (compiled from cache).
fn recheck(ws: &Workspace, runtime: &Runtime, record: &PluginRecord) -> Result<Candidate, InstallError> {
    let bytes = ws.kept_bytes(record)?;
    let label = PathBuf::from(format!("{}@{}", record.name, record.version));
    let text = kept_manifest(record);
    runtime.check_candidate(bytes, &label, Some((&text, Path::new("the stored manifest"))), &())
}

/// The version of `name` waiting for review, with its diff against the
/// active version's grants.
pub fn pending(ws: &Workspace, name: &str) -> Result<(PluginRecord, PluginRecord, CapabilityDiff), InstallError> {
    let current = ws.store().plugin_get(name)?.ok_or(InstallError::NotInstalled { name: name.to_owned() })?;
    let pending = ws.pending(name)?.ok_or(InstallError::NothingPending { name: name.to_owned() })?;
    let diff = CapabilityDiff::between(&current.grants, &pending.requested);
    Ok((current, pending, diff))
}

/// Makes the version waiting for review active, granting what it asks for
/// (`accepted` must be true if it adds anything).
pub fn accept_pending(
    ws: &Workspace,
    runtime: &Runtime,
    name: &str,
    accepted: bool,
) -> Result<(String, PluginRecord), InstallError> {
    let (current, pending, diff) = pending(ws, name)?;
    if !diff.asks_nothing_new() && !accepted {
        return Err(InstallError::NotAccepted {
            name: pending.name,
            version: pending.version,
            active: current.version,
        });
    }
    let candidate = recheck(ws, runtime, &pending)?;
    let grants = pending.requested.clone();
    let reason = format!("accepted: {}", diff.one_line(&limits(ws, name)?));
    let record =
        ws.activate_kept(pending, &candidate, grants, Some(current.version.clone()), "plugin.upgrade", reason)?;
    if record.world == World::Connector {
        runtime.kernel().reload_registry()?;
    }
    Ok((current.version, record))
}

/// Makes kept version `to` (default: the one active before) of `name`
/// active again, with the grants it had. Returns the replaced version.
pub fn rollback(
    ws: &Workspace,
    runtime: &Runtime,
    name: &str,
    to: Option<&str>,
) -> Result<(String, PluginRecord), InstallError> {
    let current = ws.store().plugin_get(name)?.ok_or(InstallError::NotInstalled { name: name.to_owned() })?;
    let Some(version) = to.map(str::to_owned).or_else(|| current.previous.clone()) else {
        let kept = ws.store().plugin_versions(name)?;
        let kept = kept.iter().map(|v| v.record.version.as_str()).collect::<Vec<_>>().join(", ");
        return Err(InstallError::NoPrevious { name: name.to_owned(), kept });
    };
    if version == current.version {
        return Err(InstallError::AlreadyActive { name: current.name, version });
    }
    let kept = ws.kept_version(name, &version)?;
    let candidate = recheck(ws, runtime, &kept)?;
    let (grants, previous) = (kept.grants.clone(), kept.previous.clone());
    let reason = format!("rolled back from {}", current.version);
    let record = ws.activate_kept(kept, &candidate, grants, previous, "plugin.rollback", reason)?;
    if record.world == World::Connector {
        runtime.kernel().reload_registry()?;
    }
    Ok((current.version, record))
}
