//! The `calendar` connector: `calendar.create` as a CalDAV PUT of an
//! iCalendar VEVENT, compensated by `calendar.cancel` (DELETE). The event's
//! UID and resource name come from the idempotency key, so a retry finds
//! the event it already created. See README.md.

mod ical;

use keel_sdk::connector::{Action, ActionKind, Connector, receipt};
use keel_sdk::encoding::basic_auth;
use keel_sdk::http::{Request, Response};
use keel_sdk::time::UtcDateTime;
use keel_sdk::{Error, config, connector};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateEvent {
    summary: String,
    start: String,
    end: String,
    #[serde(default)]
    attendees: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

/// What `perform` returns and `compensate` gets back.
#[derive(Deserialize)]
struct CreatedEvent {
    url: String,
}

struct Calendar;

impl Connector for Calendar {
    fn describe() -> Vec<ActionKind> {
        let time = json!({"type": "string", "pattern": "^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}Z$"});
        let schema = json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["summary", "start", "end"],
            "properties": {
                "summary": {"type": "string", "minLength": 1, "maxLength": 500},
                "start": time,
                "end": time,
                "attendees": {"type": "array", "items": {"type": "string", "maxLength": 254}, "maxItems": 100},
                "description": {"type": "string", "maxLength": 10000}
            }
        });
        vec![ActionKind::new("calendar.create", &schema, true).compensated_by("calendar.cancel")]
    }

    fn perform(action: Action, idempotency_key: String) -> Result<String, Error> {
        let event: CreateEvent = action.payload_json()?;
        let start = parse_time("start", &event.start)?;
        let end = parse_time("end", &event.end)?;
        if end <= start {
            return Err(Error::InvalidInput("end: must be after start".into()));
        }
        let url = event_url(&config::require_setting("calendar_url")?, &idempotency_key);
        let ics = ical::vevent(&ical::Event {
            uid: &idempotency_key,
            summary: &event.summary,
            description: event.description.as_deref(),
            start,
            end,
            attendees: &event.attendees,
            stamp: UtcDateTime::now(),
        });
        // If-None-Match: * creates, never overwrites: a retry with the same
        // key gets 412 and the event stays as first created.
        let response = authorized(Request::put(&url))?
            .header("if-none-match", "*")
            .body("text/calendar; charset=utf-8", ics)
            .send()?;
        let already_existed = match response.status {
            201 | 204 | 200 => false,
            412 => true,
            _ => return Err(status_error("creating the event", &response)),
        };
        receipt(&json!({
            "uid": idempotency_key,
            "url": url,
            "etag": response.header("etag"),
            "already_existed": already_existed,
        }))
    }

    fn compensate(receipt_json: String, _idempotency_key: String) -> Result<String, Error> {
        let created: CreatedEvent = serde_json::from_str(&receipt_json)
            .map_err(|e| Error::InvalidInput(format!("receipt is not a calendar.create receipt: {e}")))?;
        let calendar = config::require_setting("calendar_url")?;
        if !created.url.starts_with(calendar.trim_end_matches('/')) {
            return Err(Error::InvalidInput(format!("receipt url {} is not in the configured calendar", created.url)));
        }
        let response = authorized(Request::delete(&created.url))?.send()?;
        let already_gone = match response.status {
            200 | 204 => false,
            404 | 410 => true,
            _ => return Err(status_error("cancelling the event", &response)),
        };
        receipt(&json!({"cancelled": created.url, "already_gone": already_gone}))
    }
}

/// The event's resource: `<calendar_url>/<name>.ics`, the name made from
/// the key one-to-one: letters, digits, `-` and `.` kept, every other byte
/// written `_XX` (servers decode `%2F` into a path separator, so
/// percent-encoding would not do).
fn event_url(calendar_url: &str, key: &str) -> String {
    let mut name = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' => name.push(b as char),
            _ => name.push_str(&format!("_{b:02X}")),
        }
    }
    format!("{}/{name}.ics", calendar_url.trim_end_matches('/'))
}

fn parse_time(field: &str, text: &str) -> Result<UtcDateTime, Error> {
    UtcDateTime::parse_rfc3339(text)
        .ok_or_else(|| Error::InvalidInput(format!("{field}: {text:?} is not a UTC time like 2025-01-02T09:00:00Z")))
}

/// Adds basic auth when the operator set a `username`.
fn authorized(request: Request) -> Result<Request, Error> {
    Ok(match config::setting("username")? {
        Some(user) => request.header("authorization", &basic_auth(&user, &config::secret("caldav_password")?)),
        None => request,
    })
}

fn status_error(what: &str, response: &Response) -> Error {
    let detail = format!("{what}: the CalDAV server answered {}", response.status);
    match response.status {
        401 | 403 => Error::Denied(format!("{detail}; check `username` and the `caldav_password` secret")),
        404 | 409 => Error::InvalidInput(format!("{detail}; check that `calendar_url` names an existing calendar")),
        s if s >= 500 || s == 429 => Error::Unavailable(detail),
        _ => Error::InvalidInput(detail),
    }
}

connector!(Calendar);

#[cfg(test)]
mod tests {
    #[test]
    fn event_names_are_path_safe_and_distinct() {
        let url = super::event_url("http://h/cal/", "run-1/step_2/0");
        assert_eq!(url, "http://h/cal/run-1_2Fstep_5F2_2F0.ics");
        assert_ne!(super::event_url("c", "a/b"), super::event_url("c", "a_2Fb"));
    }
}
