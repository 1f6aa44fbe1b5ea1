//! Builds the guest components (`agents/`, `tests/components/`) and packs each
//! with its `plugin.toml` into a ready-to-install plugin file.
//!
//! Why here: the host's tests, benchmarks and demo all need the same `.wasm`
//! files. Building them from the build script means they are built once per
//! host build — not once per test binary — and are always in step with the
//! SDK and the WIT contract they were compiled against.
//!
//! How:
//! - Each guest workspace is built by a nested
//!   `cargo build --release --target wasm32-wasip2 --manifest-path <ws>/Cargo.toml`.
//! - The nested cargo gets its own target dir, `<outer target>/guests`.
//!   Reusing the outer target dir would deadlock: the outer cargo holds its
//!   lock while this script runs. Both guest workspaces share the nested dir,
//!   so their common dependencies (wit-bindgen, serde) are built once.
//! - Environment that the outer cargo sets for build scripts (rustflags,
//!   wrappers, jobserver, `CARGO_CFG_*`, ...) is removed first, like
//!   wasmtime's `crates/test-programs/artifacts/build.rs` does, so host-only
//!   settings such as coverage flags or clippy never leak into wasm builds.
//! - Each component is packed into `<guests>/plugins/<name>.wasm`: the
//!   component bytes plus one appended component-level custom section
//!   `keel-manifest` whose content is the crate's `plugin.toml`.
//! - `$OUT_DIR/guests.rs` gets one `&str` constant per plugin file, the
//!   `GUESTS_DIR` constant and the `foreach_test_component!` macro.

use std::collections::BTreeSet;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const WASM_TARGET: &str = "wasm32-wasip2";
/// The name of the custom section that carries `plugin.toml`.
const MANIFEST_SECTION: &str = "keel-manifest";
/// `\0asm` followed by the component-model version and layer.
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// Environment variables the outer cargo sets (or the user set for the host
/// build) that must not reach the nested guest build.
const LEAKING_VARS: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "CARGO_PRIMARY_PACKAGE",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "__CARGO_FIX_PLZ",
    "OUT_DIR",
    "TARGET",
    "HOST",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
    "NUM_JOBS",
];
/// Prefixes of build-script variables that must not leak either.
const LEAKING_PREFIXES: &[&str] = &["CARGO_CFG_", "CARGO_FEATURE_", "CARGO_PKG_", "CARGO_MANIFEST_"];

type Result<T, E = String> = std::result::Result<T, E>;

/// One guest crate: `<workspace>/<name>/` with `Cargo.toml` and `plugin.toml`.
struct Guest {
    /// Package name, equal to the directory name (e.g. `loop-forever`).
    name: String,
    dir: PathBuf,
    /// True for `tests/components/*`, listed by `foreach_test_component!`.
    is_test_component: bool,
}

fn main() {
    if let Err(message) = run() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let root = workspace_root()?;
    let guests_dir = outer_target_dir(&root).join("guests");
    let plugins_dir = guests_dir.join("plugins");
    let workspaces = [(root.join("agents"), false), (root.join("tests/components"), true)];

    check_wasm_target()?;

    let started = Instant::now();
    let mut guests = Vec::new();
    for (workspace, is_test_component) in &workspaces {
        build_workspace(workspace, &guests_dir)?;
        guests.extend(find_guests(workspace, *is_test_component)?);
    }
    eprintln!("guest components built in {:.1?}", started.elapsed());

    fs::create_dir_all(&plugins_dir).map_err(|e| format!("creating {}: {e}", plugins_dir.display()))?;
    let release_dir = guests_dir.join(WASM_TARGET).join("release");
    let mut packed = Vec::new();
    for guest in &guests {
        let component = release_dir.join(format!("{}.wasm", guest.name.replace('-', "_")));
        let plugin = plugins_dir.join(format!("{}.wasm", guest.name));
        pack(&component, &guest.dir.join("plugin.toml"), &plugin)?;
        packed.push((guest, plugin));
    }

    write_guests_rs(&packed, &plugins_dir)?;
    emit_rerun_if_changed(&root, &workspaces)?;
    Ok(())
}

/// The keel workspace root: the parent of the host crate.
fn workspace_root() -> Result<PathBuf> {
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?;
    let root = Path::new(&manifest_dir).join("..");
    root.canonicalize().map_err(|e| format!("resolving {}: {e}", root.display()))
}

/// `$CARGO_TARGET_DIR` if set (relative paths taken from the workspace
/// root), else `<root>/target`.
fn outer_target_dir(root: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// Fails early, with the fix, when the wasm target's std is not installed.
fn check_wasm_target() -> Result<()> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .map_err(|e| format!("running {}: {e}", Path::new(&rustc).display()))?;
    let libdir = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !Path::new(libdir.trim()).is_dir() {
        return Err(format!(
            "the {WASM_TARGET} target is not installed; run `rustup target add {WASM_TARGET}` \
             (needed to build the guest components in agents/ and tests/components/)"
        ));
    }
    Ok(())
}

/// Runs the nested `cargo build` for one guest workspace. Its output goes to
/// this script's stderr, which cargo shows when the build fails.
fn build_workspace(workspace: &Path, target_dir: &Path) -> Result<()> {
    let manifest = workspace.join("Cargo.toml");
    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .args(["build", "--release", "--target", WASM_TARGET, "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        // Never on stdout: cargo parses this script's stdout for directives.
        .stdout(io::stderr());
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if LEAKING_VARS.contains(&key) || LEAKING_PREFIXES.iter().any(|p| key.starts_with(p)) {
            cargo.env_remove(key);
        }
    }
    let status = cargo.status().map_err(|e| format!("running nested cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the guest components in {} failed ({status}); the nested cargo output is above",
            manifest.display()
        ));
    }
    Ok(())
}

/// The guest crates of a workspace: subdirectories holding both `Cargo.toml`
/// and `plugin.toml`, sorted by name.
fn find_guests(workspace: &Path, is_test_component: bool) -> Result<Vec<Guest>> {
    let mut guests = Vec::new();
    for dir in sorted_entries(workspace)? {
        if !dir.is_dir() || dir.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        // A folder without Cargo.toml groups guest crates (agents/connectors/).
        if !dir.join("Cargo.toml").is_file() {
            guests.extend(find_guests(&dir, is_test_component)?);
            continue;
        }
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let manifest = dir.join("plugin.toml");
        let toml = fs::read_to_string(&manifest).map_err(|e| format!("reading {}: {e}", manifest.display()))?;
        if manifest_name(&toml) != Some(name.as_str()) {
            return Err(format!("{}: `name` must be \"{name}\", the crate's directory name", manifest.display()));
        }
        guests.push(Guest { name, dir, is_test_component });
    }
    Ok(guests)
}

/// The top-level `name = "..."` of a plugin manifest (before any table).
fn manifest_name(toml: &str) -> Option<&str> {
    toml.lines().map(str::trim).take_while(|line| !line.starts_with('[')).find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "name").then(|| value.trim().trim_matches('"'))
    })
}

/// Writes `component` + a `keel-manifest` custom section holding `manifest`
/// to `plugin`, atomically and only when the bytes changed.
fn pack(component: &Path, manifest: &Path, plugin: &Path) -> Result<()> {
    let mut bytes = fs::read(component).map_err(|e| format!("reading {}: {e}", component.display()))?;
    if !bytes.starts_with(&COMPONENT_HEADER) {
        return Err(format!("{} is not a wasm component (wrong header)", component.display()));
    }
    let toml = fs::read(manifest).map_err(|e| format!("reading {}: {e}", manifest.display()))?;
    bytes.extend_from_slice(&custom_section(MANIFEST_SECTION, &toml));

    if fs::read(plugin).is_ok_and(|existing| existing == bytes) {
        return Ok(());
    }
    let tmp = plugin.with_extension("wasm.tmp");
    fs::write(&tmp, &bytes).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    fs::rename(&tmp, plugin).map_err(|e| format!("renaming {} into place: {e}", tmp.display()))
}

/// A component-level custom section: id 0, size, then name and content.
fn custom_section(name: &str, content: &[u8]) -> Vec<u8> {
    let mut payload = leb128(name.len());
    payload.extend_from_slice(name.as_bytes());
    payload.extend_from_slice(content);
    let mut section = vec![0x00];
    section.extend(leb128(payload.len()));
    section.extend(payload);
    section
}

/// Unsigned LEB128.
fn leb128(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Writes `$OUT_DIR/guests.rs`, for `include!(concat!(env!("OUT_DIR"), "/guests.rs"))`.
fn write_guests_rs(packed: &[(&Guest, PathBuf)], plugins_dir: &Path) -> Result<()> {
    let mut names = BTreeSet::new();
    let mut consts = String::from("// Generated by host/build.rs. Do not edit.\n\n");
    let mut tests = String::new();
    for (guest, plugin) in packed {
        let ident = guest.name.replace('-', "_");
        let upper = ident.to_uppercase();
        if !names.insert(upper.clone()) {
            return Err(format!("two guest components are named {}", guest.name));
        }
        let kind = if guest.is_test_component { "test component" } else { "agent" };
        writeln!(consts, "/// The packed plugin file of the `{}` {kind}.", guest.name).unwrap();
        writeln!(consts, "#[allow(dead_code)]\npub const {upper}: &str = {:?};", path_str(plugin)?).unwrap();
        if guest.is_test_component {
            writeln!(tests, "        $mac!({ident}, {upper});").unwrap();
        }
    }
    writeln!(consts, "/// The directory holding every packed plugin file.").unwrap();
    writeln!(consts, "#[allow(dead_code)]\npub const GUESTS_DIR: &str = {:?};\n", path_str(plugins_dir)?).unwrap();
    consts.push_str(
        "/// Calls `$mac!(snake_name, UPPER_NAME)` once per component in tests/components/.\n\
         #[macro_export]\n\
         macro_rules! foreach_test_component {\n    ($mac:ident) => {\n",
    );
    consts.push_str(&tests);
    consts.push_str("    };\n}\n");

    let out_dir = env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?;
    let path = Path::new(&out_dir).join("guests.rs");
    fs::write(&path, consts).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| format!("{} is not valid UTF-8", path.display()))
}

/// Reruns this script when a guest, the SDK or the contract changes. Files
/// are listed one by one, skipping `target/` dirs: cargo would scan a listed
/// directory recursively, including a guest's own `target/`.
fn emit_rerun_if_changed(root: &Path, workspaces: &[(PathBuf, bool)]) -> Result<()> {
    let mut files = Vec::new();
    for (workspace, _) in workspaces {
        list_files(workspace, &mut files)?;
    }
    list_files(&root.join("sdk/src"), &mut files)?;
    list_files(&root.join("wit"), &mut files)?;
    // The SDK inherits its dependency versions from the root manifest.
    files.extend([root.join("sdk/Cargo.toml"), root.join("Cargo.toml")]);
    for file in files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    Ok(())
}

fn list_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for path in sorted_entries(dir)? {
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                list_files(&path, files)?;
            }
        } else {
            files.push(path);
        }
    }
    Ok(())
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let read = fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
    let mut paths = read
        .map(|entry| entry.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| format!("listing {}: {e}", dir.display()))?;
    paths.sort();
    Ok(paths)
}
