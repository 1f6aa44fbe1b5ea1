//! Recurses without bound: the host must report a stack overflow.
//!
//! The recursion keeps its state in wasm locals, never in Rust's shadow stack
//! in linear memory: it exhausts the engine's call stack (`call stack
//! exhausted` in wasmtime) rather than running the shadow stack pointer out
//! of linear memory, which would show up as an out-of-bounds memory trap.

use core::hint::black_box;

use keel_sdk::{Error, Outcome, Task, agent};

/// Not a tail call: the result is combined with values live across the call,
/// so neither the optimiser nor the engine can turn it into a loop.
#[inline(never)]
fn descend(depth: u64, a: u64, b: u64, c: u64, d: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return a;
    }
    let below = descend(depth + 1, b ^ depth, c.rotate_left(7), d ^ a, a.wrapping_add(b));
    black_box(below).wrapping_mul(a | 1) ^ b.wrapping_add(c) ^ d.rotate_right(3) ^ depth
}

fn handle(_task: Task) -> Result<Outcome, Error> {
    let result = descend(0, black_box(1), black_box(2), black_box(3), black_box(4));
    Outcome::json(&result)
}

agent!(handle);
