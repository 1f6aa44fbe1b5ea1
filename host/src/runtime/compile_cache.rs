//! Compiled components cached on disk, so a second start does not
//! recompile (milliseconds to load instead of seconds to compile).
//!
//! The key is the component's sha256 plus the engine's compatibility hash;
//! an entry from another keel or CPU simply misses. Entries are derived
//! data: deleting the folder is always safe.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components of one workspace live.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache.
    Hit,
    /// Compiled now (and stored, if the cache folder is writable).
    Compiled(Duration),
}

impl CompileCache {
    pub fn new(dir: PathBuf) -> CompileCache {
        CompileCache { dir }
    }

    fn entry_path(&self, engine: &Engine, sha256: &str) -> PathBuf {
        let mut h = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        self.dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()))
    }

    /// Whether a compiled entry for these bytes exists.
    pub fn contains(&self, engine: &Engine, sha256: &str) -> bool {
        self.entry_path(engine, sha256).exists()
    }

    /// Loads the component from the cache or compiles it. `on_compile` is
    /// called before a (slow) compilation starts, to show progress.
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
        on_compile: impl FnOnce(),
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.entry_path(engine, sha256);
        if path.exists() {
            match deserialize(engine, &path) {
                Ok(c) => return Ok((c, CacheOutcome::Hit)),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compile cache entry"),
            }
        }
        on_compile();
        let started = Instant::now();
        let serialized = engine.precompile_component(bytes)?;
        let took = started.elapsed();
        if let Err(e) = store_atomically(&path, &serialized) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write compile cache; next start recompiles");
        }
        let component = deserialize_bytes(engine, &serialized)?;
        Ok((component, CacheOutcome::Compiled(took)))
    }
}

#[expect(unsafe_code, reason = "the file is one this keel wrote via precompile_component, in a folder it owns")]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: entries are only written by `store_atomically` from
    // `Engine::precompile_component` output; wasmtime checks the engine
    // compatibility header itself and fails on a mismatch.
    unsafe { Component::deserialize_file(engine, path) }
}

#[expect(unsafe_code, reason = "the bytes were produced by precompile_component a moment ago")]
fn deserialize_bytes(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `bytes` is the direct output of `Engine::precompile_component`
    // on this same engine.
    unsafe { Component::deserialize(engine, bytes) }
}

fn store_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache entries live in a folder");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
