//! `keel:plugin/actions`: proposals of external effects. The gate checks
//! the grant, then decides against the policy; an allowed proposal is
//! queued in the outbox and a parked one waits in the approval inbox, both
//! landing with the call's other writes, so a call that fails proposes
//! nothing. Connectors execute queued intents after the call commits.

use wasmtime::component::{HasData, Linker};

use super::journaled;
use crate::bindings::GuestError;
use crate::bindings::keel::plugin::actions::{self, Action, Disposition};
use crate::kernel::gate::{self, Disposed};
use crate::kernel::outbox::Proposal;
use crate::kernel::{Caller, Gate, Request};
use crate::memory::write_set::WriteSet;
use crate::runtime::HostState;
use crate::workflow::journal::SharedJournal;

/// Most proposals one call may make.
pub const MAX_PROPOSALS_PER_CALL: u32 = 100;
/// Largest payload of one proposal, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

pub struct ActionsView<'a> {
    pub caller: &'a Caller,
    pub gate: &'a Gate,
    pub writes: &'a mut WriteSet,
    pub task_id: &'a str,
    pub run_id: Option<&'a str>,
    pub proposals: &'a mut u32,
    pub journal: Option<&'a SharedJournal>,
    pub workflow: Option<&'a str>,
}

struct ActionsCapability;

impl HasData for ActionsCapability {
    type Data<'a> = ActionsView<'a>;
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    actions::add_to_linker::<HostState, ActionsCapability>(linker, |s| ActionsView {
        caller: &s.caller,
        gate: &s.gate,
        writes: &mut s.writes,
        task_id: &s.task_id,
        run_id: s.run_id.as_deref(),
        proposals: &mut s.proposals,
        journal: s.journal.as_ref(),
        workflow: s.workflow.as_deref(),
    })
}

impl ActionsView<'_> {
    fn propose_checked(&mut self, action: Action) -> Result<Disposition, GuestError> {
        self.gate.check(self.caller, Request::Action { kind: &action.kind })?;
        if *self.proposals >= MAX_PROPOSALS_PER_CALL {
            return Err(GuestError::InvalidInput(format!(
                "a call may make at most {MAX_PROPOSALS_PER_CALL} proposals; split the work across calls"
            )));
        }
        if action.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(GuestError::InvalidInput(format!(
                "the payload is {} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit",
                action.payload.len()
            )));
        }
        let payload = serde_json::from_str(&action.payload)
            .map_err(|e| GuestError::InvalidInput(format!("the payload is not JSON: {e}")))?;
        if !(0.0..=1.0).contains(&action.confidence) {
            return Err(GuestError::InvalidInput(format!("confidence {} is not between 0 and 1", action.confidence)));
        }
        *self.proposals += 1;
        // A step's task id is `run/step` (`run/step.item` in a fan-out),
        // stable across attempts and restarts: the same proposal of the same
        // step is the same effect, whoever retries it. A call outside a run
        // has a unique task id.
        let key = match self.run_id {
            Some(_) => format!("{}/{}", self.task_id, self.proposals),
            None => format!("{}/{}/{}", self.task_id, self.caller.plugin, self.proposals),
        };
        let proposal = Proposal {
            kind: action.kind,
            payload,
            amount: action.amount,
            currency: action.currency,
            confidence: action.confidence,
            rationale: action.rationale,
        };
        let Disposed { mutations, entry, outcome } =
            self.gate.propose(self.caller, self.task_id, self.workflow, key, proposal)?;
        self.writes.effect(mutations, entry);
        match outcome {
            gate::Disposition::Queued { key } => Ok(Disposition::Queued(key)),
            gate::Disposition::Parked { approval, reasons } => Err(GuestError::PendingApproval(format!(
                "approval #{approval}: {}; the operator decides with `keel approve {approval}` or `keel reject {approval}`",
                reasons.join("; ")
            ))),
        }
    }
}

impl actions::Host for ActionsView<'_> {
    fn propose(&mut self, action: Action) -> wasmtime::Result<Result<Disposition, GuestError>> {
        let _span =
            tracing::debug_span!("keel.actions.propose", plugin = %self.caller.plugin, kind = %action.kind).entered();
        let journal = self.journal;
        let request = journal.map(|_| serde_json::to_value(&action).unwrap_or_default());
        Ok(journaled(journal, "actions.propose", request, || self.propose_checked(action)))
    }
}
