//! The action outbox: every accepted or parked proposal is an intent in
//! redb before any connector sees it.
//!
//! Threat: an effect (a charge, an email) happening twice, or happening
//! without a record. An intent is committed, with its idempotency key, in
//! the same batch as the rest of the proposing call; the transition to
//! `sending` is committed before the connector is called and the receipt
//! after. After a crash, an intent left in `sending` is retried with the
//! same key only if its connector declared the action idempotent, and is
//! otherwise marked `needs-reconcile` for the operator: never re-sent
//! silently.

use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::memory::committer::{CustomMutation, Mutation};
use crate::memory::{Store, StoreError, now_ms};

/// Intents by idempotency key, as JSON.
const INTENTS: TableDefinition<&str, &str> = TableDefinition::new("kernel_intents");
/// (state, key): intents by state, for the executor and `keel status`.
const BY_STATE: TableDefinition<(&str, &str), ()> = TableDefinition::new("kernel_intents_by_state");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(INTENTS)?;
    txn.open_table(BY_STATE)?;
    Ok(())
}

/// An effect an agent proposed, as the kernel keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proposal {
    pub kind: String,
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    pub confidence: f32,
    pub rationale: String,
}

/// Where an intent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IntentState {
    /// Parked until the operator decides.
    AwaitingApproval,
    /// Allowed; not attempted yet.
    Ready,
    /// An attempt started; the outcome is not recorded yet.
    Sending,
    Executed,
    /// The connector refused or failed definitively.
    Failed,
    /// An attempt of a non-idempotent action was interrupted: whether it
    /// happened is unknown, so the operator must check.
    NeedsReconcile,
    /// The operator rejected it, or its approval expired.
    Rejected,
}

impl IntentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IntentState::AwaitingApproval => "awaiting-approval",
            IntentState::Ready => "ready",
            IntentState::Sending => "sending",
            IntentState::Executed => "executed",
            IntentState::Failed => "failed",
            IntentState::NeedsReconcile => "needs-reconcile",
            IntentState::Rejected => "rejected",
        }
    }

    pub const ALL: [IntentState; 7] = [
        IntentState::AwaitingApproval,
        IntentState::Ready,
        IntentState::Sending,
        IntentState::Executed,
        IntentState::Failed,
        IntentState::NeedsReconcile,
        IntentState::Rejected,
    ];
}

/// One proposed effect and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// `run/step/index`: the same key is the same effect, at the connector too.
    pub key: String,
    pub plugin: String,
    /// The connector that serves `proposal.kind`.
    pub connector: String,
    pub proposal: Proposal,
    pub state: IntentState,
    /// The approval that parked it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<u64>,
    /// Attempts started (transitions to `sending`).
    #[serde(default)]
    pub attempts: u32,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// The connector's receipt (JSON) once executed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    /// Why it failed, was rejected or needs reconciling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Undoing it, once its run failed or was cancelled (sagas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<Compensation>,
    /// After a failed attempt that may be retried: not before this time
    /// (Unix ms), so a struggling service is not hammered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<u64>,
}

/// Attempts of one intent before it is given up as `failed`.
pub const MAX_ATTEMPTS: u32 = 8;

/// The wait before attempt `attempts + 1` of an intent whose attempt
/// `attempts` failed in a way that may be retried: 1 s, doubling, at most
/// 5 minutes.
pub fn retry_backoff(attempts: u32) -> std::time::Duration {
    let secs = 1u64 << attempts.saturating_sub(1).min(9);
    std::time::Duration::from_secs(secs.min(300))
}

/// Where undoing an executed intent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompensationState {
    /// An attempt started; its outcome is not recorded yet.
    Started,
    Done,
    /// It failed after every retry: the operator must undo it by hand.
    Failed,
    /// An attempt of a non-idempotent compensation was interrupted.
    NeedsReconcile,
}

impl CompensationState {
    pub fn as_str(self) -> &'static str {
        match self {
            CompensationState::Started => "started",
            CompensationState::Done => "done",
            CompensationState::Failed => "failed",
            CompensationState::NeedsReconcile => "needs-reconcile",
        }
    }
}

/// The compensating action of an executed intent: kind, key, what happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compensation {
    /// The kind that undoes it, e.g. `payments.refund`.
    pub kind: String,
    /// `INTENT-KEY/undo`: the same for every attempt.
    pub key: String,
    pub state: CompensationState,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn corrupt(key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { what: format!("outbox intent `{key}`"), detail: e.to_string() }
}

/// Reads intent `key` inside a write transaction.
pub(crate) fn get_in(txn: &WriteTransaction, key: &str) -> Result<Option<Intent>, StoreError> {
    let table = txn.open_table(INTENTS)?;
    let Some(json) = table.get(key)? else { return Ok(None) };
    serde_json::from_str(json.value()).map(Some).map_err(|e| corrupt(key, e))
}

/// Writes `intent`, keeping the state index in step.
pub(crate) fn put_in(txn: &WriteTransaction, intent: &Intent) -> Result<(), StoreError> {
    let old = get_in(txn, &intent.key)?;
    let mut by_state = txn.open_table(BY_STATE)?;
    if let Some(old) = old {
        by_state.remove((old.state.as_str(), intent.key.as_str()))?;
    }
    by_state.insert((intent.state.as_str(), intent.key.as_str()), ())?;
    let json = serde_json::to_string(intent).expect("intents always serialize");
    txn.open_table(INTENTS)?.insert(intent.key.as_str(), json.as_str())?;
    Ok(())
}

/// A mutation that writes `intent` as it is.
pub fn put(intent: Intent) -> Mutation {
    let apply = Arc::new(move |txn: &WriteTransaction| put_in(txn, &intent));
    Mutation::Custom(CustomMutation { label: "outbox.put", apply })
}

/// Moves intent `key` to `to` if it is in one of `from`, applying `change`
/// too. Returns whether it moved.
pub(crate) fn transition_in(
    txn: &WriteTransaction,
    key: &str,
    from: &[IntentState],
    to: IntentState,
    change: impl FnOnce(&mut Intent),
) -> Result<bool, StoreError> {
    let Some(mut intent) = get_in(txn, key)? else { return Ok(false) };
    if !from.contains(&intent.state) {
        return Ok(false);
    }
    intent.state = to;
    intent.updated_at_ms = now_ms();
    change(&mut intent);
    put_in(txn, &intent)?;
    Ok(true)
}

impl Store {
    /// Intent `key`, if any.
    pub fn intent(&self, key: &str) -> Result<Option<Intent>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(INTENTS)?;
        let Some(json) = table.get(key)? else { return Ok(None) };
        serde_json::from_str(json.value()).map(Some).map_err(|e| corrupt(key, e))
    }

    /// Up to `limit` intents in `state`, in key order.
    pub fn intents_in(&self, state: IntentState, limit: usize) -> Result<Vec<Intent>, StoreError> {
        let txn = self.db().begin_read()?;
        let by_state = txn.open_table(BY_STATE)?;
        let intents = txn.open_table(INTENTS)?;
        let mut out = Vec::new();
        for item in by_state.range((state.as_str(), "")..)?.take(limit) {
            let (k, _) = item?;
            let (s, key) = k.value();
            if s != state.as_str() {
                break;
            }
            if let Some(json) = intents.get(key)? {
                out.push(serde_json::from_str(json.value()).map_err(|e| corrupt(key, e))?);
            }
        }
        Ok(out)
    }

    /// Every intent whose key starts with `prefix` (a run's: `RUN/`), in
    /// key order.
    pub fn intents_with_prefix(&self, prefix: &str) -> Result<Vec<Intent>, StoreError> {
        let txn = self.db().begin_read()?;
        let intents = txn.open_table(INTENTS)?;
        let mut out = Vec::new();
        for item in intents.range(prefix..)? {
            let (k, v) = item?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push(serde_json::from_str(v.value()).map_err(|e| corrupt(k.value(), e))?);
        }
        Ok(out)
    }

    /// How many intents are in each state.
    pub fn intent_counts(&self) -> Result<Vec<(IntentState, u64)>, StoreError> {
        let txn = self.db().begin_read()?;
        let by_state = txn.open_table(BY_STATE)?;
        let mut out = Vec::new();
        for state in IntentState::ALL {
            out.push((state, crate::memory::count_in_state(&by_state, state.as_str())?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        let secs: Vec<u64> = (1..=11).map(|n| retry_backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }

    #[test]
    fn state_names_match_their_json() {
        for s in IntentState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
