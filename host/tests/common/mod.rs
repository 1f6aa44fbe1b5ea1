//! Shared helpers for the host's integration tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keel_host::kernel::CapabilitySet;
use keel_host::runtime::Runtime;
use keel_host::workspace::Workspace;

/// Paths of the guest plugins built by host/build.rs.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// Limits small enough that faults surface quickly in tests.
pub const TEST_CONFIG: &str = "[limits]\ncall_timeout_ms = 1500\nmemory_mib = 128\noutput_kib = 1024\n";

/// A fresh workspace in a temp folder with [`TEST_CONFIG`].
pub fn workspace() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("keel.toml"), TEST_CONFIG).unwrap();
    (dir, ws)
}

/// A workspace with `config` as its keel.toml, a runtime for it, and the
/// plugin at `plugin` installed.
pub fn host_with(config: &str, plugin: &str) -> (tempfile::TempDir, Workspace, Runtime) {
    let (dir, path) = workspace();
    std::fs::write(path.join("keel.toml"), config).unwrap();
    let ws = Workspace::open(&path).unwrap();
    let runtime = ws.runtime().unwrap();
    install(&ws, &runtime, plugin);
    (dir, ws, runtime)
}

/// Runs a script of `memory-plane` ops (see its README); one result per op.
pub async fn memory_plane_script(runtime: &Runtime, ops: serde_json::Value) -> Vec<serde_json::Value> {
    let input = serde_json::json!({ "ops": ops }).to_string();
    let out = runtime.call("memory-plane", input).await.expect("the script runs");
    serde_json::from_str(&out.output).unwrap()
}

/// Installs the plugin file at `path`, granting what it asks for.
pub fn install(ws: &Workspace, runtime: &Runtime, path: &str) -> String {
    let bytes = std::fs::read(path).unwrap();
    let candidate =
        runtime.check_candidate(bytes, Path::new(path), None, &()).expect("plugin passes the install checks");
    let grants: CapabilitySet = candidate.manifest.capabilities.clone();
    let name = ws.install(candidate, grants).expect("install").name;
    // A connector's kinds are served from now on.
    runtime.kernel().reload_registry().unwrap();
    name
}

/// Installs the connector at `path` with its manifest's `outbound` grants
/// replaced by `outbound` (test peers listen on free loopback ports).
pub fn install_connector(ws: &Workspace, runtime: &Runtime, path: &str, outbound: &[String]) -> String {
    let bytes = std::fs::read(path).unwrap();
    let mut manifest = keel_host::plugin::inspect::read_manifest(&bytes, Path::new(path), None).unwrap();
    manifest.capabilities.outbound = outbound.to_vec();
    let text = toml::to_string(&manifest).unwrap();
    let manifest_path = Path::new(path).with_extension("test.toml");
    let candidate = runtime
        .check_candidate(bytes, Path::new(path), Some((&text, &manifest_path)), &())
        .expect("connector passes the install checks");
    let grants: CapabilitySet = candidate.manifest.capabilities.clone();
    let name = ws.install(candidate, grants).expect("install").name;
    runtime.kernel().reload_registry().unwrap();
    name
}

/// Runs the `keel` binary against workspace `ws`.
pub fn keel(ws: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--workspace")
        .arg(ws)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running keel")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
