//! Plugins: the manifest a plugin ships, the single-file package that
//! carries it, and the checks a file must pass before it is installed.

pub mod inspect;
pub mod manifest;
pub mod package;

pub use inspect::{ComponentInfo, InstallError};
pub use manifest::{PluginManifest, World};
