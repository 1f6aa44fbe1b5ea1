//! Running components: one engine per process, compiled components cached
//! on disk, one `InstancePre` per installed plugin, a fresh store per call.

pub mod call;
pub mod compensate;
pub mod compile_cache;
pub mod engine;
pub mod execute;
pub(crate) mod host_state;
pub mod limits;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

pub use call::{CallError, FinishTask, StepContext};
pub use compile_cache::{CacheOutcome, CompileCache};
pub use host_state::HostState;
pub use limits::Limits;

use crate::bindings::AgentPre;
use crate::connectors::{ConnectorCall, ConnectorHost};
use crate::kernel::registry::KindSpec;
use crate::kernel::{Caller, Gate, Kernel};
use crate::memory::Store;
use crate::memory::plane::MemoryPlane;
use crate::memory::plugins::PluginRecord;
use crate::memory::reclaim::Reclaimer;
use crate::plugin::inspect::{self, ComponentInfo, InstallError};
use crate::plugin::{PluginManifest, World};

/// Workflow runs driven at once unless `[workflows] max_concurrent_runs`
/// says otherwise.
pub const DEFAULT_MAX_CONCURRENT_RUNS: usize = 64;

/// Told when a slow compilation starts and ends, to show progress.
pub trait CompileProgress {
    fn started(&self, what: &str, bytes: usize);
    fn finished(&self, took: Duration);
}

/// No progress display (libraries, tests).
impl CompileProgress for () {
    fn started(&self, _: &str, _: usize) {}
    fn finished(&self, _: Duration) {}
}

/// A plugin ready to instantiate.
pub struct PreparedPlugin {
    pub record: PluginRecord,
    pub(crate) caller: Caller,
    pub(crate) pre: AgentPre<HostState>,
}

/// A checked file, ready to be installed.
#[derive(Debug)]
pub struct Candidate {
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub manifest: PluginManifest,
    pub info: ComponentInfo,
    /// For a connector: the action kinds its `describe()` declares.
    pub kinds: Vec<KindSpec>,
}

/// Runs plugins of one workspace.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: CompileCache,
    limits: Limits,
    gate: Gate,
    plane: Arc<MemoryPlane>,
    prepared: Mutex<HashMap<String, Arc<PreparedPlugin>>>,
    connectors: ConnectorHost,
    /// Set once intents left `sending` by an earlier process are settled;
    /// concurrent callers wait for it.
    recovered: tokio::sync::OnceCell<()>,
    /// Workflow runs driven at once, over all workflows.
    run_slots: Arc<tokio::sync::Semaphore>,
    /// Definitions of runs, parsed once: a run's definition never changes.
    definitions: Mutex<HashMap<String, Arc<crate::workflow::definition::WorkflowDef>>>,
    _ticker: engine::EpochTicker,
    /// Deletes expired and retired memory while the runtime lives.
    _reclaimer: Reclaimer,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// The sha256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Runtime {
    pub fn new(
        kernel: Arc<Kernel>,
        plane: Arc<MemoryPlane>,
        limits: Limits,
        cache_dir: PathBuf,
    ) -> wasmtime::Result<Runtime> {
        let engine = engine::build_engine(&limits)?;
        let mut linker = Linker::new(&engine);
        crate::capabilities::add_to_linker(&mut linker)?;
        let ticker = engine::EpochTicker::start(&engine);
        let reclaimer = Reclaimer::start(kernel.store().clone(), plane.clone());
        let connectors = ConnectorHost::new(&engine, &limits).map_err(|e| wasmtime::Error::msg(format!("{e:#}")))?;
        Ok(Runtime {
            engine,
            linker,
            cache: CompileCache::new(cache_dir),
            limits,
            gate: Gate::new(kernel),
            plane,
            prepared: Mutex::new(HashMap::new()),
            connectors,
            recovered: tokio::sync::OnceCell::new(),
            run_slots: Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_CONCURRENT_RUNS)),
            definitions: Mutex::new(HashMap::new()),
            _ticker: ticker,
            _reclaimer: reclaimer,
        })
    }

    /// At most `n` workflow runs are driven at once (`[workflows]
    /// max_concurrent_runs`).
    pub fn with_max_concurrent_runs(mut self, n: usize) -> Runtime {
        self.run_slots = Arc::new(tokio::sync::Semaphore::new(n.max(1)));
        self
    }

    /// Waits for a slot to drive a workflow run in; see
    /// [`Runtime::with_max_concurrent_runs`].
    pub async fn run_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.run_slots.clone().acquire_owned().await.expect("the run semaphore is never closed")
    }

    /// Parsed run definitions by sha256 and source; see
    /// `workflow::engine::Runtime::run_definition`.
    pub(crate) fn parsed_definitions(&self) -> &Mutex<HashMap<String, Arc<crate::workflow::definition::WorkflowDef>>> {
        &self.definitions
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn store(&self) -> &Arc<Store> {
        self.gate.store()
    }

    /// Policy, approvals and the outbox of this runtime's workspace.
    pub fn kernel(&self) -> &Arc<Kernel> {
        self.gate.kernel()
    }

    /// Collections and the semantic index.
    pub fn plane(&self) -> &Arc<MemoryPlane> {
        &self.plane
    }

    fn compile(
        &self,
        bytes: &[u8],
        sha256: &str,
        label: &str,
        progress: &dyn CompileProgress,
    ) -> wasmtime::Result<Component> {
        let (component, outcome) =
            self.cache.load(&self.engine, bytes, sha256, || progress.started(label, bytes.len()))?;
        if let CacheOutcome::Compiled(took) = outcome {
            progress.finished(took);
        }
        Ok(component)
    }

    /// Runs every install check on `bytes` (read from `path`) without
    /// writing anything but the compile cache.
    pub fn check_candidate(
        &self,
        bytes: Vec<u8>,
        path: &Path,
        manifest_override: Option<(&str, &Path)>,
        progress: &dyn CompileProgress,
    ) -> Result<Candidate, InstallError> {
        inspect::check_binary(&bytes, path)?;
        let manifest = inspect::read_manifest(&bytes, path, manifest_override)?;
        let sha256 = sha256_hex(&bytes);
        let label = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        let component = self
            .compile(&bytes, &sha256, &label, progress)
            .map_err(|e| InstallError::Compile { path: path.into(), detail: format!("{e:#}") })?;
        let info = inspect::classify(&component, &self.engine, path)?;
        if info.world != manifest.world {
            return Err(InstallError::WorldMismatch {
                path: path.into(),
                declared: manifest.world,
                actual: info.world,
            });
        }
        let kinds = match info.world {
            World::Agent => {
                let pre = self
                    .linker
                    .instantiate_pre(&component)
                    .map_err(|e| InstallError::MissingImport { path: path.into(), detail: format!("{e:#}") })?;
                AgentPre::new(pre)
                    .map_err(|e| InstallError::Invalid { path: path.into(), detail: format!("{e:#}") })?;
                Vec::new()
            }
            World::Connector => self.describe_connector(&manifest, &component, path)?,
        };
        Ok(Candidate { bytes, sha256, manifest, info, kinds })
    }

    /// Links a connector, asks it what it serves and checks that against
    /// the kinds installed connectors already serve.
    fn describe_connector(
        &self,
        manifest: &PluginManifest,
        component: &Component,
        path: &Path,
    ) -> Result<Vec<KindSpec>, InstallError> {
        let invalid = |detail: String| InstallError::Invalid { path: path.into(), detail };
        self.connectors
            .check_imports(&manifest.name, component)
            .map_err(|e| InstallError::MissingImport { path: path.into(), detail: e.to_string() })?;
        let settings = self.kernel().connector_settings(&manifest.name);
        let call = ConnectorCall {
            name: &manifest.name,
            component,
            outbound: &manifest.capabilities.outbound,
            settings: &settings,
            secrets: &BTreeMap::new(),
        };
        // `describe` is async and this check is not: run it on a thread of
        // its own, which works whether or not the caller is inside tokio.
        let kinds = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                rt.map_err(|e| e.to_string())?.block_on(self.connectors.describe(&call)).map_err(|e| e.to_string())
            })
            .join()
            .unwrap_or_else(|_| Err("describe panicked".to_owned()))
        })
        .map_err(invalid)?;
        self.kernel().registry().check_new(&manifest.name, &kinds).map_err(invalid)?;
        Ok(kinds)
    }

    /// Prepares the component at `path` to run in place of installed agent
    /// `name`, with that agent's grants (for a counterfactual replay; it is
    /// not installed).
    pub fn prepare_file(
        &self,
        path: &Path,
        name: &str,
        progress: &dyn CompileProgress,
    ) -> Result<PreparedPlugin, CallError> {
        let mut record = self.store().plugin_get(name)?.ok_or_else(|| CallError::NotInstalled { name: name.into() })?;
        let load_err = |detail: String| CallError::Load { plugin: name.into(), detail };
        let bytes = std::fs::read(path).map_err(|e| load_err(format!("cannot read {}: {e}", path.display())))?;
        let sha256 = sha256_hex(&bytes);
        let label = path.display().to_string();
        let component = self.compile(&bytes, &sha256, &label, progress).map_err(|e| load_err(format!("{e:#}")))?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| load_err(format!("{e:#}")))?;
        let pre = AgentPre::new(pre).map_err(|e| load_err(format!("{e:#}")))?;
        if let Ok(manifest) = inspect::read_manifest(&bytes, path, None) {
            record.version = manifest.version;
        }
        record.sha256 = sha256;
        let caller = Caller {
            plugin: record.name.clone(),
            version: record.version.clone(),
            grants: Arc::new(record.grants.clone()),
        };
        Ok(PreparedPlugin { record, caller, pre })
    }

    /// Returns the prepared plugin `name`, compiling it on first use.
    pub fn prepare(&self, name: &str, progress: &dyn CompileProgress) -> Result<Arc<PreparedPlugin>, CallError> {
        let record = self.store().plugin_get(name)?.ok_or_else(|| CallError::NotInstalled { name: name.into() })?;
        let mut prepared = self.prepared.lock().expect("prepared-plugin map poisoned");
        if let Some(p) = prepared.get(name).filter(|p| p.record == record) {
            return Ok(p.clone());
        }
        if record.world != World::Agent {
            return Err(CallError::NotAnAgent { name: name.into(), world: record.world });
        }
        let load_err = |detail: String| CallError::Load { plugin: name.into(), detail };
        let bytes = self
            .store()
            .plugin_blob(&record.sha256)?
            .ok_or_else(|| load_err("its component bytes are missing".into()))?;
        let component = self.compile(&bytes, &record.sha256, name, progress).map_err(|e| load_err(format!("{e:#}")))?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| load_err(format!("{e:#}")))?;
        let pre = AgentPre::new(pre).map_err(|e| load_err(format!("{e:#}")))?;
        let caller = Caller {
            plugin: record.name.clone(),
            version: record.version.clone(),
            grants: Arc::new(record.grants.clone()),
        };
        let plugin = Arc::new(PreparedPlugin { record, caller, pre });
        prepared.insert(name.to_owned(), plugin.clone());
        Ok(plugin)
    }
}
