//! One call of an agent's `handle`: a fresh store, the limits armed, the
//! failure named precisely. A trapped instance is dropped with its store
//! and never reused.

use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::{Store, Trap};

use super::limits::MemoryLimitExceeded;
use tracing::Instrument;

use super::{HostState, PreparedPlugin, Runtime};
use crate::bindings::{GuestError, Outcome, Task};
use crate::kernel::Gate;
use crate::memory::StoreError;
use crate::memory::audit::AuditEntry;
use crate::memory::committer::Mutation;
use crate::plugin::World;
use crate::workflow::journal::SharedJournal;

/// Why a call did not produce an outcome.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    #[error("no plugin named `{name}` is installed: see `keel list`, or install it with `keel install PATH`")]
    NotInstalled { name: String },
    #[error("`{name}` is a {world}, not an agent: connectors are run by the kernel when an action is approved")]
    NotAnAgent { name: String, world: World },
    #[error("cannot load plugin `{plugin}`: {detail}; reinstall it with `keel install`")]
    Load { plugin: String, detail: String },
    #[error(
        "plugin `{plugin}` timed out after {limit_ms} ms and was stopped: look for an endless loop, or raise `limits.call_timeout_ms` in keel.toml"
    )]
    Timeout { plugin: String, limit_ms: u128 },
    #[error(
        "plugin `{plugin}` exceeded its memory limit of {limit_mib} MiB and was stopped: look for unbounded allocation, or raise `limits.memory_mib` in keel.toml"
    )]
    MemoryLimit { plugin: String, limit_mib: usize },
    #[error("plugin `{plugin}` overflowed its stack (runaway recursion?) and was stopped")]
    StackOverflow { plugin: String },
    #[error("plugin `{plugin}` trapped: {detail}")]
    Trap { plugin: String, detail: String },
    #[error(
        "plugin `{plugin}` returned {size} bytes of output, over the limit of {limit}: return less, or keep large data in memory and return its key"
    )]
    OutputTooLarge { plugin: String, size: usize, limit: usize },
    #[error("plugin `{plugin}` returned an error: {error}")]
    Guest { plugin: String, error: GuestError },
    #[error("plugin `{plugin}` finished, but its writes were refused and none was saved: {detail}; call it again")]
    Refused { plugin: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CallError {
    /// True for failures caused by the plugin breaking a hard limit or
    /// crashing, as opposed to returning an error value.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            CallError::Timeout { .. }
                | CallError::MemoryLimit { .. }
                | CallError::StackOverflow { .. }
                | CallError::Trap { .. }
                | CallError::OutputTooLarge { .. }
        )
    }
}

/// What a call made for a workflow step carries.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub workflow: String,
    pub journal: SharedJournal,
    /// A replay: nothing the call writes is committed.
    pub dry_run: bool,
}

/// Writes to land with a successful call's own; see [`Runtime::call_task`].
pub type FinishTask<'a> = dyn Fn(&Outcome) -> (Vec<Mutation>, AuditEntry) + Send + Sync + 'a;

static TASK_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A task id unique within this process and unlikely to repeat across them.
pub fn new_task_id() -> String {
    let n = TASK_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("t-{:x}-{:x}-{n}", crate::memory::now_ms(), std::process::id())
}

impl Runtime {
    /// Calls `handle` of plugin `name` with `input` (a JSON document).
    pub async fn call(&self, name: &str, input: String) -> Result<Outcome, CallError> {
        let plugin = self.prepare(name, &())?;
        self.call_prepared(&plugin, input).await
    }

    /// Calls `handle` of a plugin returned by [`Runtime::prepare`].
    pub async fn call_prepared(&self, plugin: &PreparedPlugin, input: String) -> Result<Outcome, CallError> {
        let task = Task { id: new_task_id(), input, run_id: None };
        self.call_task(plugin, task, None, None).await
    }

    /// Runs `task` on `plugin`; for a workflow step, `step` names the
    /// workflow (costs are counted against it) and the journal its host
    /// calls are recorded in. If it succeeds, `finish` adds writes (and
    /// their audit entry) that land in the same commit as the call's own: a
    /// workflow step records its output and journal atomically with its
    /// effects.
    pub async fn call_task(
        &self,
        plugin: &PreparedPlugin,
        task: Task,
        finish: Option<&FinishTask<'_>>,
        step: Option<StepContext>,
    ) -> Result<Outcome, CallError> {
        let span = tracing::info_span!("keel.call", plugin = %plugin.record.name, task = %task.id);
        let gate = self.gate.for_call();
        let task_id = task.id.clone();
        let result = self.run_task(plugin, task, &gate, finish, step).instrument(span).await;
        // Committed or dropped by now: the call's spend is no longer in flight.
        gate.kernel().ledger().release(&task_id);
        gate.flush().await?;
        result
    }

    async fn run_task(
        &self,
        plugin: &PreparedPlugin,
        task: Task,
        gate: &Gate,
        finish: Option<&FinishTask<'_>>,
        step: Option<StepContext>,
    ) -> Result<Outcome, CallError> {
        let name = plugin.record.name.as_str();

        let plane = self.plane.clone();
        let dry_run = step.as_ref().is_some_and(|s| s.dry_run);
        let state = HostState::new(plugin.caller.clone(), gate.clone(), plane, self.limits.memory_bytes, &task, step);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        super::engine::yield_every_tick_until(&mut store, self.limits.call_timeout);

        let run = async {
            let agent = plugin.pre.instantiate_async(&mut store).await?;
            agent.call_handle(&mut store, &task).await
        };
        let result = tokio::time::timeout(self.limits.call_timeout, run).await;
        let plugin_name = name.to_owned();
        let outcome = match result {
            Err(_elapsed) => return Err(self.timeout(plugin_name)),
            Ok(Err(trap)) => {
                let state = store.data();
                return Err(self.classify_trap(
                    plugin_name,
                    trap,
                    state.limiter.memory_exceeded,
                    state.stderr_summary(),
                ));
            }
            Ok(Ok(Err(error))) => return Err(CallError::Guest { plugin: plugin_name, error }),
            Ok(Ok(Ok(outcome))) => outcome,
        };
        let stderr = store.data().stderr_summary();
        if !stderr.is_empty() {
            tracing::debug!(target: "keel::guest", plugin = name, "stderr: {stderr}");
        }
        if outcome.output.len() > self.limits.output_bytes {
            return Err(CallError::OutputTooLarge {
                plugin: plugin_name,
                size: outcome.output.len(),
                limit: self.limits.output_bytes,
            });
        }
        if dry_run {
            return Ok(outcome);
        }
        // The call succeeded: its writes land now, together, durably.
        let mut writes = std::mem::take(&mut store.data_mut().writes);
        if let Some(finish) = finish {
            let (mutations, entry) = finish(&outcome);
            writes.effect(mutations, entry);
        }
        if !writes.is_empty() {
            let (batch, feed) = writes.into_batch(&self.plane);
            match self.store().commit(batch).await {
                Ok(_) => feed.apply(&self.plane),
                Err(StoreError::Refused(detail)) => return Err(CallError::Refused { plugin: plugin_name, detail }),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(outcome)
    }

    fn timeout(&self, plugin: String) -> CallError {
        CallError::Timeout { plugin, limit_ms: self.limits.call_timeout.as_millis() }
    }

    fn classify_trap(
        &self,
        plugin: String,
        error: wasmtime::Error,
        memory_exceeded: bool,
        stderr: String,
    ) -> CallError {
        if memory_exceeded || error.downcast_ref::<MemoryLimitExceeded>().is_some() {
            return CallError::MemoryLimit { plugin, limit_mib: self.limits.memory_bytes >> 20 };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => self.timeout(plugin),
            Some(Trap::StackOverflow) => CallError::StackOverflow { plugin },
            _ if stderr.is_empty() => CallError::Trap { plugin, detail: one_line(&error) },
            _ => CallError::Trap { plugin, detail: format!("{} (guest stderr: {stderr})", one_line(&error)) },
        }
    }
}

/// The error chain on one line, without the wasm backtrace.
pub(crate) fn one_line(error: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let first = text.lines().next().unwrap_or_default().trim().to_owned();
        if !first.is_empty() && !first.starts_with("error while executing at wasm backtrace") && !parts.contains(&first)
        {
            parts.push(first);
        }
    }
    parts.join(": ")
}
