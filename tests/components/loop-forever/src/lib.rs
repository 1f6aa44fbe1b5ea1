//! Never returns: the host must stop it with its time limit.

use keel_sdk::{Error, Outcome, Task, agent};

fn handle(_task: Task) -> Result<Outcome, Error> {
    // `black_box` keeps the optimiser from reasoning the loop away; the loop
    // makes no host calls, so only epoch/fuel interruption can end it.
    loop {
        core::hint::black_box(());
    }
}

agent!(handle);
