//! Running connector components (world `keel:plugin/connector`): the
//! kernel calls them here once it has decided an action executes.
//!
//! ```no_run
//! # async fn demo(engine: &wasmtime::Engine, component: &wasmtime::component::Component,
//! #     proposal: &keel_host::kernel::outbox::Proposal) -> anyhow::Result<()> {
//! use std::collections::BTreeMap;
//! use keel_host::connectors::{ConnectorCall, ConnectorHost};
//!
//! let host = ConnectorHost::new(engine, &keel_host::runtime::Limits::default())?;
//! let settings = BTreeMap::from([("base_url".to_owned(), "https://api.stripe.com".to_owned())]);
//! let secrets = BTreeMap::from([("stripe_key".to_owned(), "sk_live_...".to_owned())]);
//! let call = ConnectorCall {
//!     name: "payments",
//!     component,
//!     outbound: &["api.stripe.com:443".to_owned()],
//!     settings: &settings,
//!     secrets: &secrets,
//! };
//! let kinds = host.describe(&call).await?; // at install: kinds, schemas, compensations
//! let receipt = host.perform(&call, proposal, "run-1/step-2/0").await?; // JSON
//! let undone = host.compensate(&call, &receipt, "run-1/step-2/0/undo").await?;
//! # Ok(()) }
//! ```
//!
//! * [`ConnectorHost::new`]`(engine, limits)`: one per process, sharing the
//!   runtime's engine (which must have been built by
//!   [`crate::runtime::engine::build_engine`]: async, epoch interruption).
//!   It ticks the engine's epoch itself, so a busy guest always yields.
//! * [`ConnectorHost::describe`] → [`ActionKindSpec`]s (the kernel's
//!   [`KindSpec`]), checked: unique, well-formed kinds, JSON schemas.
//! * [`ConnectorHost::perform`]`(call, proposal, key)` → receipt JSON.
//! * [`ConnectorHost::compensate`]`(call, receipt, key)` → receipt JSON.
//! * [`ConnectorHost::check_imports`]`(name, component)`: the install-time
//!   link check for the connector world.
//! * Every failure is one [`ConnectorError`]; see
//!   [`ConnectorError::outcome_unknown`] and [`ConnectorError::retry_safe`].
//!
//! Each call gets a fresh store: the memory limit, the call timeout (epoch
//! deadline and wall clock, name resolution included) and the output limit
//! (for receipts) of [`Limits`] apply as for agents. A connector reaches
//! the network only through `wasi:http` and `wasi:sockets` TCP, to its
//! granted `host:port` pairs, checked by [`egress`]. Settings are served
//! by `config.get`, secrets by `config.get-secret`; secret values are
//! removed from its log lines, error values and stderr before the host
//! writes them anywhere ([`secrets`]).

mod bindings;
pub mod egress;
mod error;
mod imports;
pub mod secrets;
mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use tracing::Instrument;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, Trap};

pub use crate::kernel::outbox::Proposal as ProposedAction;
pub use crate::kernel::registry::KindSpec as ActionKindSpec;
pub use error::ConnectorError;

use crate::bindings::GuestError;
use crate::bindings::keel::plugin::actions::Action;
use crate::runtime::call::one_line;
use crate::runtime::engine::{EpochTicker, yield_every_tick_until};
use crate::runtime::limits::{Limits, MemoryLimitExceeded};
use bindings::{ActionKind, ConnectorPre};
use egress::EgressPolicy;
use egress::sockets::SocketAllowList;
use secrets::SecretValues;
use state::ConnectorState;

/// One call of a connector: which one, and what the operator gave it.
pub struct ConnectorCall<'a> {
    /// The plugin name, for errors and logs.
    pub name: &'a str,
    /// Compiled by the same engine as the [`ConnectorHost`]'s.
    pub component: &'a Component,
    /// Granted `host:port` entries (`CapabilitySet::outbound`).
    pub outbound: &'a [String],
    /// Non-secret settings, served by `config.get`.
    pub settings: &'a BTreeMap<String, String>,
    /// Granted secrets, served by `config.get-secret`. Never logged.
    pub secrets: &'a BTreeMap<String, String>,
}

impl fmt::Debug for ConnectorCall<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorCall")
            .field("name", &self.name)
            .field("outbound", &self.outbound)
            .field("settings", &self.settings)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Runs connector components.
pub struct ConnectorHost {
    engine: Engine,
    linker: Linker<ConnectorState>,
    limits: Limits,
    /// Per connector name: the component it was prepared from and its
    /// linked instance-pre.
    prepared: Mutex<HashMap<String, (Component, ConnectorPre<ConnectorState>)>>,
    _ticker: EpochTicker,
}

impl fmt::Debug for ConnectorHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorHost").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// What the guest was asked to do.
enum Operation<'a> {
    Describe,
    Perform(&'a Action, &'a str),
    Compensate(&'a str, &'a str),
}

/// What it answered.
enum Answer {
    Kinds(Vec<ActionKind>),
    Receipt(Result<String, GuestError>),
}

impl ConnectorHost {
    pub fn new(engine: &Engine, limits: &Limits) -> anyhow::Result<ConnectorHost> {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        egress::sockets::add_to_linker(&mut linker, ConnectorState::guarded_lookup)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        imports::add_to_linker(&mut linker)?;
        Ok(ConnectorHost {
            engine: engine.clone(),
            linker,
            limits: *limits,
            prepared: Mutex::new(HashMap::new()),
            _ticker: EpochTicker::start(engine),
        })
    }

    /// Calls `describe()`: the action kinds the connector serves.
    pub async fn describe(&self, call: &ConnectorCall<'_>) -> Result<Vec<ActionKindSpec>, ConnectorError> {
        let span = tracing::info_span!("keel.connector.describe", connector = call.name);
        let Answer::Kinds(kinds) = self.run(call, Operation::Describe).instrument(span).await? else {
            unreachable!("describe answers with kinds")
        };
        check_kinds(call.name, kinds)
    }

    /// Calls `perform(action, idempotency_key)`; returns the receipt (JSON).
    pub async fn perform(
        &self,
        call: &ConnectorCall<'_>,
        action: &ProposedAction,
        idempotency_key: &str,
    ) -> Result<String, ConnectorError> {
        let span = tracing::info_span!("keel.connector.perform", connector = call.name, kind = %action.kind, key = idempotency_key);
        let action = Action {
            kind: action.kind.clone(),
            payload: action.payload.to_string(),
            amount: action.amount,
            currency: action.currency.clone(),
            confidence: action.confidence,
            rationale: action.rationale.clone(),
        };
        self.receipt(call, Operation::Perform(&action, idempotency_key)).instrument(span).await
    }

    /// Calls `compensate(receipt, idempotency_key)` to undo an earlier
    /// `perform`; returns the compensation's receipt (JSON).
    pub async fn compensate(
        &self,
        call: &ConnectorCall<'_>,
        receipt: &str,
        idempotency_key: &str,
    ) -> Result<String, ConnectorError> {
        let span = tracing::info_span!("keel.connector.compensate", connector = call.name, key = idempotency_key);
        self.receipt(call, Operation::Compensate(receipt, idempotency_key)).instrument(span).await
    }

    async fn receipt(&self, call: &ConnectorCall<'_>, operation: Operation<'_>) -> Result<String, ConnectorError> {
        let Answer::Receipt(result) = self.run(call, operation).await? else {
            unreachable!("perform and compensate answer with a receipt")
        };
        let connector = call.name.to_owned();
        let secrets = SecretValues::new(call.secrets);
        let receipt = result.map_err(|error| {
            let error = redact_error(error, &secrets);
            let retry_safe = matches!(error, GuestError::Unavailable(_) | GuestError::BudgetExceeded(_));
            ConnectorError::Failed { connector: connector.clone(), error, retry_safe }
        })?;
        if receipt.len() > self.limits.output_bytes {
            let detail = format!("is {} bytes, over the output limit of {}", receipt.len(), self.limits.output_bytes);
            return Err(ConnectorError::InvalidReceipt { connector, detail });
        }
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&receipt) {
            return Err(ConnectorError::InvalidReceipt { connector, detail: format!("is not JSON ({e})") });
        }
        Ok(receipt)
    }

    /// Checks that `component` links against the connector imports (keel's
    /// `log`, `config`, WASI p2 and `wasi:http`): for install checks, which
    /// must not use the agent linker for connectors (it has no `wasi:http`).
    pub fn check_imports(&self, name: &str, component: &Component) -> Result<(), ConnectorError> {
        let load = |e: wasmtime::Error| ConnectorError::Load { connector: name.to_owned(), detail: format!("{e:#}") };
        ConnectorPre::new(self.linker.instantiate_pre(component).map_err(load)?).map_err(load)?;
        Ok(())
    }

    /// The linked instance-pre of `call.component`, made once per component.
    fn prepare(&self, call: &ConnectorCall<'_>) -> Result<ConnectorPre<ConnectorState>, ConnectorError> {
        let mut prepared = self.prepared.lock().expect("prepared-connector map poisoned");
        if let Some((component, pre)) = prepared.get(call.name)
            && component.image_range() == call.component.image_range()
        {
            return Ok(pre.clone());
        }
        let load =
            |e: wasmtime::Error| ConnectorError::Load { connector: call.name.to_owned(), detail: format!("{e:#}") };
        let pre = ConnectorPre::new(self.linker.instantiate_pre(call.component).map_err(load)?).map_err(load)?;
        prepared.insert(call.name.to_owned(), (call.component.clone(), pre.clone()));
        Ok(pre)
    }

    /// One fresh store, the limits armed, `operation` called; failures named.
    async fn run(&self, call: &ConnectorCall<'_>, operation: Operation<'_>) -> Result<Answer, ConnectorError> {
        let connector = call.name.to_owned();
        let policy = EgressPolicy::new(call.name, call.outbound)
            .map_err(|detail| ConnectorError::InvalidGrant { connector: connector.clone(), detail })?;
        let policy = Arc::new(policy);
        let pre = self.prepare(call)?;
        let secrets = SecretValues::new(call.secrets);

        // `describe` needs no network: no lookups at install.
        let needs_network = !matches!(operation, Operation::Describe);
        let work = async {
            let sockets = match needs_network {
                true => SocketAllowList::resolve(&policy).await,
                false => SocketAllowList::default(),
            };
            let sockets = Arc::new(sockets);
            let state = ConnectorState::new(
                policy.clone(),
                sockets,
                call.settings.clone(),
                secrets.clone(),
                self.limits.memory_bytes,
            );
            let mut store = Store::new(&self.engine, state);
            store.limiter(|s| &mut s.limiter);
            yield_every_tick_until(&mut store, self.limits.call_timeout);
            let result: wasmtime::Result<Answer> = async {
                let instance = pre.instantiate_async(&mut store).await?;
                let api = instance.keel_plugin_connector_api();
                Ok(match operation {
                    Operation::Describe => Answer::Kinds(api.call_describe(&mut store).await?),
                    Operation::Perform(action, key) => {
                        Answer::Receipt(api.call_perform(&mut store, action, key).await?)
                    }
                    Operation::Compensate(receipt, key) => {
                        Answer::Receipt(api.call_compensate(&mut store, receipt, key).await?)
                    }
                })
            }
            .await;
            (result, store.data().limiter.memory_exceeded, store.data().stderr_summary())
        };
        let timeout =
            || ConnectorError::Timeout { connector: connector.clone(), limit_ms: self.limits.call_timeout.as_millis() };
        let outcome = tokio::time::timeout(self.limits.call_timeout, work).await;
        let refusal = policy.refusals().first();
        let failure = match outcome {
            Err(_elapsed) => timeout(),
            Ok((Err(trap), memory_exceeded, stderr)) => {
                if memory_exceeded || trap.downcast_ref::<MemoryLimitExceeded>().is_some() {
                    ConnectorError::MemoryLimit {
                        connector: connector.clone(),
                        limit_mib: self.limits.memory_bytes >> 20,
                    }
                } else if let Some(Trap::Interrupt) = trap.downcast_ref::<Trap>() {
                    timeout()
                } else {
                    let mut detail = secrets.redact(&one_line(&trap)).into_owned();
                    if !stderr.is_empty() {
                        detail.push_str(&format!(" (guest stderr: {stderr})"));
                    }
                    ConnectorError::Trap { connector: connector.clone(), detail }
                }
            }
            Ok((Ok(Answer::Receipt(Err(error))), _, _)) if refusal.is_some() => {
                let then = Some(redact_error(error, &secrets));
                let refusal = refusal.expect("checked by the guard");
                return Err(ConnectorError::EgressRefused { connector, refusal, then });
            }
            Ok((Ok(answer), _, _)) => return Ok(answer),
        };
        // A refused connection explains a trap or a timeout better than the
        // trap itself (a guest that panics on a failed connect).
        match (refusal, &failure) {
            (Some(refusal), ConnectorError::Trap { .. } | ConnectorError::Timeout { .. }) => {
                tracing::debug!(target: "keel::connector", connector, "after an egress refusal: {failure}");
                Err(ConnectorError::EgressRefused { connector, refusal, then: None })
            }
            _ => Err(failure),
        }
    }
}

/// `error` with secret values removed from its text.
fn redact_error(error: GuestError, secrets: &SecretValues) -> GuestError {
    let clean = |text: String| secrets.redact(&text).into_owned();
    match error {
        GuestError::Denied(t) => GuestError::Denied(clean(t)),
        GuestError::InvalidInput(t) => GuestError::InvalidInput(clean(t)),
        GuestError::BudgetExceeded(t) => GuestError::BudgetExceeded(clean(t)),
        GuestError::PendingApproval(t) => GuestError::PendingApproval(clean(t)),
        GuestError::Unavailable(t) => GuestError::Unavailable(clean(t)),
    }
}

/// Checks `describe()`'s answer and converts it.
fn check_kinds(connector: &str, kinds: Vec<ActionKind>) -> Result<Vec<ActionKindSpec>, ConnectorError> {
    let invalid = |detail: String| ConnectorError::InvalidDescribe { connector: connector.to_owned(), detail };
    if kinds.is_empty() {
        return Err(invalid("it serves no action kind".into()));
    }
    let mut seen = BTreeSet::new();
    let mut specs = Vec::with_capacity(kinds.len());
    for kind in kinds {
        check_kind_name(&kind.kind).map_err(|why| invalid(format!("kind {:?} {why}", kind.kind)))?;
        if !seen.insert(kind.kind.clone()) {
            return Err(invalid(format!("kind `{}` is listed twice", kind.kind)));
        }
        if let Some(compensation) = &kind.compensation {
            check_kind_name(compensation)
                .map_err(|why| invalid(format!("compensation {compensation:?} of `{}` {why}", kind.kind)))?;
        }
        let schema: serde_json::Value = serde_json::from_str(&kind.payload_schema)
            .map_err(|e| invalid(format!("the payload schema of `{}` is not JSON: {e}", kind.kind)))?;
        if !schema.is_object() {
            return Err(invalid(format!("the payload schema of `{}` is not a JSON Schema object", kind.kind)));
        }
        specs.push(ActionKindSpec {
            kind: kind.kind,
            payload_schema: schema,
            compensation: kind.compensation,
            idempotent: kind.idempotent,
        });
    }
    Ok(specs)
}

/// Kinds look like `email.send`: dot-separated words of lowercase letters,
/// digits, `-` and `_`, at least two of them.
fn check_kind_name(kind: &str) -> Result<(), &'static str> {
    let words: Vec<&str> = kind.split('.').collect();
    let word_ok = |w: &&str| {
        !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    };
    if kind.len() > 128 || words.len() < 2 || !words.iter().all(word_ok) {
        return Err("is not of the form `area.verb` (lowercase letters, digits, '-', '_')");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str, schema: &str) -> ActionKind {
        ActionKind { kind: name.into(), payload_schema: schema.into(), compensation: None, idempotent: true }
    }

    #[test]
    fn describe_answers_are_checked() {
        let ok = check_kinds("c", vec![kind("email.send", r#"{"type":"object"}"#)]).unwrap();
        assert_eq!(ok[0].payload_schema["type"], "object");
        for (kinds, expect) in [
            (vec![], "no action kind"),
            (vec![kind("Email", "{}")], "area.verb"),
            (vec![kind("a.b", "{}"), kind("a.b", "{}")], "twice"),
            (vec![kind("a.b", "not json")], "not JSON"),
            (vec![kind("a.b", "[]")], "JSON Schema object"),
        ] {
            let err = check_kinds("mail", kinds).unwrap_err().to_string();
            assert!(err.contains("mail") && err.contains(expect), "{err}");
        }
    }

    #[test]
    fn call_debug_hides_secret_values() {
        let engine = Engine::default();
        let component = Component::from_binary(&engine, b"\0asm\x0d\0\x01\0").unwrap();
        let secrets = BTreeMap::from([("key".to_owned(), "canary-value".to_owned())]);
        let call = ConnectorCall {
            name: "c",
            component: &component,
            outbound: &[],
            settings: &BTreeMap::new(),
            secrets: &secrets,
        };
        let debug = format!("{call:?}");
        assert!(debug.contains("key") && !debug.contains("canary-value"), "{debug}");
    }
}
