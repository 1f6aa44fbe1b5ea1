//! `executor`: composes the outreach a plan asks for and proposes it. It
//! never sends: every effect is a proposal the kernel decides on.
//!
//! Input: `{"lead": <extractor output>, "plan": <planner output>, "text":
//! "<the message>"}`. For `email.send` it drafts a reply with the `large`
//! tier (offline, the rules provider composes it from the message) and
//! proposes it with the lead's budget as the amount, so a policy can ask
//! the operator above a lead value, and the extraction's confidence, so a
//! confidence floor applies. For `calendar.create` it proposes a 30-minute
//! call at 10:00 UTC on the next weekday. The plan's rationale travels with
//! each proposal.
//!
//! Output: `{"proposed": [{"kind", "result"}]}` where result is `queued
//! KEY`, `executed RECEIPT` or `waiting: approval #N`.

use keel_sdk::actions::{self, Action, Disposition};
use keel_sdk::model::{self, CompletionRequest, Message, Role};
use keel_sdk::time::UtcDateTime;
use keel_sdk::{Error, Outcome, Task, agent};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Input {
    lead: Value,
    plan: Value,
    #[serde(default)]
    text: String,
}

fn compose(text: &str, lead: &Value, plan: &Value) -> Result<String, Error> {
    let returning = lead["messages"].as_u64().unwrap_or(1) > 1 || !plan["history"].as_array().is_none_or(Vec::is_empty);
    let mut system = String::from("Write a short, warm reply to this email from a potential customer.");
    if plan["qualified"] == true {
        system.push_str(" Propose a call to discuss the details.");
    } else {
        system.push_str(" Ask for their budget and timeline.");
    }
    let request = CompletionRequest {
        tier: "large".into(),
        messages: vec![
            Message { role: Role::System, content: system },
            Message { role: Role::User, content: text.to_owned() },
        ],
        max_tokens: 300,
        temperature_milli: 0,
        json_schema: None,
    };
    let body = model::complete(&request)?.text;
    if !returning {
        return Ok(body);
    }
    let company = lead["lead"]["company"].as_str().unwrap_or("your team");
    Ok(format!("{body}\n\nGood to hear from {company} again: we have your earlier notes at hand."))
}

/// 10:00 UTC on the next weekday after today, as the calendar wants it.
fn next_slot(now: &UtcDateTime) -> (String, String) {
    let days_since_epoch = now.unix_seconds().div_euclid(86_400);
    // 1970-01-01 was a Thursday (weekday 3, Monday = 0).
    let mut day = days_since_epoch + 1;
    while (day + 3).rem_euclid(7) >= 5 {
        day += 1;
    }
    let start = UtcDateTime::from_unix(day * 86_400 + 10 * 3600);
    let end = UtcDateTime::from_unix(day * 86_400 + 10 * 3600 + 30 * 60);
    (start.rfc3339(), end.rfc3339())
}

fn propose(action: &Action) -> Result<String, Error> {
    match actions::propose(action) {
        Ok(Disposition::Queued(key)) => Ok(format!("queued {key}")),
        Ok(Disposition::Executed(receipt)) => Ok(format!("executed {receipt}")),
        // Parked for the operator: the run waits on it.
        Err(Error::PendingApproval(id)) => Ok(format!("waiting: {id}")),
        Err(e) => Err(e),
    }
}

fn handle(task: Task) -> Result<Outcome, Error> {
    let input: Input = task.input_json()?;
    let lead = &input.lead["lead"];
    let email = lead["email"].as_str().unwrap_or_default();
    let confidence = input.lead["confidence"]["email"]
        .as_f64()
        .unwrap_or(0.0)
        .min(input.lead["confidence"]["need"].as_f64().unwrap_or(0.0).max(0.5)) as f32;
    let rationale = input.plan["rationale"].as_str().unwrap_or("planned").to_owned();
    let (amount, currency) = match (lead["budget"].as_f64(), lead["currency"].as_str()) {
        (Some(b), Some(c)) => (Some((b * 100.0).round() as i64), Some(c.to_owned())),
        _ => (None, None),
    };
    let mut proposed = Vec::new();
    for planned in input.plan["actions"].as_array().cloned().unwrap_or_default() {
        let kind = planned["kind"].as_str().unwrap_or_default();
        let payload = match kind {
            "email.send" => {
                let subject = input.lead["subject"].as_str().filter(|s| !s.is_empty()).unwrap_or("your message");
                json!({"to": [email], "subject": format!("Re: {subject}"), "body": compose(&input.text, &input.lead, &input.plan)?})
            }
            "calendar.create" => {
                let (start, end) = next_slot(&UtcDateTime::now());
                let who = lead["name"].as_str().unwrap_or(email);
                let company = lead["company"].as_str().unwrap_or_default();
                json!({"summary": format!("Call with {who} ({company})"), "start": start, "end": end,
                       "attendees": [email], "description": lead["need"].as_str().unwrap_or_default()})
            }
            other => {
                keel_sdk::log::warn(&format!("the plan asks for `{other}`, which this agent does not propose"));
                continue;
            }
        };
        let action = Action {
            kind: kind.to_owned(),
            payload: payload.to_string(),
            // Only emails carry the lead's value: the policy asks above it.
            amount: if kind == "email.send" { amount } else { None },
            currency: if kind == "email.send" { currency.clone() } else { None },
            confidence,
            rationale: format!("{rationale} Next: {}.", planned["why"].as_str().unwrap_or(kind)),
        };
        proposed.push(json!({"kind": kind, "result": propose(&action)?}));
    }
    Outcome::json(&json!({"proposed": proposed}))
}

agent!(handle);
