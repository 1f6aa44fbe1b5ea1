//! Reads `bench/key` `reads` times and returns how many reads found a
//! value: `keel bench` times it with N and 0 reads to get the cost of one
//! host call.

use keel_sdk::{Error, Outcome, Task, agent, memory};

#[derive(serde::Deserialize)]
struct Input {
    reads: u64,
    #[serde(default)]
    seed: bool,
}

fn handle(task: Task) -> Result<Outcome, Error> {
    let input: Input = task.input_json()?;
    if input.seed {
        memory::put("bench", "key", b"value")?;
    }
    let mut found = 0u64;
    for _ in 0..input.reads {
        found += u64::from(memory::get("bench", "key")?.is_some());
    }
    Outcome::json(&found)
}

agent!(handle);
