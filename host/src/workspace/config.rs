//! The workspace config (`keel.toml`): what the operator decides. Parsed
//! and validated once at load; errors name the file and the key.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::kernel::policy::PolicyConfig;
use crate::kernel::secrets::SecretSource;
use crate::memory::plane::MemoryConfig;
use crate::model::ModelConfig;
use crate::runtime::Limits;
use crate::runtime::limits::{DEFAULT_CALL_TIMEOUT, DEFAULT_MEMORY_LIMIT_BYTES, DEFAULT_OUTPUT_LIMIT_BYTES};

/// Upper bounds the config may not exceed; they protect the host itself.
pub const MAX_CALL_TIMEOUT_MS: u64 = 10 * 60 * 1000;
pub const MAX_MEMORY_MIB: u64 = 4096;
pub const MAX_OUTPUT_KIB: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceConfig {
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Record collections and semantic decay.
    #[serde(default)]
    pub memory: MemoryConfig,
    /// What proposed actions may do without asking the operator.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Limits on workflow runs.
    #[serde(default)]
    pub workflows: WorkflowsConfig,
    /// Model providers, tiers, prices, budgets and the output cache.
    #[serde(default)]
    pub model: ModelConfig,
    /// Settings per agent, served to it by `config.get`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: BTreeMap<String, BTreeMap<String, String>>,
    /// Settings per connector, served to it by `config.get`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub connectors: BTreeMap<String, BTreeMap<String, String>>,
    /// Where each secret's value is read from (never the value itself).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretSource>,
}

/// `[workflows]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowsConfig {
    /// Runs driven at once over all workflows (each workflow's own
    /// `limits.concurrency` applies too).
    #[serde(default = "default_max_concurrent_runs")]
    pub max_concurrent_runs: u64,
}

fn default_max_concurrent_runs() -> u64 {
    crate::runtime::DEFAULT_MAX_CONCURRENT_RUNS as u64
}

impl Default for WorkflowsConfig {
    fn default() -> Self {
        WorkflowsConfig { max_concurrent_runs: default_max_concurrent_runs() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Wall-clock time one plugin call may take.
    #[serde(default = "default_timeout_ms")]
    pub call_timeout_ms: u64,
    /// Linear memory one plugin instance may use.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Largest output one call may return.
    #[serde(default = "default_output_kib")]
    pub output_kib: u64,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_CALL_TIMEOUT.as_millis() as u64
}
fn default_memory_mib() -> u64 {
    (DEFAULT_MEMORY_LIMIT_BYTES >> 20) as u64
}
fn default_output_kib() -> u64 {
    (DEFAULT_OUTPUT_LIMIT_BYTES >> 10) as u64
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            call_timeout_ms: default_timeout_ms(),
            memory_mib: default_memory_mib(),
            output_kib: default_output_kib(),
        }
    }
}

/// The config written by `keel init`.
pub const DEFAULT_CONFIG: &str = r#"# keel workspace configuration. Docs: docs/configuration.md

[limits]
# Wall-clock time one plugin call may take, host calls included.
call_timeout_ms = 10000
# Linear memory one plugin instance may use.
memory_mib = 256
# Largest output one call may return.
output_kib = 1024

# What proposed actions may do without asking you (docs/kernel.md).
# [policy]
# currency = "EUR"
# confidence_floor = 0.6
# [policy.approval]
# above_by_kind = { "payments.charge" = 500 }   # minor units: 5.00 EUR
# [policy.budget]
# daily = 100000

# Models (docs/models.md). Without this, the built-in offline provider
# (rule-based, free, no network) serves every tier.
# [model.providers.openai]
# kind = "openai"
# base_url = "https://api.openai.com/v1"
# api_key = "openai_key"
# [model.tiers]
# small = ["openai/gpt-4o-mini", "offline"]
# [model.prices."openai/gpt-4o-mini"]
# input_per_million = 0.15
# output_per_million = 0.60
# [model.budget]
# plugin_daily = 1.00
# [secrets.openai_key]
# env = "OPENAI_API_KEY"

# Settings and secrets of connectors (docs/configuration.md).
# [connectors.mail]
# server = "smtp.example.com:587"
# from = "ops@example.com"
# [secrets.smtp_password]
# env = "KEEL_SMTP_PASSWORD"
"#;

impl WorkspaceConfig {
    /// Parses and validates `text`; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<WorkspaceConfig, String> {
        let config: WorkspaceConfig =
            toml::from_str(text).map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))?;
        config.validate().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        check_range("limits.call_timeout_ms", l.call_timeout_ms, 1, MAX_CALL_TIMEOUT_MS)?;
        check_range("limits.memory_mib", l.memory_mib, 1, MAX_MEMORY_MIB)?;
        check_range("limits.output_kib", l.output_kib, 1, MAX_OUTPUT_KIB)?;
        check_range("workflows.max_concurrent_runs", self.workflows.max_concurrent_runs, 1, 10_000)?;
        self.memory.validate()?;
        if let Some(provider) = self.memory.embedder.model_provider()
            && !self.model.providers.contains_key(provider)
        {
            return Err(format!(
                "`memory.embedder.model` names provider `{provider}`, which is not configured: add \
                 [model.providers.{provider}] (docs/models.md) or pick another embedder (docs/memory.md)"
            ));
        }
        self.policy.validate()?;
        let secrets: Vec<&str> = self.secrets.keys().map(String::as_str).collect();
        self.model.validate(&secrets)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            call_timeout: Duration::from_millis(self.limits.call_timeout_ms),
            memory_bytes: (self.limits.memory_mib as usize) << 20,
            output_bytes: (self.limits.output_kib as usize) << 10,
        }
    }
}

fn check_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), String> {
    if value < min || value > max {
        return Err(format!("`{key}` = {value} is out of range: use {min} to {max}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_parses_to_the_defaults() {
        let c = WorkspaceConfig::parse(DEFAULT_CONFIG, Path::new("keel.toml")).unwrap();
        assert_eq!(c.limits(), Limits::default());
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let err = WorkspaceConfig::parse("[limits]\nmemory_mib = 0", Path::new("ws/keel.toml")).unwrap_err();
        assert!(err.contains("ws/keel.toml") && err.contains("limits.memory_mib"), "{err}");
        let err = WorkspaceConfig::parse("[limits]\nmemroy_mib = 3", Path::new("keel.toml")).unwrap_err();
        assert!(err.contains("memroy_mib"), "{err}");
    }
}
