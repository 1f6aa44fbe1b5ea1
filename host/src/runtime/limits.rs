//! Hard limits on a guest. Each protects the host from one way a plugin
//! can hurt it; exceeding one ends the call with a clear error, never the
//! process, and the instance is thrown away.

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// Wall-clock budget of one call, host calls included (an infinite loop, or
/// a guest blocked on the host, cannot hold a worker forever).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Linear memory one instance may use (a memory bomb stops here).
pub const DEFAULT_MEMORY_LIMIT_BYTES: usize = 256 << 20;
/// Largest `outcome.output` the host accepts (a 64 MiB answer is a bug or
/// an attack on whoever reads it).
pub const DEFAULT_OUTPUT_LIMIT_BYTES: usize = 1 << 20;
/// Wasm stack depth per call (runaway recursion stops here).
pub const MAX_WASM_STACK_BYTES: usize = 1 << 20;
/// Host-side stack for each async call: the wasm stack plus room for host
/// functions.
pub const ASYNC_STACK_BYTES: usize = MAX_WASM_STACK_BYTES + (1 << 20);
/// Table elements per instance.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;
/// How often the epoch advances: the granularity of the time limit, and how
/// often a busy guest yields its worker thread to other calls.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Instances alive at once (pooling allocator slots).
pub const MAX_CONCURRENT_INSTANCES: u32 = 128;

/// The limits in force for one workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub call_timeout: Duration,
    pub memory_bytes: usize,
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: DEFAULT_CALL_TIMEOUT,
            memory_bytes: DEFAULT_MEMORY_LIMIT_BYTES,
            output_bytes: DEFAULT_OUTPUT_LIMIT_BYTES,
        }
    }
}

/// Enforces the memory and table limits of one store and remembers that it
/// did, so the error says "memory limit" rather than a generic trap.
#[derive(Debug)]
pub struct GuestLimiter {
    memory_bytes: usize,
    pub(crate) memory_exceeded: bool,
}

/// The error a limiter returns when it refuses to grow memory.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (asked for {desired})")]
pub struct MemoryLimitExceeded {
    pub limit: usize,
    pub desired: usize,
}

impl GuestLimiter {
    pub fn new(memory_bytes: usize) -> GuestLimiter {
        GuestLimiter { memory_bytes, memory_exceeded: false }
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_exceeded = true;
            return Err(MemoryLimitExceeded { limit: self.memory_bytes, desired }.into());
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
