//! Capability sets: what a plugin asks for in its manifest and what the
//! operator granted at install. The same shape serves both, so an upgrade
//! can show the difference between them.

use serde::{Deserialize, Serialize};

/// How a plugin may use a memory namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    Read,
    ReadWrite,
}

/// One memory namespace and the access to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceAccess {
    pub namespace: String,
    pub access: Access,
}

/// A set of capabilities. Anything not listed is denied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitySet {
    /// Memory namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memory: Vec<NamespaceAccess>,
    /// Model tiers (`small`, `large`) or named models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model: Vec<String>,
    /// Action kinds the plugin may propose, e.g. `email.send`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// Names of secrets handed to the plugin at call time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// `host:port` pairs a connector may reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<String>,
}

impl CapabilitySet {
    pub fn can_read(&self, namespace: &str) -> bool {
        self.memory.iter().any(|m| m.namespace == namespace)
    }

    pub fn can_write(&self, namespace: &str) -> bool {
        self.memory.iter().any(|m| m.namespace == namespace && m.access == Access::ReadWrite)
    }

    pub fn has_model(&self, tier: &str) -> bool {
        self.model.iter().any(|t| t == tier)
    }

    pub fn has_action(&self, kind: &str) -> bool {
        self.actions.iter().any(|k| k == kind)
    }

    pub fn has_secret(&self, name: &str) -> bool {
        self.secrets.iter().any(|s| s == name)
    }

    pub fn is_empty(&self) -> bool {
        self == &CapabilitySet::default()
    }

    /// One line per capability, for install prompts and `keel inspect`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for m in &self.memory {
            let access = match m.access {
                Access::Read => "read",
                Access::ReadWrite => "read and write",
            };
            lines.push(format!("memory: {access} namespace `{}`", m.namespace));
        }
        lines.extend(self.model.iter().map(|t| format!("model: call the `{t}` tier")));
        lines.extend(self.actions.iter().map(|k| format!("actions: propose `{k}`")));
        lines.extend(self.secrets.iter().map(|s| format!("secrets: receive `{s}`")));
        lines.extend(self.outbound.iter().map(|h| format!("network: connect to {h}")));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_grant_does_not_allow_writes() {
        let set = CapabilitySet {
            memory: vec![NamespaceAccess { namespace: "crm".into(), access: Access::Read }],
            ..CapabilitySet::default()
        };
        assert!(set.can_read("crm"));
        assert!(!set.can_write("crm"));
        assert!(!set.can_read("other"));
    }
}
