//! `extractor`: turns an inbound message (an email file's text, or webhook
//! JSON) into a canonical `leads` record, one per sender address.
//!
//! Input: `{"text": "From: ...\nSubject: ...\n\n..."}` or `{"lead": {...}}`
//! with fields already split out (a web form). The `small` model tier reads
//! the email against a JSON Schema (offline, the rules provider does it by
//! patterns). The record's id is the sender's address in lower case, so a
//! second message from the same person updates the same record (compare
//! and set on its version): empty fields are filled, the message count and
//! the list of needs grow. Each message is also remembered as a note in
//! `leads`, tagged with the company, for the planner to recall.
//!
//! The same tier first sorts the message into `lead`, `support` or `spam`:
//! spam is not recorded.
//!
//! Output: `{"lead_id", "label", "lead": {...}, "new": bool, "messages": N,
//! "confidence": {"name": 0.9, ...}, "note_id", "model"}`; or
//! `{"skipped": "why", "label"}` for spam and for a message that names no
//! sender address.

use keel_sdk::memory::{self, Note, WriteResult};
use keel_sdk::model::{self, CompletionRequest, Message, Role};
use keel_sdk::{Error, Outcome, Task, agent};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Records and notes both live in this namespace.
const LEADS: &str = "leads";
/// Compare-and-set retries when another run updates the same lead.
const WRITE_ATTEMPTS: usize = 5;

#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    lead: Option<Extracted>,
}

/// What one message says.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Extracted {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    company: String,
    #[serde(default)]
    need: String,
    #[serde(default)]
    budget: Option<f64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    subject: String,
    /// How much of the asked-for fields the model found, 0..1.
    #[serde(default)]
    confidence: Option<f64>,
}

/// The canonical `leads` record.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Lead {
    name: String,
    email: String,
    company: String,
    need: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
    source: String,
    /// Confidence per field, 0..1 (see `field_confidence`).
    confidence: serde_json::Map<String, Value>,
    /// Messages received from this sender.
    messages: u64,
    /// Every need they wrote about, oldest first (at most 20).
    needs: Vec<String>,
}

fn schema() -> Value {
    json!({
        "type": "object",
        "required": ["name", "email", "company", "need", "subject", "confidence"],
        "properties": {
            "name": {"type": "string"},
            "email": {"type": "string"},
            "company": {"type": "string"},
            "need": {"type": "string"},
            "subject": {"type": "string"},
            "budget": {"type": "number", "minimum": 0},
            "currency": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1}
        }
    })
}

/// `lead`, `support` or `spam`.
fn classify(text: &str) -> Result<String, Error> {
    let request = CompletionRequest {
        tier: "small".into(),
        messages: vec![
            Message { role: Role::System, content: "Classify the message. Labels: lead, support, spam".into() },
            Message { role: Role::User, content: text.to_owned() },
        ],
        max_tokens: 8,
        temperature_milli: 0,
        json_schema: None,
    };
    Ok(model::complete(&request)?.text.trim().to_lowercase())
}

fn extract(text: &str) -> Result<(Extracted, String), Error> {
    let request = CompletionRequest {
        tier: "small".into(),
        messages: vec![
            Message {
                role: Role::System,
                content: "Extract the sales lead in this email: the sender's name, email address and company, \
                          what they need, and their budget if stated. Answer as JSON."
                    .into(),
            },
            Message { role: Role::User, content: text.to_owned() },
        ],
        max_tokens: 400,
        temperature_milli: 0,
        json_schema: Some(schema().to_string()),
    };
    let completion = model::complete(&request)?;
    let json = completion.json.unwrap_or(completion.text);
    let extracted = serde_json::from_str(&json)
        .map_err(|e| Error::Unavailable(format!("the model's answer is not the lead JSON asked for ({e}): {json}")))?;
    Ok((extracted, completion.model))
}

/// A plausible address: one `@`, a dot in the domain, no spaces.
fn is_address(email: &str) -> bool {
    let mut parts = email.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else { return false };
    !local.is_empty() && domain.contains('.') && !email.contains(char::is_whitespace)
}

/// Per field: 0 when missing; the address 0.99 when it parses; other
/// fields the model's overall confidence (the rules provider cannot say
/// more per field; a language model's answer is taken as a whole too).
fn field_confidence(e: &Extracted) -> serde_json::Map<String, Value> {
    let overall = e.confidence.unwrap_or(0.5).clamp(0.0, 1.0);
    let present = |s: &str| if s.trim().is_empty() { 0.0 } else { overall };
    let round = |x: f64| Value::from((x * 100.0).round() / 100.0);
    let mut out = serde_json::Map::new();
    out.insert("email".into(), round(if is_address(&e.email) { 0.99 } else { 0.0 }));
    out.insert("name".into(), round(present(&e.name)));
    out.insert("company".into(), round(present(&e.company)));
    out.insert("need".into(), round(present(&e.need)));
    out.insert("budget".into(), round(if e.budget.is_some() { overall } else { 0.0 }));
    out
}

/// `company:acme-robotics` from "Acme Robotics".
fn company_tag(company: &str) -> String {
    let slug: Vec<String> = company
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !["gmbh", "inc", "ltd", "llc", "ag", "sa", "bv", "co"].contains(&w.as_str()))
        .collect();
    if slug.is_empty() { "company:unknown".to_owned() } else { format!("company:{}", slug.join("-")) }
}

/// Merges message `e` into the stored lead (or a new one).
fn merge(stored: Option<Lead>, e: &Extracted) -> Lead {
    let mut lead = stored.unwrap_or_else(|| Lead { source: "email".into(), ..Lead::default() });
    let fresh = field_confidence(e);
    let fill = |old: &mut String, new: &str| {
        if old.trim().is_empty() && !new.trim().is_empty() {
            *old = new.trim().to_owned();
        }
    };
    fill(&mut lead.name, &e.name);
    fill(&mut lead.email, &e.email.to_lowercase());
    fill(&mut lead.company, &e.company);
    if !e.need.trim().is_empty() {
        // The latest need is what the next steps answer.
        lead.need = e.need.trim().to_owned();
        if lead.needs.last() != Some(&lead.need) {
            lead.needs.push(lead.need.clone());
        }
        if lead.needs.len() > 20 {
            lead.needs.remove(0);
        }
    }
    if e.budget.is_some() {
        lead.budget = e.budget;
        lead.currency = e.currency.clone().or(lead.currency.take());
    }
    for (field, value) in fresh {
        let old = lead.confidence.get(&field).and_then(Value::as_f64).unwrap_or(0.0);
        if value.as_f64().unwrap_or(0.0) >= old {
            lead.confidence.insert(field, value);
        }
    }
    lead.messages += 1;
    lead
}

fn handle(task: Task) -> Result<Outcome, Error> {
    let input: Input = task.input_json()?;
    let (extracted, model, label) = match (input.lead, input.text) {
        (Some(lead), _) => (lead, "form".to_owned(), "lead".to_owned()),
        (None, Some(text)) => {
            let label = classify(&text)?;
            if label == "spam" {
                return Outcome::json(&json!({"skipped": "spam", "label": label}));
            }
            let (extracted, model) = extract(&text)?;
            (extracted, model, label)
        }
        (None, None) => {
            return Err(Error::InvalidInput("input: give `text` (an email) or `lead` (form fields)".into()));
        }
    };
    let email = extracted.email.trim().to_lowercase();
    if !is_address(&email) {
        keel_sdk::log::warn("message without a sender address: skipped");
        return Outcome::json(&json!({"skipped": "the message names no sender address", "label": label}));
    }

    // Compare and set: a concurrent run for the same sender retries.
    let mut attempt = 0;
    let (lead, new) = loop {
        attempt += 1;
        let stored = memory::get_record_json::<Lead>(LEADS, &email)?;
        let version = stored.as_ref().map(|(v, _)| *v);
        let lead = merge(stored.map(|(_, l)| l), &extracted);
        match memory::put_record_json(LEADS, &email, &lead, Some(version.unwrap_or(0)))? {
            WriteResult::Written(_) => break (lead, version.is_none()),
            WriteResult::Conflict(_) if attempt < WRITE_ATTEMPTS => continue,
            WriteResult::Conflict(now) => {
                return Err(Error::Unavailable(format!("lead {email} kept changing (version {now}); run again")));
            }
        }
    };

    let budget = match (lead.budget, &lead.currency) {
        (Some(b), Some(c)) => format!(" Budget {b} {c}."),
        (Some(b), None) => format!(" Budget {b}."),
        _ => String::new(),
    };
    let note = Note {
        text: format!(
            "{} ({}, {}) asked: {}.{budget}",
            lead.company,
            lead.name,
            email,
            extracted.need.trim().trim_end_matches(['.', '!', '?'])
        ),
        tags: vec![company_tag(&lead.company), "lead-message".into()],
        metadata: json!({"lead_id": email, "task": task.id, "subject": extracted.subject}).to_string(),
    };
    let note_id = memory::remember(LEADS, &note)?;
    keel_sdk::log::info(&format!("lead {email}: {} message(s)", lead.messages));
    Outcome::json(&json!({
        "lead_id": email,
        "label": label,
        "new": new,
        "messages": lead.messages,
        "confidence": lead.confidence,
        "subject": extracted.subject,
        "company_tag": company_tag(&lead.company),
        "note_id": note_id,
        "model": model,
        "lead": lead,
    }))
}

agent!(handle);
