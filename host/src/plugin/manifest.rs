//! The plugin manifest (`plugin.toml`): what a plugin is and what it asks
//! for. It is separate from the workspace config, which says what the
//! operator grants.

use serde::{Deserialize, Serialize};

use crate::kernel::grants::{Access, CapabilitySet};

/// Which world of `keel:plugin@0.1.0` a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    Agent,
    Connector,
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            World::Agent => "agent",
            World::Connector => "connector",
        })
    }
}

/// A plugin's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginManifest {
    /// Lowercase letters, digits and `-`, 1 to 64 characters.
    pub name: String,
    pub version: String,
    pub world: World,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub capabilities: CapabilitySet,
}

/// Longest plugin name.
pub const MAX_NAME_LEN: usize = 64;

impl PluginManifest {
    /// Parses and validates a manifest; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<PluginManifest, String> {
        let manifest: PluginManifest =
            toml::from_str(text).map_err(|e| format!("{origin}: {}", e.to_string().trim_end()))?;
        manifest.validate().map_err(|e| format!("{origin}: {e}"))?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), String> {
        validate_name(&self.name).map_err(|e| format!("`name`: {e}"))?;
        if self.version.trim().is_empty() {
            return Err("`version` is empty: set it, e.g. version = \"0.1.0\"".into());
        }
        let caps = &self.capabilities;
        for (i, m) in caps.memory.iter().enumerate() {
            if m.namespace.is_empty() || m.namespace.len() > 128 {
                return Err(format!("`capabilities.memory[{i}].namespace` must be 1 to 128 characters"));
            }
            for (key, owners) in [("read_from", &m.read_from), ("write_from", &m.write_from)] {
                for owner in owners {
                    validate_name(owner).map_err(|e| format!("`capabilities.memory[{i}].{key}`: {e}"))?;
                    if *owner == self.name {
                        return Err(format!(
                            "`capabilities.memory[{i}].{key}` names the plugin itself: its own data needs no grant"
                        ));
                    }
                }
            }
            if !m.write_from.is_empty() && m.access != Access::ReadWrite {
                return Err(format!(
                    "`capabilities.memory[{i}].write_from` needs access = \"read-write\" on `{}`",
                    m.namespace
                ));
            }
        }
        for (key, list) in [("model", &caps.model), ("actions", &caps.actions), ("secrets", &caps.secrets)] {
            if let Some(i) = list.iter().position(|s| s.trim().is_empty()) {
                return Err(format!("`capabilities.{key}[{i}]` is empty"));
            }
        }
        if self.world == World::Agent && !caps.outbound.is_empty() {
            return Err(
                "`capabilities.outbound`: agents have no network access; only connectors may ask for hosts".into()
            );
        }
        for (i, hp) in caps.outbound.iter().enumerate() {
            let ok = hp.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(format!("`capabilities.outbound[{i}]` = {hp:?} is not `host:port`"));
            }
        }
        Ok(())
    }
}

/// Checks a plugin name: lowercase letters, digits and `-`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let valid_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !valid_chars || name.starts_with('-') {
        return Err(format!(
            "{name:?} is not a valid plugin name: use 1 to {MAX_NAME_LEN} lowercase letters, digits and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err =
            PluginManifest::parse("name='a'\nversion='1'\nworld='agent'\ncolour='red'", "plugin.toml").unwrap_err();
        assert!(err.contains("plugin.toml") && err.contains("colour"), "{err}");
    }

    #[test]
    fn agents_cannot_ask_for_network() {
        let text = "name='a'\nversion='1'\nworld='agent'\n[capabilities]\noutbound=['smtp.test:25']";
        let err = PluginManifest::parse(text, "m").unwrap_err();
        assert!(err.contains("outbound"), "{err}");
    }

    #[test]
    fn owner_grants_name_valid_other_plugins() {
        let base = "name='p'\nversion='1'\nworld='agent'\n[capabilities]\nmemory=[";
        let parse = |grant: &str| PluginManifest::parse(&format!("{base}{grant}]"), "m");
        parse("{namespace='leads', access='read', read_from=['extractor']}").unwrap();
        let err = parse("{namespace='leads', access='read', write_from=['extractor']}").unwrap_err();
        assert!(err.contains("write_from") && err.contains("read-write"), "{err}");
        let err = parse("{namespace='leads', access='read', read_from=['Extractor']}").unwrap_err();
        assert!(err.contains("read_from"), "{err}");
        let err = parse("{namespace='leads', access='read', read_from=['p']}").unwrap_err();
        assert!(err.contains("itself"), "{err}");
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(validate_name("Hello").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("lead-extractor2").is_ok());
    }
}
