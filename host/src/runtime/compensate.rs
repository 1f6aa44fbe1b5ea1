//! Undoing executed actions when their run fails or is cancelled (sagas).
//!
//! Like an action, a compensation is committed as started before its
//! connector is called and recorded after, under one key (`KEY/undo`) for
//! every attempt, so it happens once: an attempt a crash interrupted is
//! retried with the same key if the compensating kind is idempotent and
//! otherwise left `needs-reconcile` for the operator. An attempt the
//! connector failed is retried (same key) a few times, then left `failed`
//! for the operator; a later pass (`keel runs resume`) tries again. No
//! compensation starts while the kill switch is on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use redb::WriteTransaction;

use super::Runtime;
use crate::connectors::ConnectorCall;
use crate::kernel::outbox::{self, Compensation, CompensationState, Intent, IntentState};
use crate::kernel::switch;
use crate::memory::audit::AuditEntry;
use crate::memory::committer::{Batch, CustomMutation, Mutation};
use crate::memory::{StoreError, now_ms};

/// Attempts of one compensation before it is left to the operator.
pub const COMPENSATION_ATTEMPTS: u32 = 3;

/// What became of undoing one intent.
#[derive(Debug, Clone, PartialEq)]
pub enum Undo {
    /// Its kind declares no compensation, or it never executed.
    NothingToUndo,
    Done,
    /// The kill switch is on: try again after `keel resume`.
    Blocked,
    /// Left to the operator, with why.
    Failed(String),
}

/// How `start` went, read back from the committing transaction.
const NOT_STARTED: u8 = 0;
const STARTED: u8 = 1;
const ALREADY_DONE: u8 = 2;
const SWITCH_ON: u8 = 3;
const RECONCILE: u8 = 4;

impl Runtime {
    /// Undoes executed intent `key` once, retrying failures a few times.
    pub async fn compensate(&self, key: &str) -> Result<Undo, StoreError> {
        let Some(intent) = self.store().intent(key)? else { return Ok(Undo::NothingToUndo) };
        let registry = self.kernel().registry();
        let Some(served) = registry.get(&intent.proposal.kind) else { return Ok(Undo::NothingToUndo) };
        let Some(kind) = served.served.spec.compensation.clone() else { return Ok(Undo::NothingToUndo) };
        if intent.state != IntentState::Executed {
            return Ok(Undo::NothingToUndo);
        }
        // A compensation kind is rarely served on its own; then it is as
        // safe to repeat as the kind it undoes (same connector, keyed).
        let idempotent = registry.get(&kind).map_or(served.served.spec.idempotent, |k| k.served.spec.idempotent);
        let mut last = String::new();
        for attempt in 0..COMPENSATION_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            match self.start_compensation(key, &kind, idempotent).await? {
                ALREADY_DONE => return Ok(Undo::Done),
                SWITCH_ON => return Ok(Undo::Blocked),
                RECONCILE => {
                    return Ok(Undo::Failed(format!(
                        "an earlier attempt of `{kind}` for {key} was interrupted and `{kind}` is not idempotent: check by hand"
                    )));
                }
                STARTED => {}
                _ => return Ok(Undo::NothingToUndo),
            }
            let intent = self.store().intent(key)?.expect("the intent was just updated");
            match self.run_compensation(&intent).await {
                Ok(receipt) => {
                    self.finish_compensation(&intent, CompensationState::Done, receipt).await?;
                    return Ok(Undo::Done);
                }
                Err(why) => {
                    tracing::warn!(key, attempt = attempt + 1, %why, "compensation failed");
                    last = why;
                    self.finish_compensation(&intent, CompensationState::Failed, last.clone()).await?;
                }
            }
        }
        Ok(Undo::Failed(format!("`{kind}` for {key} failed {COMPENSATION_ATTEMPTS} times ({last}): undo it by hand")))
    }

    /// Commits a new attempt unless the compensation is done, the kill
    /// switch is on, or an interrupted attempt cannot safely be repeated.
    async fn start_compensation(&self, key: &str, kind: &str, idempotent: bool) -> Result<u8, StoreError> {
        let outcome = Arc::new(AtomicU8::new(NOT_STARTED));
        let (flag, key, kind) = (outcome.clone(), key.to_owned(), kind.to_owned());
        let apply = Arc::new(move |txn: &WriteTransaction| {
            let Some(mut intent) = outbox::get_in(txn, &key)? else { return Ok(()) };
            let previous = intent.compensation.as_ref().map(|c| (c.state, c.attempts));
            let result = match previous {
                Some((CompensationState::Done, _)) => ALREADY_DONE,
                _ if switch::engaged_in(txn)? => SWITCH_ON,
                // Started and not finished: a crash interrupted it.
                Some((CompensationState::Started, _)) if !idempotent => RECONCILE,
                Some((CompensationState::NeedsReconcile, _)) => RECONCILE,
                _ => STARTED,
            };
            if result == STARTED || result == RECONCILE {
                let attempts = previous.map_or(0, |(_, n)| n) + u32::from(result == STARTED);
                let state =
                    if result == STARTED { CompensationState::Started } else { CompensationState::NeedsReconcile };
                let note = intent.compensation.as_ref().and_then(|c| c.note.clone());
                intent.compensation = Some(Compensation {
                    kind: kind.clone(),
                    key: format!("{key}/undo"),
                    state,
                    attempts,
                    receipt: None,
                    note,
                });
                intent.updated_at_ms = now_ms();
                outbox::put_in(txn, &intent)?;
            }
            flag.store(result, Ordering::SeqCst);
            Ok(())
        });
        let mutation = Mutation::Custom(CustomMutation { label: "outbox.compensate.start", apply });
        self.store().commit(Batch { mutations: vec![mutation], audit: vec![] }).await?;
        Ok(outcome.load(Ordering::SeqCst))
    }

    async fn run_compensation(&self, intent: &Intent) -> Result<String, String> {
        let compensation = intent.compensation.as_ref().ok_or("no compensation started")?;
        let receipt = intent.receipt.as_deref().ok_or("the intent has no receipt to undo")?;
        let (record, component) = self.connector(&intent.connector)?;
        let secrets = self.kernel().read_secrets(&record.grants.secrets).map_err(|e| e.to_string())?;
        let settings = self.kernel().connector_settings(&intent.connector);
        let call = ConnectorCall {
            name: &intent.connector,
            component: &component,
            outbound: &record.grants.outbound,
            settings: &settings,
            secrets: &secrets,
        };
        self.connectors.compensate(&call, receipt, &compensation.key).await.map_err(|e| e.to_string())
    }

    async fn finish_compensation(
        &self,
        intent: &Intent,
        state: CompensationState,
        detail: String,
    ) -> Result<(), StoreError> {
        let key = intent.key.clone();
        let note = detail.clone();
        let apply = Arc::new(move |txn: &WriteTransaction| {
            let Some(mut intent) = outbox::get_in(txn, &key)? else { return Ok(()) };
            if let Some(c) = intent.compensation.as_mut() {
                c.state = state;
                if state == CompensationState::Done {
                    c.receipt = Some(note.clone());
                    c.note = None;
                } else {
                    c.note = Some(note.clone());
                }
            }
            intent.updated_at_ms = now_ms();
            outbox::put_in(txn, &intent)
        });
        let kind = intent.compensation.as_ref().map_or("", |c| c.kind.as_str());
        let target = format!("{kind} {}/undo", intent.key);
        let entry = if state == CompensationState::Done {
            AuditEntry::allowed("host", "actions.compensate", target)
                .with_reason(format!("undid {}", intent.proposal.kind))
        } else {
            AuditEntry::denied("host", "actions.compensate", target, format!("{}: {detail}", state.as_str()))
        };
        let mutation = Mutation::Custom(CustomMutation { label: "outbox.compensate.finish", apply });
        self.store().commit(Batch { mutations: vec![mutation], audit: vec![entry] }).await?;
        Ok(())
    }
}
