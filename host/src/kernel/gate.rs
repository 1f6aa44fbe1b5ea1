//! The gate every host call from a component passes first.
//!
//! Threat: a plugin (possibly third-party and hostile) reaching data or
//! effects the operator did not grant it: another plugin's memory, a model
//! tier, an action kind, a secret. The gate checks the caller's grants,
//! which the plugin cannot change (they are stored by the operator at
//! install), and denies everything not granted. Each denial is audited, so
//! a plugin probing for access leaves a trail.
//!
//! Proposed actions pass a second check, [`Gate::propose`]: misuse of what
//! *was* granted (too many proposals, too much money, effects the operator
//! wants to see first, low confidence, the kill switch) is rejected or
//! parked for the operator, with the reasons audited. Not stopped here:
//! resource exhaustion, which `runtime::limits` bounds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Kernel;
use super::approvals::{self, Approval, ApprovalStatus};
use super::grants::CapabilitySet;
use super::ledger::{WORKSPACE, plugin_scope, record_spend, utc_day, workflow_scope};
use super::outbox::{self, Intent, IntentState, Proposal};
use super::policy::PolicyConfig;
use crate::bindings::GuestError;
use crate::memory::audit::{AuditEntry, Decision};
use crate::memory::committer::{Batch, Mutation};
use crate::memory::{Store, StoreError, now_ms};

fn unavailable(e: StoreError) -> GuestError {
    tracing::error!(error = %e, "the kernel's state could not be read");
    GuestError::Unavailable(format!("the kernel could not decide: {e}"))
}

/// Who is calling: a plugin and what the operator granted it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub plugin: String,
    pub version: String,
    pub grants: Arc<CapabilitySet>,
}

impl Caller {
    /// An `allowed` entry naming this plugin and its version.
    pub fn allowed(&self, operation: &str, target: impl Into<String>) -> AuditEntry {
        AuditEntry::allowed(&self.plugin, operation, target).with_version(&self.version)
    }

    /// A `denied` entry naming this plugin and its version.
    pub fn denied(&self, operation: &str, target: impl Into<String>, reason: impl Into<String>) -> AuditEntry {
        AuditEntry::denied(&self.plugin, operation, target, reason).with_version(&self.version)
    }

    /// Names this caller's version in the entries of `batch` that name it
    /// as actor (a service, such as the model service, writes them without
    /// knowing which version called).
    pub fn stamp(&self, mut batch: Batch) -> Batch {
        for entry in batch.audit.iter_mut().filter(|e| e.actor == self.plugin && e.version.is_none()) {
            entry.version = Some(self.version.clone());
        }
        batch
    }
}

/// What a caller asks to do.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    MemoryRead {
        namespace: &'a str,
    },
    MemoryWrite {
        namespace: &'a str,
    },
    Model {
        tier: &'a str,
    },
    Action {
        kind: &'a str,
    },
    Secret {
        name: &'a str,
    },
    /// Overwriting or deleting `item` (`collection/id`, `namespace/note`)
    /// of `namespace`, which plugin `owner` created.
    ChangeOwned {
        namespace: &'a str,
        item: &'a str,
        owner: &'a str,
    },
}

impl Request<'_> {
    /// The operation name used in the audit log.
    pub fn operation(&self) -> &'static str {
        match self {
            Request::MemoryRead { .. } => "memory.read",
            Request::MemoryWrite { .. } => "memory.write",
            Request::Model { .. } => "model.call",
            Request::Action { .. } => "actions.propose",
            Request::Secret { .. } => "config.secret",
            Request::ChangeOwned { .. } => "memory.write",
        }
    }

    fn target(&self) -> &str {
        match self {
            Request::MemoryRead { namespace } | Request::MemoryWrite { namespace } => namespace,
            Request::Model { tier } => tier,
            Request::Action { kind } => kind,
            Request::Secret { name } => name,
            Request::ChangeOwned { item, .. } => item,
        }
    }

    fn is_granted(&self, caller: &Caller) -> bool {
        let grants = &caller.grants;
        match *self {
            Request::MemoryRead { namespace } => grants.can_read(namespace),
            Request::MemoryWrite { namespace } => grants.can_write(namespace),
            Request::Model { tier } => grants.has_model(tier),
            Request::Action { kind } => grants.has_action(kind),
            Request::Secret { name } => grants.has_secret(name),
            Request::ChangeOwned { namespace, owner, .. } => {
                grants.can_write_owned(&caller.plugin, namespace, Some(owner))
            }
        }
    }

    fn missing_grant(&self) -> String {
        match *self {
            Request::MemoryRead { namespace } => format!("no read grant for memory namespace `{namespace}`"),
            Request::MemoryWrite { namespace } => format!("no write grant for memory namespace `{namespace}`"),
            Request::Model { tier } => format!("no grant for model tier `{tier}`"),
            Request::Action { kind } => format!("no grant to propose `{kind}`"),
            Request::Secret { name } => format!("no grant for secret `{name}`"),
            Request::ChangeOwned { namespace, item, owner } => format!(
                "`{item}` belongs to plugin `{owner}`, and no grant lets this plugin change its data in `{namespace}` \
                 (`write_from = [\"{owner}\"]`)"
            ),
        }
    }
}

/// The decision point. Cheap to clone; one per call (see [`Gate::for_call`]).
#[derive(Debug, Clone)]
pub struct Gate {
    kernel: Arc<Kernel>,
    /// Set when this call's gate queued a record (a denial, a model call's
    /// cost) that must be durable before the call returns.
    pending: Arc<AtomicBool>,
}

/// Who spends: the proposing plugin, and its workflow for a step.
#[derive(Debug, Clone, Copy)]
struct Spender<'a> {
    plugin: &'a str,
    workflow: Option<&'a str>,
}

/// What the gate made of an allowed or parked proposal: the writes that
/// record it, to land with the proposing call's other writes.
#[derive(Debug)]
pub struct Disposed {
    pub mutations: Vec<Mutation>,
    pub entry: AuditEntry,
    pub outcome: Disposition,
}

/// Execute (queued in the outbox under `key`) or wait for the operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    Queued { key: String },
    Parked { approval: u64, reasons: Vec<String> },
}

impl Gate {
    pub fn new(kernel: Arc<Kernel>) -> Gate {
        Gate { kernel, pending: Arc::default() }
    }

    /// A gate for one call, sharing the kernel but tracking its own denials.
    pub fn for_call(&self) -> Gate {
        Gate::new(self.kernel.clone())
    }

    pub fn kernel(&self) -> &Arc<Kernel> {
        &self.kernel
    }

    /// Waits until everything this gate recorded is durable, so a call
    /// never returns before the record of what it was refused or spent.
    pub async fn flush(&self) -> Result<(), crate::memory::StoreError> {
        if self.pending.swap(false, Ordering::SeqCst) {
            // Batches commit in order: this empty one lands after the denials.
            self.store().commit(Batch::default()).await?;
        }
        Ok(())
    }

    /// The database the gate audits into.
    pub fn store(&self) -> &Arc<Store> {
        self.kernel.store()
    }

    /// Allows `request` if `caller` was granted it; otherwise audits the
    /// denial and returns the `denied` error the guest sees.
    pub fn check(&self, caller: &Caller, request: Request<'_>) -> Result<(), GuestError> {
        if request.is_granted(caller) {
            return Ok(());
        }
        let reason = request.missing_grant();
        tracing::warn!(plugin = %caller.plugin, operation = request.operation(), target = request.target(), %reason, "denied");
        // Queued, not awaited: it lands with (or before) the next commit,
        // even if the call that caused it fails.
        let entry = caller.denied(request.operation(), request.target(), reason.clone());
        self.audit_now(entry);
        Err(GuestError::Denied(format!("{reason}: ask the operator to grant it in the plugin's manifest")))
    }

    /// Takes a token from the plugin's and the kind's buckets; the limit
    /// that ran out, if any. Buckets are saved whatever the outcome.
    fn rate_limited(
        &self,
        plugin: &str,
        kind: &str,
        policy: &PolicyConfig,
        now: u64,
    ) -> Result<Option<String>, GuestError> {
        let store = self.store();
        let per_plugin = policy.rate.per_plugin.map(|r| (format!("plugin:{plugin}"), r, format!("plugin `{plugin}`")));
        let per_kind = policy.rate.kinds.get(kind).map(|r| (format!("kind:{kind}"), *r, format!("`{kind}`")));
        let mut buckets = Vec::new();
        let mut limited = None;
        for (bucket, rate, who) in per_plugin.into_iter().chain(per_kind) {
            let granted = self.kernel.ledger().take_token(store, &bucket, rate, now).map_err(unavailable)?;
            buckets.push(bucket);
            if !granted && limited.is_none() {
                limited = Some(format!(
                    "rate limit: {who} may propose {} per minute (bursts of {}); try again later",
                    rate.per_minute, rate.burst
                ));
            }
        }
        if let Some(save) = self.kernel.ledger().save_buckets(&buckets) {
            store.enqueue(Batch { mutations: vec![save], audit: vec![] });
        }
        Ok(limited)
    }

    /// The daily budgets `amount` would take past their limit.
    fn budget_overruns(
        &self,
        spender: Spender<'_>,
        amount: i64,
        day: &str,
        policy: &PolicyConfig,
    ) -> Result<Vec<String>, GuestError> {
        let plugin = spender.plugin;
        let mut scopes = vec![
            (WORKSPACE.to_owned(), policy.budget.daily, "the workspace".to_owned()),
            (plugin_scope(plugin), policy.plugin_budget(plugin), format!("plugin `{plugin}`")),
        ];
        if let Some(workflow) = spender.workflow {
            let limit = policy.budget.workflows.get(workflow).copied();
            scopes.push((workflow_scope(workflow), limit, format!("workflow `{workflow}`")));
        }
        let mut overruns = Vec::new();
        for (scope, limit, who) in scopes {
            let Some(limit) = limit else { continue };
            let spent = self.kernel.ledger().spent(self.store(), day, &scope).map_err(unavailable)?;
            if spent.saturating_add(amount) > limit {
                overruns.push(format!(
                    "daily budget of {limit} {} for {who} would be exceeded ({spent} committed today, {amount} asked)",
                    policy.currency
                ));
            }
        }
        Ok(overruns)
    }

    /// Queues `entry` at once, whatever becomes of the call; the call does
    /// not return before it is durable (see [`Gate::flush`]).
    fn audit_now(&self, entry: AuditEntry) {
        self.record_now(Batch::audit_only(entry));
    }

    /// Queues `batch` at once, whatever becomes of the call (money spent on
    /// a model stays spent if the call then traps); the call does not
    /// return before it is durable.
    pub fn record_now(&self, batch: Batch) {
        if !batch.is_empty() {
            self.store().enqueue(batch);
            self.pending.store(true, Ordering::SeqCst);
        }
    }

    /// Decides a proposal that passed [`Gate::check`]: rejected (the error
    /// the guest sees, audited at once), or allowed or parked, returned as
    /// writes for the call's write set. `key` is the idempotency key.
    pub fn propose(
        &self,
        caller: &Caller,
        task: &str,
        workflow: Option<&str>,
        key: String,
        proposal: Proposal,
    ) -> Result<Disposed, GuestError> {
        let plugin = caller.plugin.as_str();
        let target = format!("{} {key}", proposal.kind);
        let reject = |error: GuestError| {
            let reason = error.to_string();
            tracing::warn!(plugin, kind = %proposal.kind, %reason, "proposal rejected");
            self.audit_now(caller.denied("actions.propose", target.clone(), reason));
            Err(error)
        };
        let registry = self.kernel.registry();
        let Some(served) = registry.get(&proposal.kind) else {
            return reject(GuestError::Unavailable(format!(
                "no installed connector serves `{}`: the operator must install one that declares it",
                proposal.kind
            )));
        };
        if let Err(why) = served.validate(&proposal.payload) {
            return reject(GuestError::InvalidInput(why));
        }
        if proposal.amount.is_some_and(|a| a < 0) || proposal.amount.is_some() != proposal.currency.is_some() {
            return reject(GuestError::InvalidInput(
                "amount must be 0 or more, in minor units, and come with its currency".into(),
            ));
        }
        let policy = self.kernel.policy();
        let store = self.store();
        let now = now_ms();
        let mut reasons = Vec::new();
        if store.kill_switch().map_err(unavailable)?.is_some_and(|s| s.engaged) {
            reasons.push("the kill switch is on".to_owned());
        }

        if let Some(why) = self.rate_limited(plugin, &proposal.kind, &policy, now)? {
            return reject(GuestError::BudgetExceeded(why));
        }
        // Approval first: what goes to the operator anyway is not refused
        // for its budget; the operator sees the overrun as one more reason.
        let amount = proposal.amount.zip(proposal.currency.as_deref());
        reasons.extend(policy.approval_reasons(&proposal.kind, amount, proposal.confidence));
        let day = utc_day(now);
        let spend = proposal.amount.filter(|_| proposal.currency.as_deref() == Some(policy.currency.as_str()));
        if let Some(amount) = spend {
            let overruns = self.budget_overruns(Spender { plugin, workflow }, amount, &day, &policy)?;
            match overruns.into_iter().next() {
                Some(overrun) if reasons.is_empty() => return reject(GuestError::BudgetExceeded(overrun)),
                Some(overrun) => reasons.push(overrun),
                None => {}
            }
        }
        let ledger = self.kernel.ledger();
        let parked = !reasons.is_empty();
        let approval = parked.then(|| self.kernel.next_approval());
        let intent = Intent {
            key: key.clone(),
            plugin: plugin.to_owned(),
            connector: served.served.connector.clone(),
            state: if parked { IntentState::AwaitingApproval } else { IntentState::Ready },
            proposal,
            approval,
            attempts: 0,
            created_at_ms: now,
            updated_at_ms: now,
            receipt: None,
            note: None,
            compensation: None,
            not_before_ms: None,
        };
        let mut mutations = Vec::new();
        let (entry, outcome) = match approval {
            Some(id) => {
                let record = Approval {
                    id,
                    intent_key: key.clone(),
                    plugin: plugin.to_owned(),
                    kind: intent.proposal.kind.clone(),
                    reasons: reasons.clone(),
                    created_at_ms: now,
                    expires_at_ms: policy.approval_expiry().map(|d| now.saturating_add(d.as_millis() as u64)),
                    status: ApprovalStatus::Pending,
                    decided_by: None,
                    decided_at_ms: None,
                    note: None,
                };
                mutations.push(approvals::put(record));
                let mut entry = caller.allowed("actions.propose", target);
                entry.decision = Decision::Parked;
                entry.reason = Some(format!("awaiting approval #{id}: {}", reasons.join("; ")));
                (entry, Disposition::Parked { approval: id, reasons })
            }
            None => {
                if let Some(amount) = spend {
                    let scopes = [Some(WORKSPACE.to_owned()), Some(plugin_scope(plugin)), workflow.map(workflow_scope)];
                    for scope in scopes.into_iter().flatten() {
                        ledger.reserve(task, &day, &scope, amount);
                        mutations.push(record_spend(day.clone(), scope, amount));
                    }
                }
                let entry = caller
                    .allowed("actions.propose", target)
                    .with_reason(format!("within policy; queued in the outbox as {key}"));
                (entry, Disposition::Queued { key })
            }
        };
        mutations.insert(0, outbox::put(intent));
        Ok(Disposed { mutations, entry, outcome })
    }
}
