//! The gate every host call from a component passes first.
//!
//! Threat: a plugin (possibly third-party and hostile) reaching data or
//! effects the operator did not grant it: another plugin's memory, a model
//! tier, an action kind, a secret. The gate checks the caller's grants,
//! which the plugin cannot change (they are stored by the operator at
//! install), and denies everything not granted. Each denial is audited, so
//! a plugin probing for access leaves a trail.
//!
//! Not stopped here: misuse of what *was* granted (rate limits, budgets and
//! approvals arrive with the policy engine), and resource exhaustion, which
//! `runtime::limits` bounds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::bindings::GuestError;
use crate::kernel::grants::CapabilitySet;
use crate::memory::Store;
use crate::memory::audit::AuditEntry;
use crate::memory::committer::Batch;

/// Who is calling: a plugin and what the operator granted it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub plugin: String,
    pub version: String,
    pub grants: Arc<CapabilitySet>,
}

/// What a caller asks to do.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    MemoryRead { namespace: &'a str },
    MemoryWrite { namespace: &'a str },
    Model { tier: &'a str },
    Action { kind: &'a str },
    Secret { name: &'a str },
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
        }
    }

    fn target(&self) -> &str {
        match self {
            Request::MemoryRead { namespace } | Request::MemoryWrite { namespace } => namespace,
            Request::Model { tier } => tier,
            Request::Action { kind } => kind,
            Request::Secret { name } => name,
        }
    }

    fn is_granted(&self, grants: &CapabilitySet) -> bool {
        match *self {
            Request::MemoryRead { namespace } => grants.can_read(namespace),
            Request::MemoryWrite { namespace } => grants.can_write(namespace),
            Request::Model { tier } => grants.has_model(tier),
            Request::Action { kind } => grants.has_action(kind),
            Request::Secret { name } => grants.has_secret(name),
        }
    }

    fn missing_grant(&self) -> String {
        match *self {
            Request::MemoryRead { namespace } => format!("no read grant for memory namespace `{namespace}`"),
            Request::MemoryWrite { namespace } => format!("no write grant for memory namespace `{namespace}`"),
            Request::Model { tier } => format!("no grant for model tier `{tier}`"),
            Request::Action { kind } => format!("no grant to propose `{kind}`"),
            Request::Secret { name } => format!("no grant for secret `{name}`"),
        }
    }
}

/// The decision point. Cheap to clone; one per call (see [`Gate::for_call`]).
#[derive(Debug, Clone)]
pub struct Gate {
    store: Arc<Store>,
    /// Set when this call's gate queued a denial to the audit log.
    denied: Arc<AtomicBool>,
}

impl Gate {
    pub fn new(store: Arc<Store>) -> Gate {
        Gate { store, denied: Arc::default() }
    }

    /// A gate for one call, sharing the store but tracking its own denials.
    pub fn for_call(&self) -> Gate {
        Gate::new(self.store.clone())
    }

    /// Waits until every denial this gate audited is durable, so a call
    /// never returns before the record of what it was refused.
    pub async fn flush(&self) -> Result<(), crate::memory::StoreError> {
        if self.denied.swap(false, Ordering::SeqCst) {
            // Batches commit in order: this empty one lands after the denials.
            self.store.commit(Batch::default()).await?;
        }
        Ok(())
    }

    /// The database the gate audits into.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Allows `request` if `caller` was granted it; otherwise audits the
    /// denial and returns the `denied` error the guest sees.
    pub fn check(&self, caller: &Caller, request: Request<'_>) -> Result<(), GuestError> {
        if request.is_granted(&caller.grants) {
            return Ok(());
        }
        let reason = request.missing_grant();
        tracing::warn!(plugin = %caller.plugin, operation = request.operation(), target = request.target(), %reason, "denied");
        // Queued, not awaited: it lands with (or before) the next commit,
        // even if the call that caused it fails.
        let entry = AuditEntry::denied(&caller.plugin, request.operation(), request.target(), reason.clone());
        self.store.enqueue(Batch::audit_only(entry));
        self.denied.store(true, Ordering::SeqCst);
        Err(GuestError::Denied(format!("{reason}: ask the operator to grant it in the plugin's manifest")))
    }
}
