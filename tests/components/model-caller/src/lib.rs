//! Makes the model calls listed in its input; see README.md.

use keel_sdk::model::{self, CompletionRequest, Message, Role};
use keel_sdk::{Error, Outcome, Task, agent};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Script {
    calls: Vec<Call>,
    #[serde(default)]
    fail: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Call {
    Complete(Completion),
    Embed(Vec<String>),
    #[serde(rename = "embed_background")]
    EmbedBackground(Vec<String>),
}

#[derive(Deserialize)]
struct Completion {
    tier: String,
    system: Option<String>,
    user: String,
    max_tokens: Option<u32>,
    temperature_milli: Option<u32>,
    schema: Option<Value>,
}

fn complete(c: &Completion) -> Result<Value, Error> {
    let mut messages = Vec::new();
    if let Some(system) = &c.system {
        messages.push(Message { role: Role::System, content: system.clone() });
    }
    messages.push(Message { role: Role::User, content: c.user.clone() });
    let request = CompletionRequest {
        tier: c.tier.clone(),
        messages,
        max_tokens: c.max_tokens.unwrap_or(64),
        temperature_milli: c.temperature_milli.unwrap_or(0),
        json_schema: c.schema.as_ref().map(Value::to_string),
    };
    let answer = model::complete(&request)?;
    Ok(json!({
        "text": answer.text,
        "json": answer.json,
        "input_tokens": answer.usage.input_tokens,
        "output_tokens": answer.usage.output_tokens,
        "cost_micros": answer.cost_micros,
        "model": answer.model,
        "cached": answer.cached,
    }))
}

fn embed(texts: &[String], background: bool) -> Result<Value, Error> {
    let vectors = if background { model::embed_background(texts)? } else { model::embed(texts)? };
    let first: Vec<f32> = vectors.first().map(|v| v.iter().take(4).copied().collect()).unwrap_or_default();
    Ok(json!({
        "vectors": vectors.len(),
        "dim": vectors.first().map_or(0, Vec::len),
        "first": first,
    }))
}

fn handle(task: Task) -> Result<Outcome, Error> {
    let script: Script = task.input_json()?;
    let results: Vec<Value> = script
        .calls
        .iter()
        .map(|call| {
            let result = match call {
                Call::Complete(c) => complete(c),
                Call::Embed(texts) => embed(texts, false),
                Call::EmbedBackground(texts) => embed(texts, true),
            };
            result.unwrap_or_else(|e| {
                let (case, detail) = e.case();
                json!({"error": case, "detail": detail})
            })
        })
        .collect();
    if script.fail {
        return Err(Error::InvalidInput("failing on purpose after the model calls".into()));
    }
    Outcome::json(&results)
}

agent!(handle);
