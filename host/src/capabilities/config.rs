//! `keel:plugin/config`: the operator's settings for an agent
//! (`[agents.NAME]` in keel.toml) and the secrets it was granted. For a
//! workflow step the reads are journaled; secret values never are.

use wasmtime::component::{HasData, Linker};

use super::journaled;
use crate::bindings::GuestError;
use crate::bindings::keel::plugin::config;
use crate::kernel::secrets::SecretError;
use crate::kernel::{Caller, Gate, Request};
use crate::runtime::HostState;
use crate::workflow::journal::SharedJournal;

pub struct ConfigView<'a> {
    pub caller: &'a Caller,
    pub gate: &'a Gate,
    pub journal: Option<&'a SharedJournal>,
}

struct ConfigCapability;

impl HasData for ConfigCapability {
    type Data<'a> = ConfigView<'a>;
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    config::add_to_linker::<HostState, ConfigCapability>(linker, |s| ConfigView {
        caller: &s.caller,
        gate: &s.gate,
        journal: s.journal.as_ref(),
    })
}

impl ConfigView<'_> {
    fn secret(&self, name: &str) -> Result<String, GuestError> {
        self.gate.check(self.caller, Request::Secret { name })?;
        let kernel = self.gate.kernel();
        match kernel.read_secret(name) {
            Ok(value) => Ok(value),
            Err(SecretError::Undeclared { .. }) => Err(GuestError::Unavailable(format!(
                "secret `{name}` is granted but not set in this workspace: the operator adds [secrets.{name}] to keel.toml"
            ))),
            Err(e) => Err(GuestError::Unavailable(e.to_string())),
        }
    }
}

impl config::Host for ConfigView<'_> {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, GuestError>> {
        let _span = tracing::debug_span!("keel.config.get", plugin = %self.caller.plugin, %key).entered();
        let request = self.journal.map(|_| serde_json::Value::from(key.as_str()));
        let kernel = self.gate.kernel();
        Ok(journaled(self.journal, "config.get", request, || Ok(kernel.agent_setting(&self.caller.plugin, &key))))
    }

    fn get_secret(&mut self, name: String) -> wasmtime::Result<Result<String, GuestError>> {
        let _span = tracing::debug_span!("keel.config.get_secret", plugin = %self.caller.plugin).entered();
        let result = self.secret(&name);
        if let Some(journal) = self.journal {
            let mut journal = journal.lock().unwrap_or_else(|e| e.into_inner());
            if journal.is_replay() {
                // The value is read live; the journal only keeps its place.
                journal.replayed("config.get-secret", &name.into());
            } else {
                // The outcome, never the value.
                let outcome = result.as_ref().map(|_| "<redacted>").map_err(|e| e.to_string());
                let recorded = serde_json::to_value(outcome).unwrap_or_default();
                journal.record("config.get-secret", name.into(), recorded);
            }
        }
        Ok(result)
    }
}
