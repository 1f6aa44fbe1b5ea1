//! Checks a file must pass before it is installed, in order: it is
//! WebAssembly, it is a component (not a core module), it is complete and
//! valid, it carries a valid manifest, and it implements a keel world.
//! Each failure has its own message; nothing is written until all pass.

use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::manifest::{PluginManifest, World};
use super::package;
use crate::memory::StoreError;

const MAGIC: &[u8; 4] = b"\0asm";
const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0, 1, 0];

/// The export that makes a component an agent.
pub const AGENT_EXPORT: &str = "handle";
/// The export that makes a component a connector.
pub const CONNECTOR_EXPORT: &str = "keel:plugin/connector-api@0.1.0";

/// Why a plugin could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "{path} is not a WebAssembly file (it does not start with \\0asm): pass the .wasm component your build produced"
    )]
    NotWasm { path: PathBuf },
    #[error(
        "{path} is a core WebAssembly module, not a component: build it for wasm32-wasip2, or wrap it with `wasm-tools component new`"
    )]
    CoreModule { path: PathBuf },
    #[error("{path} is truncated (the file ends inside a section at byte {offset}): rebuild or download it again")]
    Truncated { path: PathBuf, offset: usize },
    #[error("{path} is not a valid component ({detail}): rebuild it against keel's wit/")]
    Invalid { path: PathBuf, detail: String },
    #[error(
        "{path} is a component of another world: it exports [{exports}], but a keel agent exports `{AGENT_EXPORT}` and a connector `{CONNECTOR_EXPORT}`; build it against the `agent` or `connector` world in keel's wit/"
    )]
    WrongWorld { path: PathBuf, exports: String },
    #[error(
        "{path}: its manifest says world = \"{declared}\" but the component is a {actual}: fix `world` in plugin.toml"
    )]
    WorldMismatch { path: PathBuf, declared: World, actual: World },
    #[error(
        "{path} needs an import keel does not provide ({detail}); keel provides keel:plugin/*@0.1.0 and wasi:*@0.2"
    )]
    MissingImport { path: PathBuf, detail: String },
    #[error(
        "{path} carries no keel manifest: embed one with `keel pack {path} --manifest plugin.toml`, or pass `--manifest plugin.toml`"
    )]
    NoManifest { path: PathBuf },
    #[error("invalid plugin manifest {0}")]
    Manifest(String),
    #[error(
        "plugin `{name}` is already installed (version {version}): install another version with `keel upgrade {name} --from FILE`, or `keel remove {name}` first"
    )]
    AlreadyInstalled { name: String, version: String },
    #[error(
        "version {version} of `{name}` is already installed with other bytes (sha256 {installed}, this file {offered}): a changed plugin needs a new version; ask the publisher"
    )]
    SameVersionOtherBytes { name: String, version: String, installed: String, offered: String },
    #[error("no plugin named `{name}` is installed: see `keel list`")]
    NotInstalled { name: String },
    #[error("`{name}` has no earlier version to roll back to (kept: {kept}): pass --to VERSION")]
    NoPrevious { name: String, kept: String },
    #[error("version {version} of `{name}` is not kept (kept: {kept})")]
    NoSuchVersion { name: String, version: String, kept: String },
    #[error(
        "`{name}` has no upgrade waiting for review: pass --from SOURCE (a file, folder, URL with --sha256, or --index URL)"
    )]
    NothingPending { name: String },
    #[error(
        "{path} is the plugin `{found}`, not `{expected}`: check the source, or install it under its own name with `keel install`"
    )]
    OtherPlugin { path: PathBuf, found: String, expected: String },
    #[error("installation of `{name}` cancelled: nothing was granted or written")]
    Declined { name: String },
    #[error("cannot compile {path}: {detail}")]
    Compile { path: PathBuf, detail: String },
    #[error(transparent)]
    Fetch(#[from] super::source::FetchError),
    #[error(transparent)]
    Signature(#[from] super::signing::SignatureError),
    #[error(
        "{why}: ask the publisher for a signature and trust their key (`keel keys add`), or pass --allow-unsigned if you trust this file"
    )]
    Unsigned { why: String },
    #[error("{origin}: the index lists {listed} but the file is {found}: the index is wrong; tell its maintainer")]
    IndexMismatch { origin: String, listed: String, found: String },
    #[error("{name} {version} is already the active version")]
    AlreadyActive { name: String, version: String },
    #[error("{name} {version} asks for new capabilities: rerun with --accept-new to grant them; {active} stays active")]
    NotAccepted { name: String, version: String, active: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the checks learned about a file.
#[derive(Debug, Clone)]
pub struct ComponentInfo {
    pub world: World,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// Checks the header and validates the whole binary.
pub fn check_binary(bytes: &[u8], path: &Path) -> Result<(), InstallError> {
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(if bytes.len() < 8 && MAGIC.starts_with(&bytes[..bytes.len().min(4)]) && !bytes.is_empty() {
            InstallError::Truncated { path: path.into(), offset: bytes.len() }
        } else {
            InstallError::NotWasm { path: path.into() }
        });
    }
    let version: [u8; 4] = bytes[4..8].try_into().expect("length checked above");
    if version == CORE_VERSION {
        return Err(InstallError::CoreModule { path: path.into() });
    }
    if version != COMPONENT_VERSION {
        return Err(InstallError::Invalid {
            path: path.into(),
            detail: format!("unknown binary version {version:02x?}"),
        });
    }
    let mut validator = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
    validator.validate_all(bytes).map_err(|e| {
        if e.message().contains("unexpected end") {
            InstallError::Truncated { path: path.into(), offset: e.offset() }
        } else {
            InstallError::Invalid { path: path.into(), detail: format!("{} at byte {}", e.message(), e.offset()) }
        }
    })?;
    Ok(())
}

/// Reads the manifest from `override_text` or from the embedded section.
pub fn read_manifest(
    bytes: &[u8],
    path: &Path,
    override_text: Option<(&str, &Path)>,
) -> Result<PluginManifest, InstallError> {
    let (text, origin) = match override_text {
        Some((text, origin)) => (text.to_owned(), origin.display().to_string()),
        None => match package::embedded_manifest(bytes) {
            None => return Err(InstallError::NoManifest { path: path.into() }),
            Some(Err(_)) => {
                return Err(InstallError::Manifest(format!("embedded in {}: not UTF-8 text", path.display())));
            }
            Some(Ok(text)) => (text, format!("embedded in {}", path.display())),
        },
    };
    PluginManifest::parse(&text, &origin).map_err(InstallError::Manifest)
}

/// Works out which keel world a compiled component implements.
pub fn classify(component: &Component, engine: &Engine, path: &Path) -> Result<ComponentInfo, InstallError> {
    let ty = component.component_type();
    let exports: Vec<(String, bool)> = ty
        .exports(engine)
        .map(|(name, item)| (name.to_owned(), matches!(item.ty, ComponentItem::ComponentFunc(_))))
        .collect();
    let imports: Vec<String> = ty.imports(engine).map(|(name, _)| name.to_owned()).collect();
    let world = if exports.iter().any(|(n, is_func)| n == AGENT_EXPORT && *is_func) {
        World::Agent
    } else if exports.iter().any(|(n, _)| n == CONNECTOR_EXPORT) {
        World::Connector
    } else {
        let names: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
        return Err(InstallError::WrongWorld { path: path.into(), exports: names.join(", ") });
    };
    Ok(ComponentInfo { world, imports, exports: exports.into_iter().map(|(n, _)| n).collect() })
}
