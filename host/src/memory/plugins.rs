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
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(PLUGINS)?;
    txn.open_table(PLUGIN_BLOBS)?;
    Ok(())
}

fn parse(name: &str, json: &str) -> Result<PluginRecord, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt { what: format!("plugin record `{name}`"), detail: e.to_string() })
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
        let json = serde_json::to_string(record).expect("plugin records always serialize");
        let (name, sha256, bytes) = (record.name.clone(), record.sha256.clone(), bytes.to_vec());
        let apply = move |txn: &WriteTransaction| -> Result<(), StoreError> {
            txn.open_table(PLUGINS)?.insert(name.as_str(), json.as_str())?;
            txn.open_table(PLUGIN_BLOBS)?.insert(sha256.as_str(), bytes.as_slice())?;
            Ok(())
        };
        let mut mutations = vec![Mutation::Custom(CustomMutation { label: "plugin.insert", apply: Arc::new(apply) })];
        mutations.extend(also);
        self.commit_blocking(Batch { mutations, audit: vec![entry] })?;
        Ok(())
    }

    pub fn plugin_get(&self, name: &str) -> Result<Option<PluginRecord>, StoreError> {
        let txn = self.db().begin_read()?;
        let plugins = txn.open_table(PLUGINS)?;
        plugins.get(name)?.map(|v| parse(name, v.value())).transpose()
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

    /// Removes a plugin (its memory stays); drops its bytes unless another
    /// plugin shares them. Returns the removed record.
    /// Removes plugin `name`, with `also` in the same commit.
    pub fn plugin_remove(
        &self,
        name: &str,
        entry: AuditEntry,
        also: Vec<Mutation>,
    ) -> Result<Option<PluginRecord>, StoreError> {
        let Some(record) = self.plugin_get(name)? else {
            return Ok(None);
        };
        let shared = self.plugin_list()?.iter().any(|p| p.name != record.name && p.sha256 == record.sha256);
        let (name, sha256) = (record.name.clone(), record.sha256.clone());
        let apply = move |txn: &WriteTransaction| -> Result<(), StoreError> {
            txn.open_table(PLUGINS)?.remove(name.as_str())?;
            if !shared {
                txn.open_table(PLUGIN_BLOBS)?.remove(sha256.as_str())?;
            }
            Ok(())
        };
        let mut mutations = vec![Mutation::Custom(CustomMutation { label: "plugin.remove", apply: Arc::new(apply) })];
        mutations.extend(also);
        self.commit_blocking(Batch { mutations, audit: vec![entry] })?;
        Ok(Some(record))
    }
}
