//! The `mail` connector: `email.send` over SMTP (plain TCP, `wasi:sockets`).
//! See README.md for settings, secrets and guarantees.

mod smtp;

use keel_sdk::connector::{Action, ActionKind, Connector, receipt};
use keel_sdk::time::UtcDateTime;
use keel_sdk::{Error, config, connector};
use serde::Deserialize;
use serde_json::json;

use smtp::{Envelope, SmtpSession};

/// Longest subject, in bytes: one folded header line stays readable.
const MAX_SUBJECT_BYTES: usize = 998;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendEmail {
    to: Vec<String>,
    subject: String,
    body: String,
    #[serde(default)]
    cc: Vec<String>,
}

struct Mail;

impl Connector for Mail {
    fn describe() -> Vec<ActionKind> {
        let address = json!({"type": "string", "pattern": "^[^<>\\s@,]+@[^<>\\s@,]+$", "maxLength": 254});
        let schema = json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["to", "subject", "body"],
            "properties": {
                "to": {"type": "array", "items": address, "minItems": 1, "maxItems": 100},
                "cc": {"type": "array", "items": address, "maxItems": 100},
                "subject": {"type": "string", "maxLength": MAX_SUBJECT_BYTES},
                "body": {"type": "string"}
            }
        });
        // SMTP has no idempotency: a retry after an unclear outcome could
        // send twice. The key travels as Message-ID for reconciliation.
        vec![ActionKind::new("email.send", &schema, false)]
    }

    fn perform(action: Action, idempotency_key: String) -> Result<String, Error> {
        let mail: SendEmail = action.payload_json()?;
        for address in mail.to.iter().chain(&mail.cc) {
            smtp::check_address(address)?;
        }
        if mail.subject.len() > MAX_SUBJECT_BYTES || mail.subject.contains(['\r', '\n']) {
            return Err(Error::InvalidInput("subject: must be one line of at most 998 bytes".into()));
        }
        let server = config::require_setting("server")?;
        let from = config::require_setting("from")?;
        smtp::check_address(&from)
            .map_err(|_| Error::Unavailable(format!("setting `from` = {from:?} is not an address")))?;
        let helo = config::setting("helo")?.unwrap_or_else(|| "keel.local".into());
        let login = match config::setting("username")? {
            Some(user) => Some((user, config::secret("smtp_password")?)),
            None => None,
        };

        let message_id = smtp::message_id(&idempotency_key, &from);
        let message = smtp::format_message(&smtp::Message {
            from: &from,
            to: &mail.to,
            cc: &mail.cc,
            subject: &mail.subject,
            body: &mail.body,
            message_id: &message_id,
            idempotency_key: &idempotency_key,
            date: UtcDateTime::now(),
        });
        let recipients: Vec<String> = mail.to.iter().chain(&mail.cc).cloned().collect();
        let mut session = SmtpSession::connect(&server, &helo)?;
        if let Some((user, password)) = &login {
            session.auth_plain(user, password)?;
        }
        let accepted = session.send(&Envelope { from: &from, recipients: &recipients }, &message, &message_id)?;
        session.quit();
        receipt(&json!({
            "message_id": message_id,
            "recipients": recipients,
            "server_reply": accepted,
        }))
    }
}

connector!(Mail);
