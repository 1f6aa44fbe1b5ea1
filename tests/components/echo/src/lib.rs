//! Returns the task input unchanged: the baseline for benchmarks and
//! contract tests (no capabilities, no allocation beyond the call itself).

use keel_sdk::{Error, Outcome, Task, agent};

fn handle(task: Task) -> Result<Outcome, Error> {
    Ok(Outcome { output: task.input })
}

agent!(handle);
