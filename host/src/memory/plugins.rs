//! Installed plugins: their records (manifest, grants, hashes) and the
//! component bytes, so a workspace is complete in one file.

use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::audit::AuditEntry;
use super::committer::{Batch, CustomMutation, Mutation};
use super::{Store, StoreError};
use crate::kernel::grants::CapabilitySet;
use crate::plugin::World;

const PLUGINS: TableDefinition<&str, &str> = TableDefinition::new("plugins");
const PLUGIN_BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("plugin_blobs");
/// Every kept version: `NAME@VERSION` -> [`KeptVersion`] (JSON).
const PLUGIN_VERSIONS: TableDefinition<&str, &str> = TableDefinition::new("plugin_versions");
/// Trusted publisher keys: name -> [`TrustedKey`] (JSON).
const TRUSTED_KEYS: TableDefinition<&str, &str> = TableDefinition::new("trusted_keys");

/// Versions kept per plugin (the active one, the one a rollback returns to,
/// and older ones), besides a version awaiting review.
pub const MAX_KEPT_VERSIONS: usize = 5;

/// One installed plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub name: String,
    pub version: String,
    pub world: World,
    pub description: String,
    /// sha256 of the installed file, hex.
    pub sha256: String,
    pub size_bytes: u64,
    /// What the manifest asked for.
    pub requested: CapabilitySet,
    /// What the operator granted.
    pub grants: CapabilitySet,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub installed_at_ms: u64,
    /// The trusted publisher key whose signature this file carried; `None`
    /// for an unsigned plugin (installed with `--allow-unsigned`, or before
    /// keel checked signatures). Always serialized: `null` says unsigned.
    #[serde(default)]
    pub signed_by: Option<Signer>,
    /// Where the file came from (a path, a URL, or `INDEX NAME@VERSION`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// The version that was active before this one: where `keel rollback`
    /// goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

impl PluginRecord {
    /// `signed by NAME (ed25519:…)` or `unsigned`.
    pub fn provenance(&self) -> String {
        match &self.signed_by {
            Some(s) => format!("signed by {} ({})", s.name, s.key),
            None => "unsigned".to_owned(),
        }
    }
}

/// A trusted key that signed a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signer {
    /// The name the operator gave the key (`keel keys add NAME KEY`).
    pub name: String,
    /// `ed25519:HEX`.
    pub key: String,
}

/// A version of a plugin kept in the workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptVersion {
    pub record: PluginRecord,
    /// Checked and stored, but waiting for the operator to accept the
    /// capabilities it adds (`keel upgrade NAME --accept-new`).
    #[serde(default)]
    pub pending: bool,
}

/// A publisher key the operator trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedKey {
    pub name: String,
    /// `ed25519:HEX`.
    pub key: String,
    pub added_at_ms: u64,
}

fn version_key(name: &str, version: &str) -> String {
    format!("{name}@{version}")
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(PLUGINS)?;
    txn.open_table(PLUGIN_BLOBS)?;
    txn.open_table(PLUGIN_VERSIONS)?;
    txn.open_table(TRUSTED_KEYS)?;
    Ok(())
}

fn parse(name: &str, json: &str) -> Result<PluginRecord, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt { what: format!("plugin record `{name}`"), detail: e.to_string() })
}

fn parse_version(key: &str, json: &str) -> Result<KeptVersion, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt { what: format!("plugin version `{key}`"), detail: e.to_string() })
}

/// Versions of `name` in `table`, oldest installed first.
fn versions_in(
    table: &impl ReadableTable<&'static str, &'static str>,
    name: &str,
) -> Result<Vec<KeptVersion>, StoreError> {
    let (from, to) = (format!("{name}@"), format!("{name}A"));
    let mut out = Vec::new();
    for item in table.range(from.as_str()..to.as_str())? {
        let (k, v) = item?;
        out.push(parse_version(k.value(), v.value())?);
    }
    out.sort_by_key(|v| v.record.installed_at_ms);
    Ok(out)
}

/// Drops the blob `sha256` unless an installed plugin or a kept version
/// still uses it.
fn drop_blob_if_unused(txn: &WriteTransaction, sha256: &str) -> Result<(), StoreError> {
    for item in txn.open_table(PLUGINS)?.iter()? {
        let (k, v) = item?;
        if parse(k.value(), v.value())?.sha256 == sha256 {
            return Ok(());
        }
    }
    for item in txn.open_table(PLUGIN_VERSIONS)?.iter()? {
        let (k, v) = item?;
        if parse_version(k.value(), v.value())?.record.sha256 == sha256 {
            return Ok(());
        }
    }
    txn.open_table(PLUGIN_BLOBS)?.remove(sha256)?;
    Ok(())
}

/// Forgets the oldest versions of `name` beyond [`MAX_KEPT_VERSIONS`],
/// never the active one, the one it rolls back to, or a pending one.
fn prune_versions(txn: &WriteTransaction, active: &PluginRecord) -> Result<(), StoreError> {
    let versions = versions_in(&txn.open_table(PLUGIN_VERSIONS)?, &active.name)?;
    let mut kept: Vec<&KeptVersion> = versions.iter().filter(|v| !v.pending).collect();
    let mut dropped = Vec::new();
    while kept.len() > MAX_KEPT_VERSIONS {
        let Some(i) = kept
            .iter()
            .position(|v| v.record.version != active.version && Some(&v.record.version) != active.previous.as_ref())
        else {
            break;
        };
        dropped.push(kept.remove(i).record.clone());
    }
    for old in dropped {
        txn.open_table(PLUGIN_VERSIONS)?.remove(version_key(&old.name, &old.version).as_str())?;
        drop_blob_if_unused(txn, &old.sha256)?;
    }
    Ok(())
}

impl Store {
    /// Records `record` and its bytes, with the audit entry, in one commit.
    /// Stores `record` and its component, with `also` (e.g. the action kinds
    /// a connector serves) in the same commit.
    pub fn plugin_insert(
        &self,
        record: &PluginRecord,
        bytes: &[u8],
        entry: AuditEntry,
        also: Vec<Mutation>,
    ) -> Result<(), StoreError> {
        self.plugin_activate(record, Some(bytes), None, entry, also)
    }

    /// Makes `record` the active version of its plugin (an install, an
    /// upgrade or a rollback), keeping it among the versions, with its
    /// bytes when they are new, `also_keep` (the version it replaces, if it
    /// was not kept yet) and `also` in the same commit.
    pub fn plugin_activate(
        &self,
        record: &PluginRecord,
        bytes: Option<&[u8]>,
        also_keep: Option<&PluginRecord>,
        entry: AuditEntry,
        also: Vec<Mutation>,
    ) -> Result<(), StoreError> {
        let record = record.clone();
        let json = serde_json::to_string(&record).expect("plugin records always serialize");
        let kept = serde_json::to_string(&KeptVersion { record: record.clone(), pending: false })
            .expect("plugin records always serialize");
        let replaced = also_keep.map(|r| {
            let key = version_key(&r.name, &r.version);
            (key, serde_json::to_string(&KeptVersion { record: r.clone(), pending: false }).expect("serializes"))
        });
        let bytes = bytes.map(<[u8]>::to_vec);
        let apply = move |txn: &WriteTransaction| -> Result<(), StoreError> {
            let name = record.name.as_str();
            let previous = txn.open_table(PLUGINS)?.insert(name, json.as_str())?.map(|v| v.value().to_owned());
            {
                let mut versions = txn.open_table(PLUGIN_VERSIONS)?;
                if let Some((key, value)) = &replaced
                    && versions.get(key.as_str())?.is_none()
                {
                    versions.insert(key.as_str(), value.as_str())?;
                }
                versions.insert(version_key(name, &record.version).as_str(), kept.as_str())?;
            }
            if let Some(bytes) = &bytes {
                txn.open_table(PLUGIN_BLOBS)?.insert(record.sha256.as_str(), bytes.as_slice())?;
            }
            // A version never kept (installed before versions were) and now
            // replaced: its bytes go unless something else uses them.
            if let Some(prev) = previous {
                let prev = parse(name, &prev)?;
                drop_blob_if_unused(txn, &prev.sha256)?;
            }
            prune_versions(txn, &record)
        };
        let mut mutations = vec![Mutation::Custom(CustomMutation { label: "plugin.activate", apply: Arc::new(apply) })];
        mutations.extend(also);
        self.commit_blocking(Batch { mutations, audit: vec![entry] })?;
        Ok(())
    }

    /// Keeps `record` as a version of its plugin awaiting the operator's
    /// review, with its bytes; the active version is unchanged. An earlier
    /// pending version of the plugin is forgotten.
    pub fn plugin_stage(&self, record: &PluginRecord, bytes: &[u8], entry: AuditEntry) -> Result<(), StoreError> {
        let record = record.clone();
        let kept = serde_json::to_string(&KeptVersion { record: record.clone(), pending: true })
            .expect("plugin records always serialize");
        let bytes = bytes.to_vec();
        let apply = move |txn: &WriteTransaction| -> Result<(), StoreError> {
            let stale: Vec<PluginRecord> = versions_in(&txn.open_table(PLUGIN_VERSIONS)?, &record.name)?
                .into_iter()
                .filter(|v| v.pending && v.record.version != record.version)
                .map(|v| v.record)
                .collect();
            txn.open_table(PLUGIN_BLOBS)?.insert(record.sha256.as_str(), bytes.as_slice())?;
            txn.open_table(PLUGIN_VERSIONS)?
                .insert(version_key(&record.name, &record.version).as_str(), kept.as_str())?;
            for old in stale {
                txn.open_table(PLUGIN_VERSIONS)?.remove(version_key(&old.name, &old.version).as_str())?;
                drop_blob_if_unused(txn, &old.sha256)?;
            }
            Ok(())
        };
        let mutations = vec![Mutation::Custom(CustomMutation { label: "plugin.stage", apply: Arc::new(apply) })];
        self.commit_blocking(Batch { mutations, audit: vec![entry] })?;
        Ok(())
    }

    pub fn plugin_get(&self, name: &str) -> Result<Option<PluginRecord>, StoreError> {
        let txn = self.db().begin_read()?;
        let plugins = txn.open_table(PLUGINS)?;
        plugins.get(name)?.map(|v| parse(name, v.value())).transpose()
    }

    /// The kept versions of plugin `name` (active, older and pending),
    /// oldest installed first.
    pub fn plugin_versions(&self, name: &str) -> Result<Vec<KeptVersion>, StoreError> {
        let txn = self.db().begin_read()?;
        versions_in(&txn.open_table(PLUGIN_VERSIONS)?, name)
    }

    /// The installed bytes with this sha256.
    pub fn plugin_blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db().begin_read()?;
        let blobs = txn.open_table(PLUGIN_BLOBS)?;
        Ok(blobs.get(sha256)?.map(|v| v.value().to_vec()))
    }

    /// Every installed plugin, by name.
    pub fn plugin_list(&self) -> Result<Vec<PluginRecord>, StoreError> {
        let txn = self.db().begin_read()?;
        let plugins = txn.open_table(PLUGINS)?;
        let mut out = Vec::new();
        for item in plugins.iter()? {
            let (k, v) = item?;
            out.push(parse(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Removes plugin `name` and every kept version (its memory stays),
    /// dropping bytes nothing else uses, with `also` in the same commit.
    /// Returns the removed record.
    pub fn plugin_remove(
        &self,
        name: &str,
        entry: AuditEntry,
        also: Vec<Mutation>,
    ) -> Result<Option<PluginRecord>, StoreError> {
        let Some(record) = self.plugin_get(name)? else {
            return Ok(None);
        };
        let name = record.name.clone();
        let apply = move |txn: &WriteTransaction| -> Result<(), StoreError> {
            let mut shas = Vec::new();
            if let Some(v) = txn.open_table(PLUGINS)?.remove(name.as_str())? {
                shas.push(parse(&name, v.value())?.sha256);
            }
            let versions = versions_in(&txn.open_table(PLUGIN_VERSIONS)?, &name)?;
            for kept in versions {
                txn.open_table(PLUGIN_VERSIONS)?.remove(version_key(&name, &kept.record.version).as_str())?;
                shas.push(kept.record.sha256);
            }
            shas.dedup();
            for sha in shas {
                drop_blob_if_unused(txn, &sha)?;
            }
            Ok(())
        };
        let mut mutations = vec![Mutation::Custom(CustomMutation { label: "plugin.remove", apply: Arc::new(apply) })];
        mutations.extend(also);
        self.commit_blocking(Batch { mutations, audit: vec![entry] })?;
        Ok(Some(record))
    }

    /// The publisher keys the operator trusts, by name.
    pub fn trusted_keys(&self) -> Result<Vec<TrustedKey>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(TRUSTED_KEYS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.push(serde_json::from_str(v.value()).map_err(|e| StoreError::Corrupt {
                what: format!("trusted key `{}`", k.value()),
                detail: e.to_string(),
            })?);
        }
        Ok(out)
    }

    /// Trusts `key` (replacing a key of the same name), audited.
    pub fn trusted_key_add(&self, key: &TrustedKey, entry: AuditEntry) -> Result<(), StoreError> {
        let (name, json) = (key.name.clone(), serde_json::to_string(key).expect("keys serialize"));
        let apply = move |txn: &WriteTransaction| -> Result<(), StoreError> {
            txn.open_table(TRUSTED_KEYS)?.insert(name.as_str(), json.as_str())?;
            Ok(())
        };
        let mutations = vec![Mutation::Custom(CustomMutation { label: "keys.add", apply: Arc::new(apply) })];
        self.commit_blocking(Batch { mutations, audit: vec![entry] })?;
        Ok(())
    }

    /// Stops trusting the key named `name`, audited; returns it.
    pub fn trusted_key_remove(&self, name: &str, entry: AuditEntry) -> Result<Option<TrustedKey>, StoreError> {
        let Some(found) = self.trusted_keys()?.into_iter().find(|k| k.name == name) else {
            return Ok(None);
        };
        let name = name.to_owned();
        let apply = move |txn: &WriteTransaction| -> Result<(), StoreError> {
            txn.open_table(TRUSTED_KEYS)?.remove(name.as_str())?;
            Ok(())
        };
        let mutations = vec![Mutation::Custom(CustomMutation { label: "keys.remove", apply: Arc::new(apply) })];
        self.commit_blocking(Batch { mutations, audit: vec![entry] })?;
        Ok(Some(found))
    }
}
