//! The kernel: the only code that decides whether a plugin's request
//! happens. The gate checks grants on every host call and decides
//! proposals (execute, park for the operator, reject) against the policy;
//! the outbox, the approval inbox and the kill switch are durable state in
//! the workspace database. Only the operator changes policy or decides
//! approvals, through the CLI; no WIT import reaches those functions.

pub mod approvals;
pub mod gate;
pub mod grants;
pub mod ledger;
pub mod outbox;
pub mod policy;
pub mod registry;
pub mod secrets;
pub mod switch;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use redb::WriteTransaction;
use serde_json::Value;

pub use gate::{Caller, Gate, Request};
pub use grants::CapabilitySet;

use crate::memory::audit::AuditEntry;
use crate::memory::committer::{Batch, CustomMutation, Mutation};
use crate::memory::{Store, StoreError, now_ms};
use crate::model::ModelService;
use approvals::{Approval, ApprovalNumbers, ApprovalStatus};
use ledger::Ledger;
use outbox::{Intent, IntentState};
use policy::{OnExpiry, PolicyConfig};
use registry::Registry;
use secrets::{SecretError, SecretSource};

/// Creates the kernel's tables; called when the database is migrated.
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    outbox::create_tables(txn)?;
    approvals::create_tables(txn)?;
    switch::create_tables(txn)?;
    ledger::create_tables(txn)?;
    registry::create_tables(txn)
}

/// A refused operator request; messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("no approval #{0}: `keel approvals list` shows the pending ones")]
    NoSuchApproval(u64),
    #[error("approval #{id} was already decided ({status}); nothing changed")]
    AlreadyDecided { id: u64, status: String },
    #[error("the edited payload was refused: {0}; fix it and approve again")]
    InvalidEdit(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Policy, registry and ledger of one workspace, shared by every call.
#[derive(Debug)]
pub struct Kernel {
    store: Arc<Store>,
    policy: RwLock<Arc<PolicyConfig>>,
    registry: RwLock<Arc<Registry>>,
    ledger: Ledger,
    approval_numbers: ApprovalNumbers,
    /// `[connectors.NAME]` settings.
    connector_settings: BTreeMap<String, BTreeMap<String, String>>,
    /// `[agents.NAME]` settings.
    agent_settings: BTreeMap<String, BTreeMap<String, String>>,
    /// `[secrets.NAME]`: where each value is read from.
    secret_sources: BTreeMap<String, SecretSource>,
    /// Model providers, routing, model budgets and the output cache.
    models: Arc<ModelService>,
}

impl Kernel {
    pub fn load(store: Arc<Store>, policy: PolicyConfig) -> Result<Kernel, StoreError> {
        Ok(Kernel {
            registry: RwLock::new(Arc::new(Registry::load(&store)?)),
            approval_numbers: ApprovalNumbers::load(&store)?,
            policy: RwLock::new(Arc::new(policy.clone())),
            ledger: Ledger::default(),
            connector_settings: BTreeMap::new(),
            agent_settings: BTreeMap::new(),
            secret_sources: BTreeMap::new(),
            models: Arc::new(ModelService::offline(&policy.currency)),
            store,
        })
    }

    /// Adds the operator's connector settings and secret sources.
    pub fn with_connector_config(
        mut self,
        settings: BTreeMap<String, BTreeMap<String, String>>,
        secrets: BTreeMap<String, SecretSource>,
    ) -> Kernel {
        self.connector_settings = settings;
        self.secret_sources = secrets;
        self
    }

    /// Serves model calls with `models` instead of the offline provider alone.
    pub fn with_models(mut self, models: Arc<ModelService>) -> Kernel {
        self.models = models;
        self
    }

    pub fn models(&self) -> &Arc<ModelService> {
        &self.models
    }

    /// Adds the operator's settings for agents, served by `config.get`.
    pub fn with_agent_settings(mut self, settings: BTreeMap<String, BTreeMap<String, String>>) -> Kernel {
        self.agent_settings = settings;
        self
    }

    /// Setting `key` of agent `name`, if the operator set one.
    pub fn agent_setting(&self, name: &str, key: &str) -> Option<String> {
        self.agent_settings.get(name).and_then(|s| s.get(key)).cloned()
    }

    /// The value of secret `name`, for a plugin granted it.
    pub fn read_secret(&self, name: &str) -> Result<String, SecretError> {
        secrets::read(&self.secret_sources, name).map(|v| v.expose().to_owned())
    }

    /// The settings of connector `name` (empty if none).
    pub fn connector_settings(&self, name: &str) -> BTreeMap<String, String> {
        self.connector_settings.get(name).cloned().unwrap_or_default()
    }

    /// The values of `names`, for a plugin granted them. A secret the
    /// operator did not declare is left out (the plugin sees none); one that
    /// is declared but cannot be read is an error naming it.
    pub fn read_secrets(&self, names: &[String]) -> Result<BTreeMap<String, String>, SecretError> {
        let mut out = BTreeMap::new();
        for name in names {
            match secrets::read(&self.secret_sources, name) {
                Ok(value) => drop(out.insert(name.clone(), value.expose().to_owned())),
                Err(SecretError::Undeclared { .. }) => tracing::debug!(secret = %name, "granted but not declared"),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn policy(&self) -> Arc<PolicyConfig> {
        self.policy.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the policy (the operator edited `keel.toml`); takes effect
    /// for the next proposal.
    pub fn set_policy(&self, policy: PolicyConfig) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the served kinds after an install or removal.
    pub fn reload_registry(&self) -> Result<(), StoreError> {
        *self.registry.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Registry::load(&self.store)?);
        Ok(())
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub(crate) fn next_approval(&self) -> u64 {
        self.approval_numbers.next()
    }

    /// Approves #`id` as `by`, optionally replacing the payload with `edit`
    /// (checked against the kind's schema). The intent becomes `ready`.
    pub fn approve(&self, id: u64, by: &str, edit: Option<Value>) -> Result<Intent, KernelError> {
        let (approval, intent) = self.pending(id)?;
        if let Some(payload) = &edit {
            let registry = self.registry();
            let kind = registry.get(&intent.proposal.kind).ok_or_else(|| {
                KernelError::InvalidEdit(format!("no installed connector serves `{}` any more", intent.proposal.kind))
            })?;
            kind.validate(payload).map_err(KernelError::InvalidEdit)?;
        }
        let note = edit.as_ref().map(|_| "approved with an edited payload".to_owned());
        let mut entry = AuditEntry::allowed(by, "approvals.approve", format!("#{id} {}", intent.key));
        entry.reason = note.clone();
        let mut mutations = vec![decide(approval, ApprovalStatus::Approved, by, note, Some(edit))];
        let policy = self.policy();
        if let (Some(amount), Some(currency)) = (intent.proposal.amount, &intent.proposal.currency)
            && *currency == policy.currency
        {
            // The operator may approve beyond a budget; it still counts.
            let day = ledger::utc_day(now_ms());
            mutations.push(ledger::record_spend(day.clone(), ledger::WORKSPACE.to_owned(), amount));
            mutations.push(ledger::record_spend(day, ledger::plugin_scope(&intent.plugin), amount));
        }
        self.store.commit_blocking(Batch { mutations, audit: vec![entry] })?;
        self.store.intent(&intent.key)?.ok_or(KernelError::NoSuchApproval(id))
    }

    /// Rejects #`id` as `by`; the intent never executes.
    pub fn reject(&self, id: u64, by: &str, reason: &str) -> Result<(), KernelError> {
        let (approval, intent) = self.pending(id)?;
        let entry = AuditEntry::denied(by, "approvals.reject", format!("#{id} {}", intent.key), reason.to_owned());
        let mutation = decide(approval, ApprovalStatus::Rejected, by, Some(reason.to_owned()), None);
        self.store.commit_blocking(Batch { mutations: vec![mutation], audit: vec![entry] })?;
        Ok(())
    }

    /// Applies the policy's `on_expiry` to pending approvals past their
    /// expiry. Returns the numbers it decided.
    pub fn expire_approvals(&self, now_ms: u64) -> Result<Vec<u64>, KernelError> {
        let on_expiry = self.policy().approval.on_expiry;
        let mut expired = Vec::new();
        for approval in self.store.approvals(Some(ApprovalStatus::Pending))? {
            if approval.expires_at_ms.is_none_or(|at| at > now_ms) {
                continue;
            }
            let id = approval.id;
            let reason = format!("expired undecided; the policy's on_expiry is {on_expiry:?}");
            match on_expiry {
                OnExpiry::Approve => drop(self.approve(id, "host", None)?),
                OnExpiry::Reject => {
                    let (approval, intent) = self.pending(id)?;
                    let entry = AuditEntry::denied("host", "approvals.expire", format!("#{id} {}", intent.key), reason);
                    let m = decide(approval, ApprovalStatus::Expired, "host", None, None);
                    self.store.commit_blocking(Batch { mutations: vec![m], audit: vec![entry] })?;
                }
            }
            expired.push(id);
        }
        Ok(expired)
    }

    fn pending(&self, id: u64) -> Result<(Approval, Intent), KernelError> {
        let approval = self.store.approval(id)?.ok_or(KernelError::NoSuchApproval(id))?;
        if approval.status != ApprovalStatus::Pending {
            return Err(KernelError::AlreadyDecided { id, status: approval.status.as_str().to_owned() });
        }
        let intent = self.store.intent(&approval.intent_key)?.ok_or_else(|| StoreError::Corrupt {
            what: format!("approval #{id}"),
            detail: format!("its intent `{}` is missing", approval.intent_key),
        })?;
        Ok((approval, intent))
    }
}

/// Decides `approval` and moves its intent: to `ready` (with an edited
/// payload, if any) when approved, to `rejected` otherwise. A second
/// decision racing this one finds the approval decided and changes nothing.
fn decide(
    approval: Approval,
    status: ApprovalStatus,
    by: &str,
    note: Option<String>,
    edit: Option<Option<Value>>,
) -> Mutation {
    let by = by.to_owned();
    let apply = Arc::new(move |txn: &WriteTransaction| {
        let Some(mut current) = approvals::get_in(txn, approval.id)? else { return Ok(()) };
        if current.status != ApprovalStatus::Pending {
            return Ok(());
        }
        current.status = status;
        current.decided_by = Some(by.clone());
        current.decided_at_ms = Some(now_ms());
        current.note = note.clone();
        approvals::put_in(txn, &current)?;
        let to = if status == ApprovalStatus::Approved { IntentState::Ready } else { IntentState::Rejected };
        let edited = edit.clone().flatten();
        let note = note.clone();
        outbox::transition_in(txn, &current.intent_key, &[IntentState::AwaitingApproval], to, |intent| {
            if let Some(payload) = edited {
                intent.proposal.payload = payload;
            }
            if to == IntentState::Rejected {
                intent.note = note;
            }
        })?;
        Ok(())
    });
    Mutation::Custom(CustomMutation { label: "kernel.decide_approval", apply })
}
