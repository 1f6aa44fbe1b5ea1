//! Executing the outbox: each `ready` intent goes to its connector.
//!
//! An attempt is committed (`ready` -> `sending`) before the connector is
//! called, in a transaction that also reads the kill switch, so no attempt
//! starts after the switch's commit. The outcome is committed after, with
//! its audit entry. Intents found `sending` when a process starts were
//! interrupted by a crash: an idempotent kind goes back to `ready` (the
//! retry reuses the key, so the connector does not repeat the effect); any
//! other kind becomes `needs-reconcile` for the operator.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::WriteTransaction;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::Runtime;
use crate::connectors::ConnectorCall;
use crate::kernel::outbox::{self, Intent, IntentState};
use crate::kernel::switch;
use crate::memory::StoreError;
use crate::memory::audit::AuditEntry;
use crate::memory::committer::{Batch, CustomMutation, Mutation};
use crate::memory::plugins::PluginRecord;
use crate::plugin::World;

/// Most intents one pass executes.
pub const MAX_PER_PASS: usize = 1000;

/// What became of one intent in a pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub key: String,
    pub kind: String,
    pub state: IntentState,
    /// The receipt, or why it did not execute.
    pub detail: String,
}

impl Runtime {
    /// Settles interrupted attempts (once per process), then executes every
    /// `ready` intent that is due, unless the kill switch is on.
    pub async fn execute_ready(&self) -> Result<Vec<Execution>, StoreError> {
        self.settle_interrupted().await?;
        let ready = self.store().intents_in(IntentState::Ready, MAX_PER_PASS)?;
        self.execute_due(ready).await
    }

    /// Like [`Runtime::execute_ready`], for the intents `keys` only (a
    /// workflow step's).
    pub async fn execute_keys(&self, keys: &[String]) -> Result<Vec<Execution>, StoreError> {
        self.settle_interrupted().await?;
        let mut ready = Vec::new();
        for key in keys {
            ready.extend(self.store().intent(key)?.filter(|i| i.state == IntentState::Ready));
        }
        self.execute_due(ready).await
    }

    /// Intents a crash left `sending`, settled once per process before any
    /// attempt starts; concurrent callers wait for it.
    pub async fn settle_interrupted(&self) -> Result<(), StoreError> {
        self.recovered.get_or_try_init(|| self.recover_interrupted()).await.map(drop)
    }

    async fn execute_due(&self, ready: Vec<Intent>) -> Result<Vec<Execution>, StoreError> {
        let mut done = Vec::new();
        let now = crate::memory::now_ms();
        for intent in ready {
            if intent.not_before_ms.is_some_and(|t| t > now) {
                continue;
            }
            if let Some(execution) = self.execute(intent).await? {
                done.push(execution);
            }
        }
        Ok(done)
    }

    /// Intents left `sending` by an earlier process.
    async fn recover_interrupted(&self) -> Result<(), StoreError> {
        let registry = self.kernel().registry();
        for intent in self.store().intents_in(IntentState::Sending, MAX_PER_PASS)? {
            let idempotent = registry.get(&intent.proposal.kind).is_some_and(|k| k.served.spec.idempotent);
            let (to, why) = if idempotent {
                (IntentState::Ready, "interrupted; the kind is idempotent, so it is retried with the same key")
            } else {
                (IntentState::NeedsReconcile, "interrupted mid-attempt; check whether it happened, it is not re-sent")
            };
            let key = intent.key.clone();
            let apply = Arc::new(move |txn: &WriteTransaction| {
                outbox::transition_in(txn, &key, &[IntentState::Sending], to, |i| i.note = Some(why.to_owned()))
                    .map(drop)
            });
            let mut entry = AuditEntry::allowed("host", "actions.recover", target(&intent));
            entry.reason = Some(format!("attempt {} {why}", intent.attempts));
            let mutation = Mutation::Custom(CustomMutation { label: "outbox.recover", apply });
            self.store().commit(Batch { mutations: vec![mutation], audit: vec![entry] }).await?;
            tracing::warn!(key = %intent.key, state = to.as_str(), "settled an interrupted action");
        }
        Ok(())
    }

    /// One attempt of `intent`; `None` if it did not start (kill switch,
    /// or another pass took it).
    async fn execute(&self, intent: Intent) -> Result<Option<Execution>, StoreError> {
        if !self.start_attempt(&intent.key).await? {
            return Ok(None);
        }
        let attempt = intent.attempts + 1;
        let span = tracing::info_span!("keel.action.execute", key = %intent.key, kind = %intent.proposal.kind,
            connector = %intent.connector, attempt, outcome = tracing::field::Empty);
        let result = match self.connector(&intent.connector) {
            Ok((record, component)) => {
                use tracing::Instrument as _;
                self.perform(&intent, &record, &component).instrument(span.clone()).await
            }
            Err(why) => Err(Outcome::Failed(why)),
        };
        let registry = self.kernel().registry();
        let idempotent = registry.get(&intent.proposal.kind).is_some_and(|k| k.served.spec.idempotent);
        let (to, detail, entry) = match result {
            Ok(receipt) => {
                let mut entry = AuditEntry::allowed("host", "actions.execute", target(&intent));
                entry.reason =
                    Some(format!("attempt {attempt}; receipt sha256 {}", hex::encode(Sha256::digest(&receipt))));
                (IntentState::Executed, receipt, entry)
            }
            Err(outcome) => {
                let (to, detail) = match outcome {
                    Outcome::Failed(why) => (IntentState::Failed, why),
                    Outcome::Retry(why) if attempt >= outbox::MAX_ATTEMPTS => {
                        (IntentState::Failed, format!("gave up after {attempt} attempts: {why}"))
                    }
                    Outcome::Unknown(why) if idempotent && attempt >= outbox::MAX_ATTEMPTS => {
                        (IntentState::Failed, format!("gave up after {attempt} attempts: {why}"))
                    }
                    Outcome::Retry(why) => (IntentState::Ready, why),
                    Outcome::Unknown(why) if idempotent => (IntentState::Ready, why),
                    Outcome::Unknown(why) => (IntentState::NeedsReconcile, why),
                };
                let reason = format!("attempt {attempt}: {} ({detail})", to.as_str());
                (to, detail, AuditEntry::denied("host", "actions.execute", target(&intent), reason))
            }
        };
        span.record("outcome", to.as_str());
        let key = intent.key.clone();
        let note = detail.clone();
        let apply = Arc::new(move |txn: &WriteTransaction| {
            outbox::transition_in(txn, &key, &[IntentState::Sending], to, |i| {
                i.not_before_ms = None;
                if to == IntentState::Executed {
                    i.receipt = Some(note.clone());
                    i.note = None;
                } else {
                    i.note = Some(note.clone());
                }
                if to == IntentState::Ready {
                    let wait = outbox::retry_backoff(i.attempts);
                    i.not_before_ms = Some(crate::memory::now_ms().saturating_add(wait.as_millis() as u64));
                }
            })
            .map(drop)
        });
        let mutation = Mutation::Custom(CustomMutation { label: "outbox.outcome", apply });
        self.store().commit(Batch { mutations: vec![mutation], audit: vec![entry] }).await?;
        Ok(Some(Execution { key: intent.key, kind: intent.proposal.kind, state: to, detail }))
    }

    /// Commits `ready` -> `sending` unless the kill switch is on (read in
    /// the same transaction). Returns whether the attempt may start.
    async fn start_attempt(&self, key: &str) -> Result<bool, StoreError> {
        let started = Arc::new(AtomicBool::new(false));
        let (flag, key) = (started.clone(), key.to_owned());
        let apply = Arc::new(move |txn: &WriteTransaction| {
            if switch::engaged_in(txn)? {
                return Ok(());
            }
            let moved =
                outbox::transition_in(txn, &key, &[IntentState::Ready], IntentState::Sending, |i| i.attempts += 1)?;
            flag.store(moved, Ordering::SeqCst);
            Ok(())
        });
        let mutation = Mutation::Custom(CustomMutation { label: "outbox.start", apply });
        self.store().commit(Batch { mutations: vec![mutation], audit: vec![] }).await?;
        Ok(started.load(Ordering::SeqCst))
    }

    /// The installed connector `name` and its compiled component.
    pub(super) fn connector(&self, name: &str) -> Result<(PluginRecord, Component), String> {
        let record = self.store().plugin_get(name).map_err(|e| e.to_string())?.ok_or_else(|| {
            format!("connector `{name}` is not installed any more: reinstall it, then approve a new proposal")
        })?;
        if record.world != World::Connector {
            return Err(format!("plugin `{name}` is not a connector"));
        }
        let bytes = self
            .store()
            .plugin_blob(&record.sha256)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the component bytes of connector `{name}` are missing: reinstall it"))?;
        let component = self.compile(&bytes, &record.sha256, name, &()).map_err(|e| format!("{e:#}"))?;
        Ok((record, component))
    }

    async fn perform(&self, intent: &Intent, record: &PluginRecord, component: &Component) -> Result<String, Outcome> {
        let secrets = self.kernel().read_secrets(&record.grants.secrets).map_err(|e| Outcome::Failed(e.to_string()))?;
        let settings = self.kernel().connector_settings(&intent.connector);
        let call = ConnectorCall {
            name: &intent.connector,
            component,
            outbound: &record.grants.outbound,
            settings: &settings,
            secrets: &secrets,
        };
        self.connectors.perform(&call, &intent.proposal, &intent.key).await.map_err(|e| match e {
            e if e.retry_safe() => Outcome::Retry(e.to_string()),
            e if e.outcome_unknown() => Outcome::Unknown(e.to_string()),
            e => Outcome::Failed(e.to_string()),
        })
    }
}

/// Why an attempt did not produce a receipt.
enum Outcome {
    /// Definitively not done.
    Failed(String),
    /// Not done; a later pass may succeed with the same key.
    Retry(String),
    /// Maybe done.
    Unknown(String),
}

fn target(intent: &Intent) -> String {
    format!("{} {}", intent.proposal.kind, intent.key)
}

/// Used by the CLI to say what happened.
pub fn describe(execution: &Execution) -> String {
    match execution.state {
        IntentState::Executed => {
            format!("{} {}: executed, receipt {}", execution.kind, execution.key, execution.detail)
        }
        state => format!("{} {}: {} ({})", execution.kind, execution.key, state.as_str(), execution.detail),
    }
}
