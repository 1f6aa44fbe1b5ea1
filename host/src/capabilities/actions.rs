//! `keel:plugin/actions`: proposals of external effects. The runtime core
//! checks that the action kind was granted (and audits every proposal);
//! the outbox, policies and connectors that execute come with the kernel.

use wasmtime::component::{HasData, Linker};

use crate::bindings::GuestError;
use crate::bindings::keel::plugin::actions::{self, Action, Disposition};
use crate::kernel::{Caller, Gate, Request};
use crate::memory::audit::AuditEntry;
use crate::memory::committer::Batch;
use crate::runtime::HostState;

pub struct ActionsView<'a> {
    pub caller: &'a Caller,
    pub gate: &'a Gate,
}

struct ActionsCapability;

impl HasData for ActionsCapability {
    type Data<'a> = ActionsView<'a>;
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    actions::add_to_linker::<HostState, ActionsCapability>(linker, |s| ActionsView { caller: &s.caller, gate: &s.gate })
}

impl actions::Host for ActionsView<'_> {
    fn propose(&mut self, action: Action) -> wasmtime::Result<Result<Disposition, GuestError>> {
        let _span =
            tracing::debug_span!("keel.actions.propose", plugin = %self.caller.plugin, kind = %action.kind).entered();
        if let Err(denied) = self.gate.check(self.caller, Request::Action { kind: &action.kind }) {
            return Ok(Err(denied));
        }
        let reason = format!("no connector serves `{}` in this workspace", action.kind);
        let entry =
            AuditEntry::allowed(&self.caller.plugin, "actions.propose", action.kind.clone()).with_reason(&reason);
        self.gate.store().enqueue(Batch::audit_only(entry));
        Ok(Err(GuestError::Unavailable(format!("{reason}: install a connector that declares it"))))
    }
}
