//! The operator's policy for proposed actions: rate limits, spend budgets,
//! approval thresholds and a confidence floor. Declared under `[policy]`
//! in `keel.toml`, checked once at load with errors naming the key, and
//! read by the gate only: no plugin-facing interface can change it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[policy]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// ISO 4217 code of budgets and amount thresholds. An amount in another
    /// currency cannot be compared, so it always goes to the operator.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Proposals with a lower confidence go to the operator (0 to 1).
    #[serde(default)]
    pub confidence_floor: f32,
    #[serde(default)]
    pub rate: RateConfig,
    #[serde(default)]
    pub budget: BudgetConfig,
    #[serde(default)]
    pub approval: ApprovalConfig,
}

fn default_currency() -> String {
    "EUR".to_owned()
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            currency: default_currency(),
            confidence_floor: 0.0,
            rate: RateConfig::default(),
            budget: BudgetConfig::default(),
            approval: ApprovalConfig::default(),
        }
    }
}

/// A token bucket: `burst` proposals at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

/// `[policy.rate]`: how fast proposals may come.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Each plugin, over all its action kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_plugin: Option<Rate>,
    /// Each action kind, over all plugins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kinds: BTreeMap<String, Rate>,
}

/// `[policy.budget]`: money that may be committed per UTC day, in minor
/// units of `policy.currency`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// The whole workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<i64>,
    /// Each plugin, unless listed under `plugins`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_daily: Option<i64>,
    /// Daily budget of named plugins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugins: BTreeMap<String, i64>,
    /// Daily budget of named workflows, over all their runs' steps.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub workflows: BTreeMap<String, i64>,
}

/// What happens to an approval nobody decided in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnExpiry {
    #[default]
    Reject,
    Approve,
}

/// `[policy.approval]`: what the operator decides by hand.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalConfig {
    /// Action kinds that always need the operator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// Any amount above this (minor units) needs the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<i64>,
    /// A threshold per action kind, tighter or looser than `above`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub above_by_kind: BTreeMap<String, i64>,
    /// Undecided approvals expire after this many hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_hours: Option<f64>,
    /// What an expired approval becomes.
    #[serde(default)]
    pub on_expiry: OnExpiry,
}

impl PolicyConfig {
    /// Checks every value, naming the key at fault as written in `keel.toml`.
    pub fn validate(&self) -> Result<(), String> {
        let c = &self.currency;
        if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!("`policy.currency` = {c:?} is not an ISO 4217 code: write e.g. \"EUR\" or \"USD\""));
        }
        if !(0.0..=1.0).contains(&self.confidence_floor) {
            return Err(format!("`policy.confidence_floor` = {} is out of range: use 0 to 1", self.confidence_floor));
        }
        let rates = self.rate.per_plugin.iter().map(|r| ("policy.rate.per_plugin".to_owned(), r));
        let kinds = self.rate.kinds.iter().map(|(k, r)| (format!("policy.rate.kinds.\"{k}\""), r));
        for (key, rate) in rates.chain(kinds) {
            if rate.per_minute == 0 || rate.burst == 0 {
                return Err(format!("`{key}` allows nothing: per_minute and burst must be at least 1"));
            }
        }
        let b = &self.budget;
        let budgets =
            [("policy.budget.daily".to_owned(), b.daily), ("policy.budget.plugin_daily".to_owned(), b.plugin_daily)]
                .into_iter()
                .chain(b.plugins.iter().map(|(p, v)| (format!("policy.budget.plugins.{p}"), Some(*v))))
                .chain(b.workflows.iter().map(|(w, v)| (format!("policy.budget.workflows.{w}"), Some(*v))));
        let a = &self.approval;
        let thresholds = [("policy.approval.above".to_owned(), a.above)]
            .into_iter()
            .chain(a.above_by_kind.iter().map(|(k, v)| (format!("policy.approval.above_by_kind.\"{k}\""), Some(*v))));
        for (key, value) in budgets.chain(thresholds) {
            if let Some(v) = value.filter(|v| *v < 0) {
                return Err(format!("`{key}` = {v} is negative: amounts are minor units (cents), 0 or more"));
            }
        }
        if let Some(h) = a.expiry_hours.filter(|h| !(h.is_finite() && *h > 0.0)) {
            return Err(format!("`policy.approval.expiry_hours` = {h} must be a positive number of hours"));
        }
        Ok(())
    }

    pub fn approval_expiry(&self) -> Option<Duration> {
        Duration::try_from_secs_f64(self.approval.expiry_hours? * 3600.0).ok()
    }

    /// The daily budget of `plugin`, if any.
    pub fn plugin_budget(&self, plugin: &str) -> Option<i64> {
        self.budget.plugins.get(plugin).copied().or(self.budget.plugin_daily)
    }

    /// Why a proposal that passed rate and budget checks still needs the
    /// operator; empty when it may execute.
    pub fn approval_reasons(&self, kind: &str, amount: Option<(i64, &str)>, confidence: f32) -> Vec<String> {
        let mut reasons = Vec::new();
        let a = &self.approval;
        if a.kinds.iter().any(|k| k == kind) {
            reasons.push(format!("`{kind}` always needs approval (policy.approval.kinds)"));
        }
        if let Some((amount, currency)) = amount {
            if currency != self.currency {
                reasons.push(format!("the amount is in {currency}; budgets and thresholds are in {}", self.currency));
            } else if let Some(limit) = a.above_by_kind.get(kind).copied().or(a.above).filter(|l| amount > *l) {
                reasons.push(format!("amount {amount} is above the approval threshold of {limit} {currency}"));
            }
        }
        if confidence < self.confidence_floor {
            reasons.push(format!("confidence {confidence:.2} is below the floor of {:.2}", self.confidence_floor));
        }
        reasons
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<PolicyConfig, String> {
        let p: PolicyConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        p.validate().map(|()| p)
    }

    #[test]
    fn thresholds_kinds_and_confidence_ask_the_operator() {
        let p = policy(
            r#"
            confidence_floor = 0.6
            [approval]
            kinds = ["payments.refund"]
            above = 100000
            above_by_kind = { "payments.charge" = 500 }
            "#,
        )
        .unwrap();
        assert!(p.approval_reasons("payments.charge", Some((500, "EUR")), 0.9).is_empty());
        let r = p.approval_reasons("payments.charge", Some((10_000, "EUR")), 0.9);
        assert!(r[0].contains("above the approval threshold of 500"), "{r:?}");
        assert!(p.approval_reasons("email.send", Some((10_000, "EUR")), 0.9).is_empty(), "the general threshold");
        assert!(p.approval_reasons("payments.refund", None, 1.0)[0].contains("always needs approval"));
        assert!(p.approval_reasons("email.send", None, 0.5)[0].contains("below the floor"));
        assert!(p.approval_reasons("email.send", Some((1, "USD")), 1.0)[0].contains("in USD"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = policy("currency = \"euro\"").unwrap_err();
        assert!(err.contains("policy.currency"), "{err}");
        let err = policy("confidence_floor = 1.5").unwrap_err();
        assert!(err.contains("policy.confidence_floor"), "{err}");
        let err = policy("[rate.kinds]\n\"email.send\" = { per_minute = 0, burst = 1 }").unwrap_err();
        assert!(err.contains("policy.rate.kinds.\"email.send\""), "{err}");
        let err = policy("[budget.plugins]\npayer = -5").unwrap_err();
        assert!(err.contains("policy.budget.plugins.payer"), "{err}");
        assert!(policy("[approval]\nexpiry_hours = 0").unwrap_err().contains("expiry_hours"));
        assert!(policy("bogus = 1").unwrap_err().contains("bogus"));
    }
}
