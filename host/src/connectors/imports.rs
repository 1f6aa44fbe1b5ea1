//! The keel interfaces a connector imports: `log` (into `tracing`, tagged
//! with the connector, secrets redacted) and `config` (settings and secrets
//! handed over by the caller). `actions` is linked only because
//! `connector-api` uses its `action` type; a connector may not propose.

use std::collections::BTreeMap;

use wasmtime::component::{HasData, HasSelf, Linker};

use super::secrets::SecretValues;
use super::state::ConnectorState;
use crate::bindings::GuestError;
use crate::bindings::keel::plugin::actions::{self, Action, Disposition};
use crate::bindings::keel::plugin::log::{self, Level};
use crate::bindings::keel::plugin::{config, types};
use crate::capabilities::log::MAX_LOG_LINE_BYTES;

/// A borrowed view of what the keel imports need from the call's state.
pub struct ConnectorImports<'a> {
    pub connector: &'a str,
    pub settings: &'a BTreeMap<String, String>,
    pub secrets: &'a SecretValues,
}

struct ConnectorImportsCapability;

impl HasData for ConnectorImportsCapability {
    type Data<'a> = ConnectorImports<'a>;
}

pub fn add_to_linker(linker: &mut Linker<ConnectorState>) -> wasmtime::Result<()> {
    types::add_to_linker::<ConnectorState, HasSelf<ConnectorState>>(linker, |s| s)?;
    log::add_to_linker::<ConnectorState, ConnectorImportsCapability>(linker, ConnectorState::imports)?;
    config::add_to_linker::<ConnectorState, ConnectorImportsCapability>(linker, ConnectorState::imports)?;
    actions::add_to_linker::<ConnectorState, ConnectorImportsCapability>(linker, ConnectorState::imports)?;
    Ok(())
}

impl types::Host for ConnectorState {}

impl log::Host for ConnectorImports<'_> {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) -> wasmtime::Result<()> {
        let mut line = message;
        for (k, v) in &fields {
            line.push_str(&format!(" {k}={v}"));
        }
        if line.len() > MAX_LOG_LINE_BYTES {
            let mut cut = MAX_LOG_LINE_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" …[truncated]");
        }
        let line = self.secrets.redact(&line);
        let connector = self.connector;
        match level {
            Level::Trace => tracing::trace!(target: "keel::connector", connector, "{line}"),
            Level::Debug => tracing::debug!(target: "keel::connector", connector, "{line}"),
            Level::Info => tracing::info!(target: "keel::connector", connector, "{line}"),
            Level::Warn => tracing::warn!(target: "keel::connector", connector, "{line}"),
            Level::Error => tracing::error!(target: "keel::connector", connector, "{line}"),
        }
        Ok(())
    }
}

impl config::Host for ConnectorImports<'_> {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, GuestError>> {
        let _span = tracing::debug_span!("keel.config.get", connector = self.connector, %key).entered();
        Ok(Ok(self.settings.get(&key).cloned()))
    }

    fn get_secret(&mut self, name: String) -> wasmtime::Result<Result<String, GuestError>> {
        let _span = tracing::debug_span!("keel.config.get_secret", connector = self.connector, %name).entered();
        Ok(match self.secrets.get(&name) {
            Some(value) => Ok(value.to_owned()),
            None => Err(GuestError::Denied(format!(
                "secret `{name}` is not granted to connector `{}` or has no value: the operator must grant and set it",
                self.connector
            ))),
        })
    }
}

impl actions::Host for ConnectorImports<'_> {
    fn propose(&mut self, action: Action) -> wasmtime::Result<Result<Disposition, GuestError>> {
        Ok(Err(GuestError::Denied(format!(
            "connector `{}` may not propose `{}`: connectors execute actions, agents propose them",
            self.connector, action.kind
        ))))
    }
}
