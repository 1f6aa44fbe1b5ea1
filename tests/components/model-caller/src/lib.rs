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
    Stream(Completion),
    /// Starts a stream, reads one piece and drops it.
    #[serde(rename = "stream_abandoned")]
    StreamAbandoned(Completion),
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

fn request(c: &Completion) -> CompletionRequest {
    let mut messages = Vec::new();
    if let Some(system) = &c.system {
        messages.push(Message { role: Role::System, content: system.clone() });
    }
    messages.push(Message { role: Role::User, content: c.user.clone() });
    CompletionRequest {
        tier: c.tier.clone(),
        messages,
        max_tokens: c.max_tokens.unwrap_or(64),
        temperature_milli: c.temperature_milli.unwrap_or(0),
        json_schema: c.schema.as_ref().map(Value::to_string),
    }
}

fn complete(c: &Completion) -> Result<Value, Error> {
    Ok(answer_json(model::complete(&request(c))?))
}

fn answer_json(answer: model::Completion) -> Value {
    json!({
        "text": answer.text,
        "json": answer.json,
        "input_tokens": answer.usage.input_tokens,
        "output_tokens": answer.usage.output_tokens,
        "cost_micros": answer.cost_micros,
        "model": answer.model,
        "cached": answer.cached,
    })
}

/// Reads every piece, then the whole completion.
fn stream(c: &Completion) -> Result<Value, Error> {
    let stream = model::complete_streaming(&request(c));
    let mut pieces = Vec::new();
    while let Some(piece) = stream.next()? {
        pieces.push(piece);
    }
    let mut answer = answer_json(stream.finish()?);
    answer["pieces"] = json!(pieces);
    Ok(answer)
}

fn stream_abandoned(c: &Completion) -> Result<Value, Error> {
    let stream = model::complete_streaming(&request(c));
    let first = stream.next()?;
    drop(stream);
    Ok(json!({"first": first}))
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
                Call::Stream(c) => stream(c),
                Call::StreamAbandoned(c) => stream_abandoned(c),
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
