//! Writes to memory, then panics: the host must report a trap, and the test
//! can check what became of the write made before it.

use keel_sdk::{Error, Outcome, Task, agent, memory};

fn handle(_task: Task) -> Result<Outcome, Error> {
    // If the grant is missing this returns the error instead of trapping, so
    // the test fails on the real cause.
    memory::put("trap-mid-call", "progress", b"started")?;
    // wasm32 panics abort: the message goes to stderr, then `unreachable` traps.
    panic!("deliberate trap for the test");
}

agent!(handle);
