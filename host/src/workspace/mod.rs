//! A workspace: a folder with `keel.toml` (what the operator decides) and
//! `keel.redb` (everything keel remembers).

pub mod config;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use config::WorkspaceConfig;

use crate::kernel::{CapabilitySet, Kernel, registry};
use crate::memory::audit::AuditEntry;
use crate::memory::plane::MemoryPlane;
use crate::memory::plugins::PluginRecord;
use crate::memory::{Store, StoreError, now_ms};
use crate::model::ModelService;
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
        Ok(Workspace { root: dir.into(), config, store })
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
        MemoryPlane::load(&self.store, &self.config.memory)
            .map_err(|e| WorkspaceError::Config(format!("{}: [memory]: {e}", config_path.display())))
    }

    /// The kernel: policy, served action kinds, outbox and approvals.
    pub fn kernel(&self) -> Result<Kernel, WorkspaceError> {
        let c = &self.config;
        let models = ModelService::new(c.model.clone(), &c.policy.currency, &c.secrets);
        let kernel = Kernel::load(self.store.clone(), c.policy.clone())?;
        Ok(kernel
            .with_connector_config(c.connectors.clone(), c.secrets.clone())
            .with_agent_settings(c.agents.clone())
            .with_models(models))
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
    /// granted. Refuses a name that is already installed.
    pub fn install(&self, candidate: Candidate, grants: CapabilitySet) -> Result<PluginRecord, InstallError> {
        let m = &candidate.manifest;
        if let Some(existing) = self.store.plugin_get(&m.name)? {
            return Err(InstallError::AlreadyInstalled { name: existing.name, version: existing.version });
        }
        let record = PluginRecord {
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
        };
        let mut entry =
            AuditEntry::allowed("operator", "plugin.install", format!("{}@{}", record.name, record.version));
        entry.reason = Some(format!("sha256 {}", record.sha256));
        let also = if candidate.kinds.is_empty() {
            Vec::new()
        } else {
            vec![registry::register(&record.name, candidate.kinds.clone())]
        };
        self.store.plugin_insert(&record, &candidate.bytes, entry, also)?;
        Ok(record)
    }

    /// Removes plugin `name`; its memory is kept.
    pub fn remove(&self, name: &str) -> Result<Option<PluginRecord>, StoreError> {
        let entry = AuditEntry::allowed("operator", "plugin.remove", name);
        self.store.plugin_remove(name, entry, vec![registry::unregister(name)])
    }
}
