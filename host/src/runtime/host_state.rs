//! What one store (one call of one plugin) owns.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::limits::GuestLimiter;
use crate::kernel::{Caller, Gate};
use crate::memory::plane::MemoryPlane;
use crate::memory::write_set::WriteSet;
use crate::workflow::journal::{JournaledMonotonicClock, JournaledRandom, JournaledWallClock, SharedJournal};

/// Per-call state; dropped with the store, so nothing leaks between calls.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: GuestLimiter,
    pub(crate) caller: Caller,
    pub(crate) gate: Gate,
    /// What the guest wrote to stderr (a panic message, say), bounded.
    pub(crate) stderr: MemoryOutputPipe,
    /// Memory writes held until the call succeeds.
    pub(crate) writes: WriteSet,
    /// Collections and the semantic index, shared by all calls.
    pub(crate) plane: Arc<MemoryPlane>,
    /// This call's task id, and the run it belongs to, if any.
    pub(crate) task_id: String,
    pub(crate) run_id: Option<String>,
    /// Proposals made so far in this call: the last part of their keys.
    pub(crate) proposals: u32,
    /// For a workflow step: every host call, recorded.
    pub(crate) journal: Option<SharedJournal>,
    /// For a workflow step: its workflow.
    pub(crate) workflow: Option<String>,
}

/// Guest stderr kept per call, for trap messages and debug logs.
pub const GUEST_STDERR_BYTES: usize = 64 * 1024;

impl HostState {
    pub fn new(
        caller: Caller,
        gate: Gate,
        plane: Arc<MemoryPlane>,
        memory_bytes: usize,
        task: &crate::bindings::keel::plugin::types::Task,
        step: Option<super::StepContext>,
    ) -> HostState {
        let (workflow, journal) = step.map(|s| (s.workflow, s.journal)).unzip();
        let stderr = MemoryOutputPipe::new(GUEST_STDERR_BYTES);
        HostState {
            wasi: minimal_wasi(stderr.clone(), journal.as_ref()),
            table: ResourceTable::new(),
            limiter: GuestLimiter::new(memory_bytes),
            caller,
            gate,
            stderr,
            writes: WriteSet::default(),
            plane,
            task_id: task.id.clone(),
            run_id: task.run_id.clone(),
            proposals: 0,
            journal,
            workflow,
        }
    }
}

/// WASI with clocks and random only: no preopened directories, no
/// environment, no arguments, no sockets; stdin empty, stdout discarded,
/// stderr captured into `stderr`. With a journal, every clock reading and
/// random value is recorded in it.
fn minimal_wasi(stderr: MemoryOutputPipe, journal: Option<&SharedJournal>) -> WasiCtx {
    let mut builder = WasiCtxBuilder::new();
    builder.stderr(stderr).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
    if let Some(journal) = journal {
        use rand::SeedableRng;
        let seeded = || rand::rngs::StdRng::from_rng(&mut rand::rng());
        builder
            .wall_clock(JournaledWallClock(journal.clone()))
            .monotonic_clock(JournaledMonotonicClock { journal: journal.clone(), start: std::time::Instant::now() })
            .secure_random(JournaledRandom { journal: journal.clone(), inner: seeded(), op: "random.secure" })
            .insecure_random(JournaledRandom { journal: journal.clone(), inner: seeded(), op: "random.insecure" });
    }
    builder.build()
}

impl HostState {
    /// The guest's stderr as one line without Rust's backtrace hint, cut to
    /// a readable length; empty if it wrote nothing.
    pub(crate) fn stderr_summary(&self) -> String {
        summarize_stderr(&self.stderr.contents())
    }
}

/// Guest stderr as one line without Rust's backtrace hint, cut to a
/// readable length.
pub(crate) fn summarize_stderr(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect::<Vec<_>>()
        .join(" ");
    match line.char_indices().nth(MAX_SUMMARY_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// Longest guest stderr excerpt put into an error message.
const MAX_SUMMARY_CHARS: usize = 400;

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
