//! `keel:plugin/config`: operator settings and secrets for a plugin. The
//! runtime core has no settings or secret store yet: `get` finds nothing,
//! and `get-secret` checks the grant, then reports the secret unavailable.

use wasmtime::component::{HasData, Linker};

use crate::bindings::GuestError;
use crate::bindings::keel::plugin::config;
use crate::kernel::{Caller, Gate, Request};
use crate::runtime::HostState;

pub struct ConfigView<'a> {
    pub caller: &'a Caller,
    pub gate: &'a Gate,
}

struct ConfigCapability;

impl HasData for ConfigCapability {
    type Data<'a> = ConfigView<'a>;
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    config::add_to_linker::<HostState, ConfigCapability>(linker, |s| ConfigView { caller: &s.caller, gate: &s.gate })
}

impl config::Host for ConfigView<'_> {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, GuestError>> {
        let _span = tracing::debug_span!("keel.config.get", plugin = %self.caller.plugin, %key).entered();
        Ok(Ok(None))
    }

    fn get_secret(&mut self, name: String) -> wasmtime::Result<Result<String, GuestError>> {
        let _span = tracing::debug_span!("keel.config.get_secret", plugin = %self.caller.plugin).entered();
        Ok(self
            .gate
            .check(self.caller, Request::Secret { name: &name })
            .and(Err(GuestError::Unavailable(format!("secret `{name}` is not set in this workspace")))))
    }
}
