//! A second start loads the compiled component from the cache instead of
//! compiling it again.

mod common;

use std::cell::Cell;
use std::time::Duration;

use keel_host::runtime::CompileProgress;
use keel_host::workspace::{COMPILE_CACHE_DIR, Workspace};

/// Counts compilations.
#[derive(Default)]
struct CountCompiles(Cell<u32>);

impl CompileProgress for CountCompiles {
    fn started(&self, _: &str, _: usize) {
        self.0.set(self.0.get() + 1);
    }
    fn finished(&self, _: Duration) {}
}

#[test]
fn second_start_uses_the_compile_cache() {
    let (_dir, path) = common::workspace();
    {
        let ws = Workspace::open(&path).unwrap();
        let runtime = ws.runtime().unwrap();
        let bytes = std::fs::read(common::guests::HELLO).unwrap();
        let compiles = CountCompiles::default();
        let candidate = runtime.check_candidate(bytes, "hello.wasm".as_ref(), None, &compiles).unwrap();
        assert_eq!(compiles.0.get(), 1, "install compiles once");
        let grants = candidate.manifest.capabilities.clone();
        ws.install(candidate, grants).unwrap();
    }

    // A new workspace handle and runtime stand for a new process.
    let ws = Workspace::open(&path).unwrap();
    let compiles = CountCompiles::default();
    ws.runtime().unwrap().prepare("hello", &compiles).unwrap();
    assert_eq!(compiles.0.get(), 0, "loaded from the cache");

    // The cache is derived data: without it keel compiles again.
    std::fs::remove_dir_all(path.join(COMPILE_CACHE_DIR)).unwrap();
    ws.runtime().unwrap().prepare("hello", &compiles).unwrap();
    assert_eq!(compiles.0.get(), 1, "recompiled after the cache was deleted");
}

#[test]
fn a_corrupt_cache_entry_is_recompiled_not_trusted() {
    let (_dir, path) = common::workspace();
    let ws = Workspace::open(&path).unwrap();
    let runtime = ws.runtime().unwrap();
    common::install(&ws, &runtime, common::guests::ECHO);
    for entry in std::fs::read_dir(path.join(COMPILE_CACHE_DIR)).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let compiles = CountCompiles::default();
    let fresh = ws.runtime().unwrap();
    fresh.prepare("echo", &compiles).unwrap();
    assert_eq!(compiles.0.get(), 1);
}
