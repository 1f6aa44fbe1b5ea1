//! Running components: one engine per process, compiled components cached
//! on disk, one `InstancePre` per installed plugin, a fresh store per call.

pub mod call;
pub mod compile_cache;
pub mod engine;
mod host_state;
pub mod limits;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

pub use call::CallError;
pub use compile_cache::{CacheOutcome, CompileCache};
pub use host_state::HostState;
pub use limits::Limits;

use crate::bindings::AgentPre;
use crate::kernel::{Caller, Gate};
use crate::memory::Store;
use crate::memory::plane::MemoryPlane;
use crate::memory::plugins::PluginRecord;
use crate::memory::reclaim::Reclaimer;
use crate::plugin::inspect::{self, ComponentInfo, InstallError};
use crate::plugin::{PluginManifest, World};

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
        store: Arc<Store>,
        plane: Arc<MemoryPlane>,
        limits: Limits,
        cache_dir: PathBuf,
    ) -> wasmtime::Result<Runtime> {
        let engine = engine::build_engine(&limits)?;
        let mut linker = Linker::new(&engine);
        crate::capabilities::add_to_linker(&mut linker)?;
        let ticker = engine::EpochTicker::start(&engine);
        let reclaimer = Reclaimer::start(store.clone(), plane.clone());
        Ok(Runtime {
            engine,
            linker,
            cache: CompileCache::new(cache_dir),
            limits,
            gate: Gate::new(store),
            plane,
            prepared: Mutex::new(HashMap::new()),
            _ticker: ticker,
            _reclaimer: reclaimer,
        })
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
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| InstallError::MissingImport { path: path.into(), detail: format!("{e:#}") })?;
        if info.world == World::Agent {
            AgentPre::new(pre).map_err(|e| InstallError::Invalid { path: path.into(), detail: format!("{e:#}") })?;
        }
        Ok(Candidate { bytes, sha256, manifest, info })
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
