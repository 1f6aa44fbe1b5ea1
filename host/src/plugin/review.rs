//! What the operator reads before granting: a summary of what a plugin asks
//! for, with the workspace's own limits on it (budgets, approval
//! thresholds), and on upgrade the difference from what the installed
//! version was granted.
//!
//! Threat: an update that quietly asks for more (a new action kind, write
//! access, a secret, a host). Anything in [`CapabilityDiff::added`] is not
//! granted until the operator accepts it; see `keel upgrade`.

use crate::kernel::grants::{Access, CapabilitySet, NamespaceAccess, others_data};
use crate::kernel::policy::PolicyConfig;
use crate::model::config::ModelBudgetConfig;

/// The workspace settings that bound what a plugin is granted, and what
/// the other installed plugins were granted.
#[derive(Debug, Clone)]
pub struct Limits {
    pub plugin: String,
    pub policy: PolicyConfig,
    pub model_budget: ModelBudgetConfig,
    /// Other installed plugins and their grants: a namespace they can read
    /// is shared data.
    pub others: Vec<(String, CapabilitySet)>,
}

impl Limits {
    fn money(&self, minor: i64) -> String {
        format!("{}.{:02} {}", minor / 100, (minor % 100).abs(), self.policy.currency)
    }

    fn action_note(&self, kind: &str) -> String {
        let p = &self.policy;
        let mut notes = Vec::new();
        if p.approval.kinds.iter().any(|k| k == kind) {
            notes.push("always needs your approval".to_owned());
        } else if let Some(above) = p.approval.above_by_kind.get(kind).or(p.approval.above.as_ref()) {
            notes.push(format!("approval above {}", self.money(*above)));
        }
        if let Some(daily) = p.budget.plugins.get(&self.plugin).or(p.budget.plugin_daily.as_ref()) {
            notes.push(format!("at most {}/day for this plugin", self.money(*daily)));
        } else if let Some(daily) = p.budget.daily {
            notes.push(format!("at most {}/day for the workspace", self.money(daily)));
        } else {
            notes.push("no daily budget set".to_owned());
        }
        if let Some(rate) = p.rate.kinds.get(kind).or(p.rate.per_plugin.as_ref()) {
            notes.push(format!("{} proposals/min", rate.per_minute));
        }
        format!(" ({})", notes.join(", "))
    }

    fn model_note(&self) -> String {
        let b = &self.model_budget;
        match b.plugins.get(&self.plugin).or(b.plugin_daily.as_ref()).or(b.daily.as_ref()) {
            Some(daily) => format!(" (model budget {daily:.2}/day)"),
            None => " (no model budget set)".to_owned(),
        }
    }

    /// Names the other plugins granted `namespace`: its data is shared.
    fn memory_note(&self, namespace: &str) -> String {
        let users: Vec<String> = self
            .others
            .iter()
            .filter(|(name, grants)| *name != self.plugin && grants.can_read(namespace))
            .map(|(name, grants)| {
                let access = if grants.can_write(namespace) { "read and write" } else { "read" };
                format!("`{name}` ({access})")
            })
            .collect();
        if users.is_empty() { String::new() } else { format!(" (shared: also granted to {})", users.join(", ")) }
    }
}

fn memory_line(m: &NamespaceAccess, limits: &Limits) -> String {
    let access = match m.access {
        Access::Read => "read",
        Access::ReadWrite => "read and write",
    };
    format!("memory: {access} namespace `{}`{}{}", m.namespace, others_data(m), limits.memory_note(&m.namespace))
}

/// One line per capability in `caps`, annotated with the workspace limits.
pub fn summary(caps: &CapabilitySet, limits: &Limits) -> Vec<String> {
    let mut lines: Vec<String> = caps.memory.iter().map(|m| memory_line(m, limits)).collect();
    lines.extend(caps.model.iter().map(|t| format!("model: call the `{t}` tier{}", limits.model_note())));
    lines.extend(caps.actions.iter().map(|k| format!("actions: propose `{k}`{}", limits.action_note(k))));
    lines.extend(caps.secrets.iter().map(|s| format!("secrets: receive `{s}`")));
    lines.extend(caps.outbound.iter().map(|h| format!("network: connect to {h}")));
    lines
}

/// What a new version asks for beyond, and no longer asks for out of, what
/// the installed version was granted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapabilityDiff {
    pub added: CapabilitySet,
    pub removed: CapabilitySet,
}

fn minus<T: PartialEq + Clone>(a: &[T], b: &[T]) -> Vec<T> {
    a.iter().filter(|x| !b.contains(x)).cloned().collect()
}

/// The memory grants of `a` that `b` does not hold: per namespace, access
/// `b` lacks, and other plugins' data `b` cannot reach. Read where `b`
/// may read and write is not missing.
fn memory_minus(a: &CapabilitySet, b: &CapabilitySet) -> Vec<NamespaceAccess> {
    let mut out = Vec::new();
    for m in &a.memory {
        let ns = m.namespace.as_str();
        let access_missing = !b.can_read(ns) || (m.access == Access::ReadWrite && !b.can_write(ns));
        let read_from: Vec<String> = m.read_from.iter().filter(|o| !b.reads_data_of(ns, o)).cloned().collect();
        let write_from: Vec<String> = m.write_from.iter().filter(|o| !b.writes_data_of(ns, o)).cloned().collect();
        if !access_missing && read_from.is_empty() && write_from.is_empty() {
            continue;
        }
        let access = if access_missing || !write_from.is_empty() { m.access } else { Access::Read };
        out.push(NamespaceAccess { namespace: m.namespace.clone(), access, read_from, write_from });
    }
    out
}

fn set_minus(a: &CapabilitySet, b: &CapabilitySet) -> CapabilitySet {
    CapabilitySet {
        memory: memory_minus(a, b),
        model: minus(&a.model, &b.model),
        actions: minus(&a.actions, &b.actions),
        secrets: minus(&a.secrets, &b.secrets),
        outbound: minus(&a.outbound, &b.outbound),
    }
}

impl CapabilityDiff {
    /// `requested` (the new version's manifest) against `granted` (the
    /// installed version's grants). Read access where read and write was
    /// granted counts as removed; write where read was granted, as new;
    /// another plugin's data newly named in `read_from` or `write_from`, as
    /// new.
    pub fn between(granted: &CapabilitySet, requested: &CapabilitySet) -> CapabilityDiff {
        CapabilityDiff { added: set_minus(requested, granted), removed: set_minus(granted, requested) }
    }

    /// True if applying the new version grants nothing not granted before.
    pub fn asks_nothing_new(&self) -> bool {
        self.added.is_empty()
    }

    /// `new: …; removed: …` on one line, for the audit log and prompts.
    pub fn one_line(&self, limits: &Limits) -> String {
        let mut parts = Vec::new();
        if !self.added.is_empty() {
            parts.push(format!("new: {}", summary(&self.added, limits).join(", ")));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed: {}", summary(&self.removed, limits).join(", ")));
        }
        if parts.is_empty() { "no change in capabilities".to_owned() } else { parts.join("; ") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(actions: &[&str], memory: &[(&str, Access)]) -> CapabilitySet {
        CapabilitySet {
            actions: actions.iter().map(|s| s.to_string()).collect(),
            memory: memory.iter().map(|(n, a)| NamespaceAccess::new(*n, *a)).collect(),
            ..CapabilitySet::default()
        }
    }

    #[test]
    fn the_diff_names_new_and_removed_capabilities() {
        let policy = PolicyConfig {
            budget: crate::kernel::policy::BudgetConfig { plugin_daily: Some(50_000), ..Default::default() },
            ..PolicyConfig::default()
        };
        let others = vec![("q".to_owned(), caps(&[], &[("crm", Access::ReadWrite)]))];
        let limits = Limits { plugin: "p".into(), policy, model_budget: ModelBudgetConfig::default(), others };
        let shared = summary(&caps(&[], &[("crm", Access::Read)]), &limits);
        assert_eq!(shared, ["memory: read namespace `crm` (shared: also granted to `q` (read and write))"]);
        let old = caps(&["calendar.create"], &[("crm", Access::Read)]);
        let new = caps(&["payments.charge"], &[("crm", Access::Read)]);
        let diff = CapabilityDiff::between(&old, &new);
        assert!(!diff.asks_nothing_new());
        let line = diff.one_line(&limits);
        assert!(line.starts_with("new: actions: propose `payments.charge` (at most 500.00 EUR/day"), "{line}");
        assert!(line.contains("removed: actions: propose `calendar.create`"), "{line}");
    }

    #[test]
    fn asking_for_less_or_narrower_is_nothing_new() {
        let old = caps(&["a", "b"], &[("crm", Access::ReadWrite)]);
        let new = caps(&["a"], &[("crm", Access::Read)]);
        assert!(CapabilityDiff::between(&old, &new).asks_nothing_new());
        let wider = caps(&["a"], &[("crm", Access::ReadWrite)]);
        assert!(!CapabilityDiff::between(&new, &wider).asks_nothing_new());
    }

    #[test]
    fn reading_another_plugins_data_is_a_new_capability() {
        let limits = Limits {
            plugin: "planner".into(),
            policy: PolicyConfig::default(),
            model_budget: ModelBudgetConfig::default(),
            others: Vec::new(),
        };
        let old = caps(&[], &[("leads", Access::Read)]);
        let mut new = old.clone();
        new.memory[0].read_from = vec!["extractor".into()];
        let diff = CapabilityDiff::between(&old, &new);
        assert!(!diff.asks_nothing_new());
        assert_eq!(diff.one_line(&limits), "new: memory: read namespace `leads`, reading the data of `extractor`");
        let back = CapabilityDiff::between(&new, &old);
        assert!(back.asks_nothing_new());
        assert_eq!(back.one_line(&limits), "removed: memory: read namespace `leads`, reading the data of `extractor`");
        assert!(CapabilityDiff::between(&new, &new).asks_nothing_new());
    }
}
