//! Live reload of the policy under `keel serve`: when `keel.toml` changes,
//! its `[policy]` replaces the running one from the next proposal on. A
//! file that does not load (a bad key, a bad value) changes nothing: the
//! error naming the key is logged and the running policy stays. Only the
//! operator can change the file; no plugin-facing interface reaches this.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::memory::audit::AuditEntry;
use crate::memory::committer::Batch;
use crate::runtime::Runtime;
use crate::workspace::{CONFIG_FILE, WorkspaceConfig};

/// Watches the workspace config for changes.
#[derive(Debug)]
pub struct PolicyWatch {
    path: PathBuf,
    seen: Option<SystemTime>,
}

impl PolicyWatch {
    pub fn new(workspace: &std::path::Path) -> PolicyWatch {
        let path = workspace.join(CONFIG_FILE);
        let seen = modified(&path);
        PolicyWatch { path, seen }
    }

    /// Applies the file's policy if the file changed since the last look.
    /// Returns whether a new policy took effect.
    pub async fn check(&mut self, runtime: &Runtime) -> bool {
        let now = modified(&self.path);
        if now == self.seen {
            return false;
        }
        self.seen = now;
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot read the changed config; the policy is unchanged");
                return false;
            }
        };
        let config = match WorkspaceConfig::parse(&text, &self.path) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(error = %e, "the changed config does not load; the policy is unchanged: fix it and save again");
                return false;
            }
        };
        let kernel = runtime.kernel();
        if *kernel.policy() == config.policy {
            return false;
        }
        kernel.set_policy(config.policy);
        let entry = AuditEntry::allowed("operator", "policy.reload", CONFIG_FILE).with_reason("keel.toml changed");
        if let Err(e) = runtime.store().commit(Batch::audit_only(entry)).await {
            tracing::error!(error = %e, "auditing the policy reload failed");
        }
        tracing::info!("policy reloaded from keel.toml");
        true
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
