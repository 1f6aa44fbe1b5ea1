//! A workspace: a folder with `keel.toml` (what the operator decides) and
//! `keel.redb` (everything keel remembers).

pub mod config;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

pub use config::WorkspaceConfig;

use crate::kernel::{CapabilitySet, Kernel, registry};
use crate::memory::audit::AuditEntry;
use crate::memory::plane::MemoryPlane;
use crate::memory::plugins::{PluginRecord, Signer};
use crate::memory::semantic::{EmbedderChoice, EmbedderConfig};
use crate::memory::{Store, StoreError, now_ms};
use crate::model::ModelService;
use crate::model::config::ModelRef;
use crate::model::embedder::ModelEmbedder;
use crate::plugin::InstallError;
use crate::runtime::{Candidate, Runtime};
use crate::workflow::WorkflowError;
use crate::workflow::definition::{self, AgentCheck, WorkflowDef};

pub const CONFIG_FILE: &str = "keel.toml";
pub const DATABASE_FILE: &str = "keel.redb";
/// Workflow definitions, one `NAME.toml` each.
pub const WORKFLOWS_DIR: &str = "workflows";
/// Compiled components; derived data, safe to delete.
pub const COMPILE_CACHE_DIR: &str = "cache/components";

/// Why a workspace could not be created or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkspaceError {
    #[error("{dir} is not a keel workspace (no {CONFIG_FILE}): run `keel init {dir}` or pass --workspace")]
    NotAWorkspace { dir: PathBuf },
    #[error("{dir} is already a keel workspace: use it, or pick an empty folder")]
    AlreadyExists { dir: PathBuf },
    #[error("cannot access {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("invalid workspace config {0}")]
    Config(String),
    #[error("cannot start the wasm runtime: {0}")]
    Runtime(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An open workspace.
#[derive(Debug)]
pub struct Workspace {
    root: PathBuf,
    config: WorkspaceConfig,
    store: Arc<Store>,
    /// Built on first use and shared: the local model loads once, and the
    /// model service and the memory plane agree on it.
    embedder: Arc<OnceLock<EmbedderChoice>>,
    models: OnceLock<Arc<ModelService>>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WorkspaceError + '_ {
    move |source| WorkspaceError::Io { path: path.into(), source }
}

impl Workspace {
    /// Creates a workspace in `dir` (made if missing).
    pub fn init(dir: &Path) -> Result<Workspace, WorkspaceError> {
        let config_path = dir.join(CONFIG_FILE);
        if config_path.exists() {
            return Err(WorkspaceError::AlreadyExists { dir: dir.into() });
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        std::fs::write(&config_path, config::DEFAULT_CONFIG).map_err(io_err(&config_path))?;
        Workspace::open(dir)
    }

    /// Opens the workspace in `dir`, validating its config.
    pub fn open(dir: &Path) -> Result<Workspace, WorkspaceError> {
        let config_path = dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&config_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(WorkspaceError::NotAWorkspace { dir: dir.into() });
            }
            Err(e) => return Err(io_err(&config_path)(e)),
        };
        let config = WorkspaceConfig::parse(&text, &config_path).map_err(WorkspaceError::Config)?;
        let store = Arc::new(Store::open(&dir.join(DATABASE_FILE))?);
        Ok(Workspace { root: dir.into(), config, store, embedder: Arc::default(), models: OnceLock::new() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> &WorkspaceConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Collections and the semantic index, loaded from the database.
    pub fn memory_plane(&self) -> Result<MemoryPlane, WorkspaceError> {
        let config_path = self.root.join(CONFIG_FILE);
        MemoryPlane::load_with_embedder(&self.store, &self.config.memory, self.embedder().clone())
            .map_err(|e| WorkspaceError::Config(format!("{}: [memory]: {e}", config_path.display())))
    }

    /// The kernel: policy, served action kinds, outbox and approvals.
    pub fn kernel(&self) -> Result<Kernel, WorkspaceError> {
        let c = &self.config;
        let kernel = Kernel::load(self.store.clone(), c.policy.clone())?;
        Ok(kernel
            .with_connector_config(c.connectors.clone(), c.secrets.clone())
            .with_agent_settings(c.agents.clone())
            .with_models(self.models().clone()))
    }

    /// The model service: providers, routing, prices, budgets, cache. With
    /// a local model for memory, `offline` in the `embed` tier is that model.
    pub fn models(&self) -> &Arc<ModelService> {
        self.models.get_or_init(|| {
            let c = &self.config;
            let service = ModelService::new(c.model.clone(), &c.policy.currency, &c.secrets);
            let service = match &c.memory.embedder {
                // Loaded when a plugin first embeds, into the cell the memory
                // plane shares; a fallback there is the hashed embedder.
                local @ EmbedderConfig::Local { .. } => {
                    let (cell, config, root) = (self.embedder.clone(), local.clone(), self.root.clone());
                    service.with_offline_embedder(move || {
                        cell.get_or_init(|| EmbedderChoice::open(&config, &root)).embedder.clone()
                    })
                }
                _ => service,
            };
            Arc::new(service)
        })
    }

    /// What the semantic store embeds with (`[memory] embedder`).
    pub fn embedder(&self) -> &EmbedderChoice {
        self.embedder.get_or_init(|| match &self.config.memory.embedder {
            EmbedderConfig::Model { model, dimensions } => {
                let started = ModelRef::parse(model, "embed").and_then(|model_ref| {
                    let embedder =
                        ModelEmbedder::start(self.models().clone(), self.store.clone(), model_ref, *dimensions)?;
                    Ok(Arc::new(embedder) as Arc<dyn crate::memory::semantic::Embedder>)
                });
                EmbedderChoice::model(model, started)
            }
            other => EmbedderChoice::open(other, &self.root),
        })
    }

    /// A runtime for this workspace's plugins.
    pub fn runtime(&self) -> Result<Runtime, WorkspaceError> {
        let plane = Arc::new(self.memory_plane()?);
        let kernel = Arc::new(self.kernel()?);
        let runtime = Runtime::new(kernel, plane, self.config.limits(), self.root.join(COMPILE_CACHE_DIR))
            .map_err(|e| WorkspaceError::Runtime(format!("{e:#}")))?;
        Ok(runtime.with_max_concurrent_runs(self.config.workflows.max_concurrent_runs as usize))
    }

    /// Every workflow definition in `workflows/`, checked against the
    /// installed plugins, with its file's text.
    pub fn workflows(&self) -> Result<Vec<(WorkflowDef, String)>, WorkflowError> {
        let agents = |name: &str| match self.store.plugin_get(name) {
            Ok(Some(p)) if p.world == crate::plugin::World::Agent => AgentCheck::Agent,
            Ok(Some(p)) => AgentCheck::NotAnAgent(p.world.to_string()),
            _ => AgentCheck::Missing,
        };
        let defs = definition::load_dir(&self.root.join(WORKFLOWS_DIR), &agents)
            .map_err(|e| WorkflowError::Definition(e.to_string()))?;
        defs.into_iter()
            .map(|def| {
                let text = std::fs::read_to_string(&def.source)
                    .map_err(|e| WorkflowError::Definition(format!("{}: {e}", def.source.display())))?;
                Ok((def, text))
            })
            .collect()
    }

    /// Workflow `name`, checked, with its file's text.
    pub fn workflow(&self, name: &str) -> Result<(WorkflowDef, String), WorkflowError> {
        let all = self.workflows()?;
        let names: Vec<String> = all.iter().map(|(d, _)| d.name.clone()).collect();
        all.into_iter().find(|(d, _)| d.name == name).ok_or_else(|| WorkflowError::NoSuchWorkflow {
            name: name.to_owned(),
            dir: self.root.join(WORKFLOWS_DIR).display().to_string(),
            available: if names.is_empty() {
                "there are none yet: add workflows/NAME.toml (docs/workflows.md)".to_owned()
            } else {
                format!("the workflows are {}", names.join(", "))
            },
        })
    }

    /// Records a checked candidate with the capabilities the operator
    /// granted, as unsigned. Refuses a name that is already installed.
    pub fn install(&self, candidate: Candidate, grants: CapabilitySet) -> Result<PluginRecord, InstallError> {
        self.install_from(candidate, grants, InstallOrigin::default())
    }

    /// Records a checked candidate from `origin` with the capabilities the
    /// operator granted. Refuses a name that is already installed: see
    /// [`Workspace::upgrade`].
    pub fn install_from(
        &self,
        candidate: Candidate,
        grants: CapabilitySet,
        origin: InstallOrigin,
    ) -> Result<PluginRecord, InstallError> {
        if let Some(existing) = self.store.plugin_get(&candidate.manifest.name)? {
            return Err(InstallError::AlreadyInstalled { name: existing.name, version: existing.version });
        }
        let record = new_record(&candidate, grants, origin, None);
        let entry = AuditEntry::allowed("operator", "plugin.install", format!("{}@{}", record.name, record.version))
            .with_reason(format!("sha256 {}; {}{}", record.sha256, record.provenance(), source_note(&record)));
        let also = kinds_mutation(&record.name, &candidate);
        self.store.plugin_activate(&record, Some(&candidate.bytes), None, entry, also)?;
        Ok(record)
    }

    /// Makes `candidate` the active version of its installed plugin with
    /// `grants`; the replaced version is kept for `keel rollback`. `review`
    /// (the capability diff, on one line) goes to the audit log.
    pub fn upgrade(
        &self,
        candidate: Candidate,
        grants: CapabilitySet,
        origin: InstallOrigin,
        review: &str,
    ) -> Result<PluginRecord, InstallError> {
        let name = candidate.manifest.name.clone();
        let current = self.store.plugin_get(&name)?.ok_or(InstallError::NotInstalled { name })?;
        let record = new_record(&candidate, grants, origin, Some(current.version.clone()));
        let entry = AuditEntry::allowed("operator", "plugin.upgrade", format!("{}@{}", record.name, record.version))
            .with_reason(format!(
                "from {}; sha256 {}; {}{}; {review}",
                current.version,
                record.sha256,
                record.provenance(),
                source_note(&record)
            ));
        let also = kinds_mutation(&record.name, &candidate);
        self.store.plugin_activate(&record, Some(&candidate.bytes), Some(&current), entry, also)?;
        Ok(record)
    }

    /// Keeps `candidate` as a version of its installed plugin that waits
    /// for the operator to accept the capabilities it adds; the installed
    /// version keeps running.
    pub fn stage(
        &self,
        candidate: Candidate,
        origin: InstallOrigin,
        review: &str,
    ) -> Result<PluginRecord, InstallError> {
        let name = candidate.manifest.name.clone();
        let current = self.store.plugin_get(&name)?.ok_or(InstallError::NotInstalled { name })?;
        let record = new_record(&candidate, current.grants.clone(), origin, Some(current.version.clone()));
        let entry = AuditEntry::allowed("operator", "plugin.stage", format!("{}@{}", record.name, record.version))
            .with_reason(format!(
                "awaiting review; {} stays active; sha256 {}; {}; {review}",
                current.version,
                record.sha256,
                record.provenance()
            ));
        self.store.plugin_stage(&record, &candidate.bytes, entry)?;
        Ok(record)
    }

    /// The version of `name` waiting for review, if any.
    pub fn pending(&self, name: &str) -> Result<Option<PluginRecord>, StoreError> {
        Ok(self.store.plugin_versions(name)?.into_iter().rev().find(|v| v.pending).map(|v| v.record))
    }

    /// Makes kept version `version` of `name` active again (a rollback, or
    /// accepting a pending upgrade), with `grants`. `candidate` is the kept
    /// bytes checked again (for a connector, its kinds are registered
    /// anew). `operation` and `reason` go to the audit log.
    pub fn activate_kept(
        &self,
        kept: PluginRecord,
        candidate: &Candidate,
        grants: CapabilitySet,
        previous: Option<String>,
        operation: &str,
        reason: String,
    ) -> Result<PluginRecord, InstallError> {
        let current =
            self.store.plugin_get(&kept.name)?.ok_or(InstallError::NotInstalled { name: kept.name.clone() })?;
        let record = PluginRecord { grants, previous, installed_at_ms: kept.installed_at_ms, ..kept };
        let entry =
            AuditEntry::allowed("operator", operation, format!("{}@{}", record.name, record.version)).with_reason(
                format!("from {}; sha256 {}; {}; {reason}", current.version, record.sha256, record.provenance()),
            );
        let also = kinds_mutation(&record.name, candidate);
        self.store.plugin_activate(&record, None, Some(&current), entry, also)?;
        Ok(record)
    }

    /// Version `version` of `name` among the kept ones, or an error listing
    /// them.
    pub fn kept_version(&self, name: &str, version: &str) -> Result<PluginRecord, InstallError> {
        let versions = self.store.plugin_versions(name)?;
        let kept = versions.iter().map(|v| v.record.version.as_str()).collect::<Vec<_>>().join(", ");
        versions
            .iter()
            .find(|v| v.record.version == version && !v.pending)
            .map(|v| v.record.clone())
            .ok_or_else(|| InstallError::NoSuchVersion { name: name.to_owned(), version: version.to_owned(), kept })
    }

    /// The bytes of a kept version.
    pub fn kept_bytes(&self, record: &PluginRecord) -> Result<Vec<u8>, InstallError> {
        self.store.plugin_blob(&record.sha256)?.ok_or_else(|| InstallError::Invalid {
            path: format!("{}@{}", record.name, record.version).into(),
            detail: "its stored bytes are missing".into(),
        })
    }

    /// Removes plugin `name` and its kept versions; its memory is kept.
    pub fn remove(&self, name: &str) -> Result<Option<PluginRecord>, StoreError> {
        let entry = AuditEntry::allowed("operator", "plugin.remove", name);
        self.store.plugin_remove(name, entry, vec![registry::unregister(name)])
    }

    /// Removes plugin `name` and its kept versions, and in the same commit
    /// deletes the data it owns: every record and semantic note it created
    /// (in any collection or namespace), and the key/value entries of the
    /// namespaces it alone could write (granted read-write to it, granted
    /// to no other installed plugin), since entries carry no owner.
    /// Unowned records and notes (the operator's, or written before owners
    /// were recorded) are kept. Returns what was deleted.
    pub fn remove_purging(&self, name: &str) -> Result<Option<Purged>, WorkspaceError> {
        use crate::memory::committer::{CustomMutation, Mutation};
        use crate::memory::records::{self, Query, RecordWrite, Visible};
        use crate::memory::semantic::storage;
        let Some(record) = self.store.plugin_get(name)? else {
            return Ok(None);
        };
        let others = self.store.plugin_list()?.into_iter().filter(|p| p.name != name).collect::<Vec<_>>();
        let namespaces: Vec<String> = record
            .grants
            .memory
            .iter()
            .filter(|m| {
                record.grants.can_write(&m.namespace) && !others.iter().any(|o| o.grants.can_read(&m.namespace))
            })
            .map(|m| m.namespace.clone())
            .collect();
        let collections = Arc::new(
            records::Collections::new(self.config.memory.collections.clone())
                .map_err(|e| WorkspaceError::Config(format!("[memory.collections]: {e}")))?,
        );
        let mut also = vec![registry::unregister(name)];
        let mut entries = 0;
        for ns in &namespaces {
            for (key, _) in self.store.kv_scan(ns, "", usize::MAX)? {
                also.push(Mutation::KvDelete { namespace: ns.clone(), key });
                entries += 1;
            }
        }
        let owner = [name.to_owned()];
        let mut deletes = Vec::new();
        let read = |collection: &str, e: records::RecordError| {
            WorkspaceError::Config(format!("reading collection `{collection}` to purge it: {e}"))
        };
        for collection in records::stats(&self.store).map_err(|e| read("*", e))?.into_keys() {
            let mut query = Query { collection: collection.clone(), conditions: Vec::new(), limit: 1000, cursor: None };
            loop {
                let page = records::query_visible(&self.store, &collections, &query, Visible::Owners(&owner))
                    .map_err(|e| read(&collection, e))?;
                deletes.extend(
                    page.records.into_iter().filter(|r| r.owner.as_deref() == Some(name)).map(|r| {
                        RecordWrite::Delete { collection: collection.clone(), id: r.id, expected_version: None }
                    }),
                );
                match page.next_cursor {
                    Some(next) => query.cursor = Some(next),
                    None => break,
                }
            }
        }
        let mut forgotten = Vec::new();
        for namespace in storage::note_counts(&self.store)?.into_keys() {
            for id in storage::notes_owned_by(&self.store, &namespace, name)? {
                forgotten.push((namespace.clone(), id));
            }
        }
        let (records, notes) = (deletes.len(), forgotten.len());
        if !deletes.is_empty() {
            also.push(Mutation::Records { collections, writes: deletes, writer: None });
        }
        if !forgotten.is_empty() {
            let apply = Arc::new(move |txn: &redb::WriteTransaction| {
                forgotten.iter().try_for_each(|(ns, id)| storage::delete_note(txn, ns, id).map(drop))
            });
            also.push(Mutation::Custom(CustomMutation { label: "semantic.forget", apply }));
        }
        let entry = AuditEntry::allowed("operator", "plugin.remove", name).with_reason(format!(
            "purged {records} records and {notes} notes it owned, and {entries} key/value entries in namespaces [{}]",
            namespaces.join(", ")
        ));
        let removed = self.store.plugin_remove(name, entry, also)?;
        Ok(removed.map(|record| Purged { record, namespaces, entries, records, notes }))
    }
}

/// What `keel remove --purge` deleted.
#[derive(Debug, Clone)]
pub struct Purged {
    pub record: PluginRecord,
    /// The namespaces whose key/value entries were deleted.
    pub namespaces: Vec<String>,
    pub entries: usize,
    /// Records and semantic notes the plugin owned.
    pub records: usize,
    pub notes: usize,
}

/// Where a plugin came from and who signed it.
#[derive(Debug, Clone, Default)]
pub struct InstallOrigin {
    /// The trusted key whose signature verified; `None`: unsigned.
    pub signed_by: Option<Signer>,
    /// A path, a URL, or `INDEX NAME@VERSION`.
    pub source: String,
}

fn new_record(
    candidate: &Candidate,
    grants: CapabilitySet,
    origin: InstallOrigin,
    previous: Option<String>,
) -> PluginRecord {
    let m = &candidate.manifest;
    PluginRecord {
        name: m.name.clone(),
        version: m.version.clone(),
        world: m.world,
        description: m.description.clone(),
        sha256: candidate.sha256.clone(),
        size_bytes: candidate.bytes.len() as u64,
        requested: m.capabilities.clone(),
        grants,
        imports: candidate.info.imports.clone(),
        exports: candidate.info.exports.clone(),
        installed_at_ms: now_ms(),
        signed_by: origin.signed_by,
        source: origin.source,
        previous,
    }
}

fn source_note(record: &PluginRecord) -> String {
    if record.source.is_empty() { String::new() } else { format!("; from {}", record.source) }
}

/// For a connector, the kinds it serves, replacing what it served before.
fn kinds_mutation(name: &str, candidate: &Candidate) -> Vec<crate::memory::committer::Mutation> {
    match candidate.manifest.world {
        crate::plugin::World::Connector => vec![registry::register(name, candidate.kinds.clone())],
        crate::plugin::World::Agent => Vec::new(),
    }
}
