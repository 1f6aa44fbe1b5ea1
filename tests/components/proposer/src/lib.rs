//! Proposes the actions listed in its input; see README.md.

use keel_sdk::actions::{self, Action, Disposition};
use keel_sdk::{Error, Outcome, Task, agent, memory};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Script {
    proposals: Vec<Proposal>,
    #[serde(default)]
    fail: bool,
}

#[derive(Deserialize)]
struct Proposal {
    kind: String,
    payload: Value,
    amount: Option<i64>,
    currency: Option<String>,
    confidence: Option<f32>,
    rationale: Option<String>,
}

fn handle(task: Task) -> Result<Outcome, Error> {
    let script: Script = task.input_json()?;
    let mut results = Vec::new();
    for p in &script.proposals {
        let action = Action {
            kind: p.kind.clone(),
            payload: p.payload.to_string(),
            amount: p.amount,
            currency: p.currency.clone(),
            confidence: p.confidence.unwrap_or(1.0),
            rationale: p.rationale.clone().unwrap_or_else(|| "test".into()),
        };
        results.push(match actions::propose(&action) {
            Ok(Disposition::Queued(key)) => json!({ "queued": key }),
            Ok(Disposition::Executed(receipt)) => json!({ "executed": receipt }),
            Err(e) => {
                let (case, detail) = e.case();
                json!({"error": case, "detail": detail})
            }
        });
    }
    memory::put_json("proposer", "last", &script.proposals.len())?;
    if script.fail {
        return Err(Error::InvalidInput("failing on purpose after proposing".into()));
    }
    Outcome::json(&results)
}

agent!(handle);
