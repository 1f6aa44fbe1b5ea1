//! Whether recalled notes were used: the proxy behind the retrieval
//! relevance drift signal.
//!
//! A finished run's journal holds every `memory.recall` and
//! `memory.recall-many` its steps made, with the hits returned, and every
//! later host call with its request. A hit counts as **used** when its note
//! id, or the first [`TEXT_NEEDLE_CHARS`] characters of its text, appear in
//! a host call the run made after the recall (a model prompt, a proposal's
//! payload, a memory write, a later query: in the same step or a later
//! one) or in the run's output. Otherwise it was recalled for nothing.
//! Limits: only workflow steps are journaled (a plain `keel call` is not
//! seen); an agent that paraphrases a note without quoting its opening or
//! its id counts as not using it; one that copies every hit into its
//! output counts as using all of them.

use serde_json::Value;

use crate::memory::{Store, StoreError};
use crate::workflow::runs::Run;

/// How much of a hit's text (in characters, from its start, trimmed) must
/// reappear for the hit to count as used.
pub const TEXT_NEEDLE_CHARS: usize = 48;

/// A text shorter than this (trimmed) is too generic to search for; only
/// the note id then says whether the hit was used.
const MIN_TEXT_NEEDLE_CHARS: usize = 12;

/// (namespace, used) for every hit that run `run` recalled, in order.
pub fn recalled(store: &Store, run: &Run) -> Result<Vec<(String, bool)>, StoreError> {
    // Every host call of the run in the order its steps ended.
    let mut calls = Vec::new();
    for step_id in &run.order {
        let Some(step) = run.steps.get(step_id) else { continue };
        let tasks: Vec<String> = match step.items.is_empty() {
            true => vec![step_id.clone()],
            false => step.items.keys().map(|i| format!("{step_id}.{i}")).collect(),
        };
        for task in tasks {
            calls.extend(store.journal(&run.id, &task)?);
        }
    }
    let later: Vec<String> = calls.iter().map(|c| haystack(&c.request)).collect();
    let output = run.output().map(haystack).unwrap_or_default();
    let mut out = Vec::new();
    for (i, call) in calls.iter().enumerate() {
        let (requests, answers): (Vec<&Value>, Vec<&Value>) = match call.op.as_str() {
            "memory.recall" => (vec![&call.request], vec![&call.result["Ok"]]),
            "memory.recall-many" => {
                let requests = call.request.as_array().map(|a| a.iter().collect()).unwrap_or_default();
                let answers = call.result["Ok"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
                (requests, answers)
            }
            _ => continue,
        };
        for (request, hits) in requests.iter().zip(answers) {
            let namespace = request["namespace"].as_str().unwrap_or_default();
            for hit in hits.as_array().into_iter().flatten() {
                let needles = needles(hit);
                let found = |text: &str| needles.iter().any(|n| text.contains(n.as_str()));
                let used = later[i + 1..].iter().any(|h| found(h)) || found(&output);
                out.push((namespace.to_owned(), used));
            }
        }
    }
    Ok(out)
}

/// What to look for: the note id, and the opening of its text.
fn needles(hit: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(id) = hit["id"].as_str().filter(|id| !id.is_empty()) {
        out.push(id.to_owned());
    }
    let text = hit["text"].as_str().unwrap_or_default().trim();
    let opening: String = text.chars().take(TEXT_NEEDLE_CHARS).collect();
    if opening.chars().count() >= MIN_TEXT_NEEDLE_CHARS {
        out.push(opening);
    }
    out
}

/// Every string in `value`, unescaped, one per line; arrays of bytes (how
/// key/value writes are journaled) as text.
fn haystack(value: &Value) -> String {
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(items) => {
                let bytes: Option<Vec<u8>> =
                    items.iter().map(|i| i.as_u64().and_then(|n| u8::try_from(n).ok())).collect();
                match bytes {
                    Some(bytes) if !bytes.is_empty() => {
                        out.push_str(&String::from_utf8_lossy(&bytes));
                        out.push('\n');
                    }
                    _ => items.iter().for_each(|i| walk(i, out)),
                }
            }
            Value::Object(map) => map.values().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    walk(value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn byte_arrays_and_nested_strings_are_searched_as_text() {
        let request = json!(["notes", "k", "hi there".as_bytes(), {"data": "{\"x\":\"quoted\"}"}]);
        let text = haystack(&request);
        assert!(text.contains("hi there") && text.contains("{\"x\":\"quoted\"}"), "{text}");
        let hit = json!({"id": "n1", "text": "  The customer prefers invoices by post, never by email.  "});
        assert_eq!(needles(&hit), ["n1", "The customer prefers invoices by post, never by "]);
        assert_eq!(needles(&json!({"id": "n2", "text": "short"})), ["n2"]);
    }
}
