//! Calls capabilities its manifest does not grant. Every call must come back
//! as an `error` value (never a trap); the outcome reports which case.

use keel_sdk::{Error, Outcome, Task, actions, agent, memory};

/// The WIT case name of `result`'s error, or `ok`.
fn case<T>(result: &Result<T, Error>) -> &'static str {
    result.as_ref().map_or_else(|e| e.case().0, |_| "ok")
}

fn handle(_task: Task) -> Result<Outcome, Error> {
    let get = memory::get("someone-else", "k");
    let put = memory::put("someone-else", "k", b"x");
    let propose = actions::propose(&actions::Action {
        kind: "payments.charge".to_owned(),
        payload: "{}".to_owned(),
        amount: Some(100),
        currency: Some("EUR".to_owned()),
        confidence: 0.9,
        rationale: "test".to_owned(),
    });
    // The one granted namespace still works after the denials.
    let own = memory::put("own", "k", b"fine");
    Outcome::json(&serde_json::json!({
        "get": case(&get),
        "put": case(&put),
        "propose": case(&propose),
        "own": case(&own),
    }))
}

agent!(handle);
