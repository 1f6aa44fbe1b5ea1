//! `[model]` in `keel.toml`: providers, which models serve each tier,
//! prices, budgets and the output cache. Checked once at load; errors name
//! the key. Money is written in currency units (`1.50`) and kept as integer
//! micro-units (`1_500_000`) from then on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::offline::OfflineProvider;
use super::openai::OpenAiConfig;

/// The tiers a workspace maps to models.
pub const TIERS: [&str; 3] = ["small", "large", "embed"];

/// `[model]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `[model.providers.NAME]`: hosted or local model servers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Tier -> models tried in order (`provider/model`, or `offline`).
    /// Tiers left out are served by the offline provider.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tiers: BTreeMap<String, Vec<String>>,
    /// Re-ask `large` when a `small` answer is unsure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate: Option<EscalateConfig>,
    /// `provider/model` -> price. Every hosted model needs one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, PriceConfig>,
    #[serde(default)]
    pub budget: ModelBudgetConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    /// Pausing background workflows whose model spend buys too little.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruning: Option<PruningConfig>,
}

/// `[model.pruning]`: a background workflow (any trigger but manual) whose
/// model cost per useful action over the last `window_days` exceeds
/// `max_cost_per_action` is paused for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruningConfig {
    /// Currency units per executed action.
    pub max_cost_per_action: f64,
    /// UTC days looked back, today included (1 to 90).
    #[serde(default = "default_window_days")]
    pub window_days: u64,
    /// Finished runs in the window before judging (at least 1).
    #[serde(default = "default_min_runs")]
    pub min_runs: u32,
}

fn default_window_days() -> u64 {
    7
}
fn default_min_runs() -> u32 {
    3
}

/// `[model.batch]`: background embeddings (`embed-background`) for the same
/// model arriving within `window_ms` go to the provider as one request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    /// Most texts in one provider request.
    #[serde(default = "default_max_texts")]
    pub max_texts: usize,
}

fn default_window_ms() -> u64 {
    10
}
fn default_max_texts() -> usize {
    128
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { window_ms: default_window_ms(), max_texts: default_max_texts() }
    }
}

/// `[model.providers.NAME]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProviderConfig {
    /// Any server speaking OpenAI's chat completions and embeddings API:
    /// OpenAI, Ollama, vLLM, llama.cpp's server.
    Openai(OpenAiConfig),
}

/// `[model.escalate]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalateConfig {
    /// A `small` answer with a schema whose `confidence` field is below
    /// this (0 to 1) is asked again of `large`.
    pub below: f64,
}

/// `[model.prices."provider/model"]`, in currency units per million tokens,
/// as providers quote them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub input_per_million: f64,
    #[serde(default)]
    pub output_per_million: f64,
}

/// A price in micro-units per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    pub input: u64,
    pub output: u64,
}

impl Price {
    /// Cost of a call in micro-units, rounded up: a call is never free by
    /// rounding.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> u64 {
        let micro_millionths =
            u128::from(input_tokens) * u128::from(self.input) + u128::from(output_tokens) * u128::from(self.output);
        u64::try_from(micro_millionths.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }
}

/// `[model.budget]`: what model calls may cost per UTC day, in currency
/// units of `policy.currency`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelBudgetConfig {
    /// The whole workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<f64>,
    /// Each plugin, unless listed under `plugins`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_daily: Option<f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugins: BTreeMap<String, f64>,
    /// Named workflows, over all their runs' steps.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub workflows: BTreeMap<String, f64>,
}

/// `[model.cache]`: answers to deterministic requests (temperature 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_ttl_hours")]
    pub ttl_hours: f64,
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
}

fn yes() -> bool {
    true
}
fn default_ttl_hours() -> f64 {
    7.0 * 24.0
}
fn default_max_entries() -> u64 {
    10_000
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { enabled: true, ttl_hours: default_ttl_hours(), max_entries: default_max_entries() }
    }
}

/// One model a tier may be served by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    pub provider: String,
    pub model: String,
}

impl ModelRef {
    /// `provider/model` (the model name may itself contain `/`), or
    /// `offline` for the offline provider's model for `tier`.
    pub fn parse(text: &str, tier: &str) -> Result<ModelRef, String> {
        if text == OfflineProvider::NAME {
            let model = if tier == "embed" { OfflineProvider::EMBED_MODEL } else { OfflineProvider::CHAT_MODEL };
            return Ok(ModelRef { provider: OfflineProvider::NAME.into(), model: model.into() });
        }
        match text.split_once('/') {
            Some((provider, model)) if !provider.is_empty() && !model.is_empty() => {
                Ok(ModelRef { provider: provider.into(), model: model.into() })
            }
            _ => Err(format!("{text:?} is not `provider/model` (e.g. \"openai/gpt-4o-mini\") or \"offline\"")),
        }
    }

    pub fn is_offline(&self) -> bool {
        self.provider == OfflineProvider::NAME
    }
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// Currency units to micro-units; `None` for a negative or absurd value.
pub fn to_micros(units: f64) -> Option<u64> {
    (units.is_finite() && (0.0..=1e12).contains(&units)).then(|| (units * 1e6).round() as u64)
}

impl ModelConfig {
    /// Checks every value, naming the key at fault as written in `keel.toml`.
    /// `secrets` are the names declared under `[secrets]`.
    pub fn validate(&self, secrets: &[&str]) -> Result<(), String> {
        for (name, provider) in &self.providers {
            if name == OfflineProvider::NAME || name.is_empty() || name.contains('/') {
                return Err(format!(
                    "`model.providers.{name}`: pick another name (not empty, no `/`, not \"offline\", which is built in)"
                ));
            }
            let ProviderConfig::Openai(c) = provider;
            c.validate(name)?;
            if let Some(secret) = c.api_key.as_deref().filter(|s| !secrets.contains(s)) {
                return Err(format!(
                    "`model.providers.{name}.api_key` names secret `{secret}`, which is not declared: add [secrets.{secret}] with env = \"VAR\" or file = \"PATH\""
                ));
            }
        }
        for (tier, chain) in &self.tiers {
            if !TIERS.contains(&tier.as_str()) {
                return Err(format!("`model.tiers.{tier}`: unknown tier; the tiers are {}", TIERS.join(", ")));
            }
            if chain.is_empty() {
                return Err(format!("`model.tiers.{tier}` is empty: list at least one model, e.g. [\"offline\"]"));
            }
            for entry in chain {
                let model = ModelRef::parse(entry, tier).map_err(|e| format!("`model.tiers.{tier}`: {e}"))?;
                self.check_model(&model).map_err(|e| format!("`model.tiers.{tier}`: {e}"))?;
            }
        }
        for (model, price) in &self.prices {
            let key = format!("model.prices.\"{model}\"");
            ModelRef::parse(model, "small").map_err(|e| format!("`{key}`: {e}"))?;
            for (field, value) in
                [("input_per_million", price.input_per_million), ("output_per_million", price.output_per_million)]
            {
                to_micros(value).ok_or_else(|| format!("`{key}.{field}` = {value} must be 0 or more"))?;
            }
        }
        if let Some(e) = self.escalate.filter(|e| !(0.0..=1.0).contains(&e.below)) {
            return Err(format!("`model.escalate.below` = {} is out of range: use 0 to 1", e.below));
        }
        let b = &self.budget;
        let budgets =
            [("model.budget.daily".to_owned(), b.daily), ("model.budget.plugin_daily".to_owned(), b.plugin_daily)]
                .into_iter()
                .chain(b.plugins.iter().map(|(p, v)| (format!("model.budget.plugins.{p}"), Some(*v))))
                .chain(b.workflows.iter().map(|(w, v)| (format!("model.budget.workflows.{w}"), Some(*v))));
        for (key, value) in budgets {
            if let Some(v) = value.filter(|v| to_micros(*v).is_none()) {
                return Err(format!("`{key}` = {v} must be an amount of 0 or more, in currency units (e.g. 1.50)"));
            }
        }
        let c = &self.cache;
        if !(c.ttl_hours.is_finite() && c.ttl_hours > 0.0) {
            return Err(format!("`model.cache.ttl_hours` = {} must be a positive number of hours", c.ttl_hours));
        }
        if c.max_entries == 0 {
            return Err("`model.cache.max_entries` = 0: use enabled = false to turn the cache off".into());
        }
        if let Some(p) = &self.pruning {
            to_micros(p.max_cost_per_action).ok_or_else(|| {
                format!(
                    "`model.pruning.max_cost_per_action` = {} must be 0 or more, in currency units",
                    p.max_cost_per_action
                )
            })?;
            if !(1..=90).contains(&p.window_days) {
                return Err(format!("`model.pruning.window_days` = {} is out of range: use 1 to 90", p.window_days));
            }
            if p.min_runs == 0 {
                return Err("`model.pruning.min_runs` = 0: judge after at least 1 run".into());
            }
        }
        let batch = &self.batch;
        if batch.window_ms > 1000 {
            return Err(format!("`model.batch.window_ms` = {} is out of range: use 0 to 1000", batch.window_ms));
        }
        if !(1..=2048).contains(&batch.max_texts) {
            return Err(format!("`model.batch.max_texts` = {} is out of range: use 1 to 2048", batch.max_texts));
        }
        Ok(())
    }

    /// Checks that `model` names a configured provider and has a price.
    pub fn check_model(&self, model: &ModelRef) -> Result<(), String> {
        if model.is_offline() {
            return match model.model.as_str() {
                OfflineProvider::CHAT_MODEL | OfflineProvider::EMBED_MODEL => Ok(()),
                other => Err(format!(
                    "the offline provider has no model `{other}`: use \"offline\" or \"offline/{}\"",
                    OfflineProvider::CHAT_MODEL
                )),
            };
        }
        if !self.providers.contains_key(&model.provider) {
            return Err(format!(
                "`{model}` names provider `{}`, which is not configured: add [model.providers.{}]",
                model.provider, model.provider
            ));
        }
        if !self.prices.contains_key(&model.to_string()) {
            return Err(format!(
                "`{model}` has no price: add [model.prices.\"{model}\"] with input_per_million and output_per_million (0 for a free local model)"
            ));
        }
        Ok(())
    }

    /// The models tried, in order, for `tier` (`small`, `large`, `embed`
    /// or a granted `provider/model`).
    pub fn chain(&self, tier: &str) -> Result<Vec<ModelRef>, String> {
        if let Some(chain) = self.tiers.get(tier) {
            return chain.iter().map(|m| ModelRef::parse(m, tier)).collect();
        }
        if TIERS.contains(&tier) {
            return Ok(vec![ModelRef::parse(OfflineProvider::NAME, tier)?]);
        }
        let model = ModelRef::parse(tier, "small")?;
        self.check_model(&model)?;
        Ok(vec![model])
    }

    /// The price of `model`; the offline provider is free.
    pub fn price(&self, model: &ModelRef) -> Price {
        self.prices
            .get(&model.to_string())
            .map(|p| Price {
                input: to_micros(p.input_per_million).unwrap_or(0),
                output: to_micros(p.output_per_million).unwrap_or(0),
            })
            .unwrap_or_default()
    }

    /// The daily model budget of `plugin`, in micro-units, if any.
    pub fn plugin_budget(&self, plugin: &str) -> Option<u64> {
        self.budget.plugins.get(plugin).copied().or(self.budget.plugin_daily).and_then(to_micros)
    }

    /// The daily model budget of `workflow`, in micro-units, if any.
    pub fn workflow_budget(&self, workflow: &str) -> Option<u64> {
        self.budget.workflows.get(workflow).copied().and_then(to_micros)
    }

    /// The workspace's daily model budget, in micro-units, if any.
    pub fn daily_budget(&self) -> Option<u64> {
        self.budget.daily.and_then(to_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<ModelConfig, String> {
        let c: ModelConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate(&["openai_key"]).map(|()| c)
    }

    const HOSTED: &str = r#"
        [providers.openai]
        kind = "openai"
        base_url = "https://api.openai.com/v1"
        api_key = "openai_key"
        [tiers]
        small = ["openai/gpt-4o-mini", "offline"]
        large = ["openai/gpt-4o"]
        [prices."openai/gpt-4o-mini"]
        input_per_million = 0.15
        output_per_million = 0.60
        [prices."openai/gpt-4o"]
        input_per_million = 2.5
        output_per_million = 10
        [budget]
        plugin_daily = 1.00
        plugins = { writer = 0.25 }
    "#;

    #[test]
    fn tiers_map_to_chains_and_default_to_offline() {
        let c = config(HOSTED).unwrap();
        let small: Vec<String> = c.chain("small").unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(small, ["openai/gpt-4o-mini", "offline/keel-rules-v1"]);
        assert_eq!(c.chain("embed").unwrap()[0].to_string(), "offline/keel-hashed-v1");
        assert_eq!(c.chain("openai/gpt-4o").unwrap()[0].model, "gpt-4o", "a named model");
        assert!(c.chain("openai/gpt-5").unwrap_err().contains("no price"));
        assert_eq!(c.plugin_budget("anyone"), Some(1_000_000));
        assert_eq!(c.plugin_budget("writer"), Some(250_000));
    }

    #[test]
    fn costs_round_up_to_the_micro() {
        let c = config(HOSTED).unwrap();
        let mini = c.price(&ModelRef::parse("openai/gpt-4o-mini", "small").unwrap());
        assert_eq!(mini, Price { input: 150_000, output: 600_000 });
        assert_eq!(mini.cost(1_000_000, 0), 150_000);
        assert_eq!(mini.cost(1, 0), 1, "a fraction of a micro-unit costs one");
        assert_eq!(mini.cost(0, 0), 0);
        assert_eq!(c.price(&ModelRef::parse("offline", "small").unwrap()).cost(10_000, 10_000), 0);
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = config("[tiers]\nsmall = [\"openai/gpt-4o-mini\"]").unwrap_err();
        assert!(err.contains("model.tiers.small") && err.contains("[model.providers.openai]"), "{err}");
        let err = config("[tiers]\nmedium = [\"offline\"]").unwrap_err();
        assert!(err.contains("model.tiers.medium"), "{err}");
        let err = config("[providers.x]\nkind = \"openai\"\nbase_url = \"http://h/v1\"\n[tiers]\nlarge = [\"x/m\"]")
            .unwrap_err();
        assert!(err.contains("no price") && err.contains("model.prices.\"x/m\""), "{err}");
        let err =
            config("[providers.x]\nkind = \"openai\"\nbase_url = \"http://h/v1\"\napi_key = \"nope\"").unwrap_err();
        assert!(err.contains("model.providers.x.api_key") && err.contains("[secrets.nope]"), "{err}");
        assert!(config("[budget]\ndaily = -1").unwrap_err().contains("model.budget.daily"));
        assert!(config("[escalate]\nbelow = 2").unwrap_err().contains("model.escalate.below"));
        assert!(config("[cache]\nmax_entries = 0").unwrap_err().contains("model.cache.max_entries"));
        assert!(config("[providers.x]\nkind = \"grpc\"").is_err(), "unknown provider kind");
    }
}
