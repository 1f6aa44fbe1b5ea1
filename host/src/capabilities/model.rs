//! `keel:plugin/model`: language-model calls. The runtime core checks the
//! tier grant and reports that no provider is configured; providers,
//! routing and budgets come with the model capability.

use wasmtime::component::{HasData, Linker};

use crate::bindings::GuestError;
use crate::bindings::keel::plugin::model::{self, Completion, CompletionRequest};
use crate::kernel::{Caller, Gate, Request};
use crate::runtime::HostState;

pub struct ModelView<'a> {
    pub caller: &'a Caller,
    pub gate: &'a Gate,
}

struct ModelCapability;

impl HasData for ModelCapability {
    type Data<'a> = ModelView<'a>;
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    model::add_to_linker::<HostState, ModelCapability>(linker, |s| ModelView { caller: &s.caller, gate: &s.gate })
}

/// The tier `embed` is metered against.
pub const EMBED_TIER: &str = "embed";

fn no_provider(tier: &str) -> GuestError {
    GuestError::Unavailable(format!("no model provider serves tier `{tier}` in this workspace"))
}

impl model::Host for ModelView<'_> {
    fn complete(&mut self, request: CompletionRequest) -> wasmtime::Result<Result<Completion, GuestError>> {
        let _span =
            tracing::debug_span!("keel.model.complete", plugin = %self.caller.plugin, tier = %request.tier).entered();
        Ok(self.gate.check(self.caller, Request::Model { tier: &request.tier }).and(Err(no_provider(&request.tier))))
    }

    fn embed(&mut self, texts: Vec<String>) -> wasmtime::Result<Result<Vec<Vec<f32>>, GuestError>> {
        let _span =
            tracing::debug_span!("keel.model.embed", plugin = %self.caller.plugin, count = texts.len()).entered();
        Ok(self.gate.check(self.caller, Request::Model { tier: EMBED_TIER }).and(Err(no_provider(EMBED_TIER))))
    }
}
