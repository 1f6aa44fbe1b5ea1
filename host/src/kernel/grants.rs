//! Capability sets: what a plugin asks for in its manifest and what the
//! operator granted at install. The same shape serves both, so an upgrade
//! can show the difference between them.
//!
//! Memory grants name a namespace (or collection) and, since records and
//! notes carry their owner, whose data in it the plugin may see: its own,
//! unowned data (written by the operator, or before owners were recorded),
//! and that of the plugins its grant names in `read_from` (read) or
//! `write_from` (read, overwrite and delete).

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
    /// Plugins whose records and notes in this namespace this plugin may
    /// read; without them it sees only its own and unowned data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_from: Vec<String>,
    /// Plugins whose records and notes in this namespace this plugin may
    /// also overwrite and delete (and read); needs `read-write` access.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write_from: Vec<String>,
}

impl NamespaceAccess {
    /// A grant of `access` to `namespace` alone, over its own data.
    pub fn new(namespace: impl Into<String>, access: Access) -> NamespaceAccess {
        NamespaceAccess { namespace: namespace.into(), access, read_from: Vec::new(), write_from: Vec::new() }
    }

    fn reads_from(&self, owner: &str) -> bool {
        self.read_from.iter().chain(&self.write_from).any(|o| o == owner)
    }

    fn writes_from(&self, owner: &str) -> bool {
        self.access == Access::ReadWrite && self.write_from.iter().any(|o| o == owner)
    }
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

    /// Whether plugin `me`, holding these grants, may read data of
    /// `namespace` owned by `owner` (`None`: unowned, shared).
    pub fn can_read_owned(&self, me: &str, namespace: &str, owner: Option<&str>) -> bool {
        match owner {
            None => true,
            Some(owner) => owner == me || self.reads_data_of(namespace, owner),
        }
    }

    /// Whether a grant on `namespace` names `owner` in `read_from` or
    /// `write_from`.
    pub fn reads_data_of(&self, namespace: &str, owner: &str) -> bool {
        self.grants_of(namespace).any(|m| m.reads_from(owner))
    }

    /// Whether a read-write grant on `namespace` names `owner` in
    /// `write_from`.
    pub fn writes_data_of(&self, namespace: &str, owner: &str) -> bool {
        self.grants_of(namespace).any(|m| m.writes_from(owner))
    }

    /// Whether plugin `me` may overwrite or delete data of `namespace`
    /// owned by `owner`; the namespace grant itself is checked apart.
    pub fn can_write_owned(&self, me: &str, namespace: &str, owner: Option<&str>) -> bool {
        match owner {
            None => true,
            Some(owner) => owner == me || self.writes_data_of(namespace, owner),
        }
    }

    /// The owners whose data of `namespace` plugin `me` may read (unowned
    /// data aside): itself first, then those its grants name.
    pub fn readable_owners(&self, me: &str, namespace: &str) -> Vec<String> {
        let mut owners = vec![me.to_owned()];
        for owner in self.grants_of(namespace).flat_map(|m| m.read_from.iter().chain(&m.write_from)) {
            if !owners.contains(owner) {
                owners.push(owner.clone());
            }
        }
        owners
    }

    /// `(namespace, owner)` pairs of other plugins' data these grants let
    /// the holder overwrite.
    pub fn writable_others(&self) -> Vec<(String, String)> {
        self.memory
            .iter()
            .filter(|m| m.access == Access::ReadWrite)
            .flat_map(|m| m.write_from.iter().map(|o| (m.namespace.clone(), o.clone())))
            .collect()
    }

    fn grants_of<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a NamespaceAccess> + 'a {
        self.memory.iter().filter(move |m| m.namespace == namespace)
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
            lines.push(format!("memory: {access} namespace `{}`{}", m.namespace, others_data(m)));
        }
        lines.extend(self.model.iter().map(|t| format!("model: call the `{t}` tier")));
        lines.extend(self.actions.iter().map(|k| format!("actions: propose `{k}`")));
        lines.extend(self.secrets.iter().map(|s| format!("secrets: receive `{s}`")));
        lines.extend(self.outbound.iter().map(|h| format!("network: connect to {h}")));
        lines
    }
}

/// `, reading the data of `a`` (and `, reading and overwriting the data
/// of `b``): the other plugins' data a memory grant reaches, for review
/// lines.
pub fn others_data(m: &NamespaceAccess) -> String {
    let names = |list: &[String]| list.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>().join(", ");
    let mut out = String::new();
    if !m.read_from.is_empty() {
        out.push_str(&format!(", reading the data of {}", names(&m.read_from)));
    }
    if !m.write_from.is_empty() {
        out.push_str(&format!(", reading and overwriting the data of {}", names(&m.write_from)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_grant_does_not_allow_writes() {
        let set = CapabilitySet { memory: vec![NamespaceAccess::new("crm", Access::Read)], ..CapabilitySet::default() };
        assert!(set.can_read("crm"));
        assert!(!set.can_write("crm"));
        assert!(!set.can_read("other"));
    }

    #[test]
    fn another_plugins_data_needs_a_grant_that_names_it() {
        let toml = r#"memory = [{ namespace = "leads", access = "read", read_from = ["extractor"] },
                                { namespace = "crm", access = "read-write", write_from = ["sync"] }]"#;
        let set: CapabilitySet = toml::from_str(toml).unwrap();
        assert!(set.can_read_owned("planner", "leads", Some("extractor")));
        assert!(set.can_read_owned("planner", "leads", Some("planner")));
        assert!(set.can_read_owned("planner", "leads", None), "unowned data stays shared");
        assert!(!set.can_read_owned("planner", "leads", Some("spy")));
        assert!(!set.can_read_owned("planner", "crm", Some("extractor")), "grants are per namespace");
        assert!(!set.can_write_owned("planner", "leads", Some("extractor")), "read_from does not allow writes");
        assert!(
            set.can_write_owned("planner", "crm", Some("sync")) && set.can_read_owned("planner", "crm", Some("sync"))
        );
        assert_eq!(set.readable_owners("planner", "leads"), ["planner", "extractor"]);
        assert_eq!(set.writable_others(), [("crm".to_owned(), "sync".to_owned())]);
        assert!(set.describe()[0].ends_with("reading the data of `extractor`"), "{:?}", set.describe());
    }
}
