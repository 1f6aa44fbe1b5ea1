//! `planner`: scores and qualifies a lead, and plans the next actions with
//! a rationale a person can check.
//!
//! Input: `{"lead": <the extractor's output>}`.
//! The rules come from the workspace (`[agents.planner]` in keel.toml):
//! `min_budget` (5000), `high_value` (20000), `qualify_score` (50). Memory
//! adds what happened before: notes in `leads` about the same company
//! (earlier messages, recalled by the company's tag) and similar requests
//! from others, and the operator's own notes in `offer` (what they sell),
//! which the need is compared with. The extractor's label (lead, support)
//! counts too.
//!
//! Output: `{"qualified", "score", "label", "high_value", "actions":
//! [{"kind", "why"}], "rationale", "history": [...], "similar": [...]}`.

use keel_sdk::memory::{self, Hit, RecallRequest};
use keel_sdk::{Error, Outcome, Task, agent};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Input {
    lead: Value,
}

/// The workspace's rules, with defaults.
struct Rules {
    min_budget: f64,
    high_value: f64,
    qualify_score: i64,
}

fn number_setting(key: &str, default: f64) -> Result<f64, Error> {
    match keel_sdk::config::setting(key)? {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| Error::InvalidInput(format!("[agents.planner] {key} = {text:?} is not a number"))),
    }
}

impl Rules {
    fn load() -> Result<Rules, Error> {
        Ok(Rules {
            min_budget: number_setting("min_budget", 5000.0)?,
            high_value: number_setting("high_value", 20000.0)?,
            qualify_score: number_setting("qualify_score", 50.0)? as i64,
        })
    }
}

fn recall(namespace: &str, query: &str, k: u32, tags: Vec<String>) -> Result<Vec<Hit>, Error> {
    memory::recall(&RecallRequest { namespace: namespace.into(), query: query.into(), k, tags })
}

/// Words of four letters or more, lower case.
fn words(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() >= 4).map(str::to_lowercase).collect()
}

fn day(ms: u64) -> String {
    let t = keel_sdk::time::UtcDateTime::from_unix((ms / 1000) as i64);
    format!("{:04}-{:02}-{:02}", t.year, t.month, t.day)
}

fn handle(task: Task) -> Result<Outcome, Error> {
    let input: Input = task.input_json()?;
    if let Some(why) = input.lead.get("skipped") {
        return Outcome::json(&json!({"qualified": false, "score": 0, "actions": [], "rationale": why}));
    }
    let rules = Rules::load()?;
    let lead = &input.lead["lead"];
    let text_of = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let (need, company, name) = (text_of(&lead["need"]), text_of(&lead["company"]), text_of(&lead["name"]));
    let budget = lead["budget"].as_f64();
    let currency = lead["currency"].as_str().unwrap_or("");
    let this_note = text_of(&input.lead["note_id"]);
    let company_tag = text_of(&input.lead["company_tag"]);

    let label = text_of(&input.lead["label"]);
    // Earlier messages of the same company, and similar requests of others.
    let history: Vec<Hit> =
        recall("leads", &need, 5, vec![company_tag.clone()])?.into_iter().filter(|h| h.id != this_note).collect();
    let similar: Vec<Hit> = recall("leads", &need, 4, Vec::new())?
        .into_iter()
        .filter(|h| h.id != this_note && !h.tags.contains(&company_tag))
        .take(2)
        .collect();
    let offer = recall("offer", &need, 1, Vec::new())?;

    let mut score = 0i64;
    let mut reasons = Vec::new();
    match label.as_str() {
        "lead" => {
            score += 20;
            reasons.push("reads as a sales inquiry (+20)".to_owned());
        }
        other => reasons.push(format!("reads as {other}, not a sales inquiry")),
    }
    let high_value = budget.is_some_and(|b| b >= rules.high_value);
    match budget {
        Some(b) if b >= rules.high_value => {
            score += 60;
            reasons.push(format!("budget {b} {currency} is at least the high value of {} (+60)", rules.high_value));
        }
        Some(b) if b >= rules.min_budget => {
            score += 40;
            reasons.push(format!("budget {b} {currency} is at least the minimum of {} (+40)", rules.min_budget));
        }
        Some(b) => reasons.push(format!("budget {b} {currency} is below the minimum of {}", rules.min_budget)),
        None => reasons.push("no budget stated".to_owned()),
    }
    if let Some(o) = offer.first() {
        let shared: Vec<String> = words(&need).intersection(&words(&o.text)).cloned().collect();
        if !shared.is_empty() {
            score += 20;
            reasons.push(format!("the need matches the offer ({}) (+20)", shared.join(", ")));
        }
    }
    if !history.is_empty() {
        score += 10;
        let earliest = history.iter().min_by_key(|h| h.created_at_ms).expect("not empty");
        reasons.push(format!(
            "{company} wrote {} time(s) before, first on {}: \"{}\" (+10)",
            history.len(),
            day(earliest.created_at_ms),
            earliest.text
        ));
    }
    let confidence = input.lead["confidence"]["need"].as_f64().unwrap_or(0.0);
    if confidence < 0.5 {
        score -= 20;
        reasons.push(format!("the extraction is unsure ({confidence:.2}) (-20)"));
    }
    let qualified = label == "lead" && score >= rules.qualify_score;

    let mut actions = Vec::new();
    if label != "spam" {
        let why = if qualified { "reply and propose next steps" } else { "reply and ask for what is missing" };
        actions.push(json!({"kind": "email.send", "why": why}));
    }
    if qualified && high_value {
        actions.push(json!({"kind": "calendar.create", "why": "a high-value lead: offer a call"}));
    }
    let verdict = if qualified { "qualified" } else { "not qualified" };
    let rationale =
        format!("{name} ({company}): {verdict}, score {score}/{}; {}.", rules.qualify_score, reasons.join("; "));
    keel_sdk::log::info(&rationale);
    let hits = |hits: &[Hit]| -> Vec<Value> {
        hits.iter().map(|h| json!({"text": h.text, "on": day(h.created_at_ms), "score": h.score})).collect()
    };
    Outcome::json(&json!({
        "qualified": qualified,
        "score": score,
        "label": label,
        "high_value": high_value,
        "actions": actions,
        "rationale": rationale,
        "history": hits(&history),
        "similar": hits(&similar),
    }))
}

agent!(handle);
