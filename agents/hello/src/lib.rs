//! `hello`: greets people and remembers how often it has seen them.
//!
//! Input `{"name": "..."}`; output `{"message": "Hello, NAME!", "times_seen": N}`.
//! The count lives in memory namespace `hello`, one JSON number per name.

use keel_sdk::{Error, Outcome, Task, agent, memory};
use serde::{Deserialize, Serialize};

/// Memory namespace holding one JSON `u64` count per name.
const NAMESPACE: &str = "hello";

#[derive(Deserialize)]
struct Greet {
    name: String,
}

#[derive(Serialize)]
struct Greeting {
    message: String,
    times_seen: u64,
}

fn handle(task: Task) -> Result<Outcome, Error> {
    let input: Greet = task.input_json()?;
    let seen = memory::get_json::<u64>(NAMESPACE, &input.name)?.unwrap_or(0) + 1;
    memory::put_json(NAMESPACE, &input.name, &seen)?;
    keel_sdk::log::info(&format!("greeted {} (seen {seen} times)", input.name));
    Outcome::json(&Greeting { message: format!("Hello, {}!", input.name), times_seen: seen })
}

agent!(handle);
