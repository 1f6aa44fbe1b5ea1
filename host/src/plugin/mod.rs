//! Plugins: the manifest a plugin ships, the single-file package that
//! carries it, where a plugin comes from (files, folders, URLs, indexes)
//! and how it is pinned, publisher signatures, the checks a file must pass
//! before it is installed, and the capability review shown to the operator.

pub mod index;
pub mod inspect;
pub mod installer;
pub mod manifest;
pub mod package;
pub mod review;
pub mod signing;
pub mod source;

pub use inspect::{ComponentInfo, InstallError};
pub use manifest::{PluginManifest, World};
