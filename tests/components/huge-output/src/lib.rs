//! Returns a valid JSON string of exactly 64 MiB: the host must refuse it as
//! too large rather than store or forward it.

use keel_sdk::{Error, Outcome, Task, agent};

const SIZE: usize = 64 << 20;

fn handle(_task: Task) -> Result<Outcome, Error> {
    let mut output = String::with_capacity(SIZE);
    output.push('"');
    output.extend(core::iter::repeat_n('a', SIZE - 2));
    output.push('"');
    debug_assert_eq!(output.len(), SIZE);
    Ok(Outcome { output })
}

agent!(handle);
