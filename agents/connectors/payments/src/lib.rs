//! The `payments` connector: `payments.charge` against a Stripe-style API
//! (`POST /v1/charges`), compensated by `payments.refund`
//! (`POST /v1/refunds`). Every request carries the idempotency key as
//! `Idempotency-Key`, so the provider performs a retried charge once. See
//! README.md.

use keel_sdk::connector::{Action, ActionKind, Connector, receipt};
use keel_sdk::http::{Request, Response};
use keel_sdk::{Error, config, connector};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Charge {
    /// Minor units (cents).
    amount: i64,
    currency: String,
    customer: String,
    #[serde(default)]
    description: String,
}

/// The provider's answer for a charge or a refund.
#[derive(Deserialize)]
struct Object {
    id: String,
    #[serde(default)]
    status: Option<String>,
}

/// What `perform` returns and `compensate` gets back.
#[derive(Deserialize)]
struct ChargeReceipt {
    charge_id: String,
}

struct Payments;

impl Connector for Payments {
    fn describe() -> Vec<ActionKind> {
        let schema = json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["amount", "currency", "customer"],
            "properties": {
                "amount": {"type": "integer", "minimum": 1},
                "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
                "customer": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": {"type": "string", "maxLength": 1000}
            }
        });
        vec![ActionKind::new("payments.charge", &schema, true).compensated_by("payments.refund")]
    }

    fn perform(action: Action, idempotency_key: String) -> Result<String, Error> {
        let charge: Charge = action.payload_json()?;
        // The policy gate judged the proposal's amount: charge exactly that.
        let same_amount = action.amount == Some(charge.amount)
            && action.currency.as_deref().is_some_and(|c| c.eq_ignore_ascii_case(&charge.currency));
        if !same_amount {
            return Err(Error::InvalidInput(format!(
                "payload amount {} {} differs from the proposal's amount {:?} {:?}, which the policy checked",
                charge.amount, charge.currency, action.amount, action.currency
            )));
        }
        let amount = charge.amount.to_string();
        let currency = charge.currency.to_ascii_lowercase();
        let response = api_post(
            "/v1/charges",
            &idempotency_key,
            &[
                ("amount", &amount),
                ("currency", &currency),
                ("customer", &charge.customer),
                ("description", &charge.description),
            ],
        )?;
        let object: Object = response.json()?;
        receipt(&json!({
            "charge_id": object.id,
            "amount": charge.amount,
            "currency": currency,
            "status": object.status,
        }))
    }

    fn compensate(receipt_json: String, idempotency_key: String) -> Result<String, Error> {
        let charge: ChargeReceipt = serde_json::from_str(&receipt_json)
            .map_err(|e| Error::InvalidInput(format!("receipt is not a payments.charge receipt: {e}")))?;
        let response = api_post("/v1/refunds", &idempotency_key, &[("charge", &charge.charge_id)])?;
        let refund: Object = response.json()?;
        receipt(&json!({"refund_id": refund.id, "charge_id": charge.charge_id, "status": refund.status}))
    }
}

/// POSTs a form to the API with the key as `Idempotency-Key`.
fn api_post(path: &str, idempotency_key: &str, fields: &[(&str, &str)]) -> Result<Response, Error> {
    let base = config::require_setting("base_url")?;
    let key = config::secret("stripe_key")?;
    let response = Request::post(&format!("{}{path}", base.trim_end_matches('/')))
        .header("authorization", &format!("Bearer {key}"))
        .header("idempotency-key", idempotency_key)
        .form(fields)
        .send()?;
    if response.is_success() {
        return Ok(response);
    }
    let message = response
        .json::<serde_json::Value>()
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let detail = format!("POST {path} answered {}: {message}", response.status);
    Err(match response.status {
        401 | 403 => Error::Denied(format!("{detail}; check the `stripe_key` secret")),
        429 | 500.. => Error::Unavailable(detail),
        _ => Error::InvalidInput(detail),
    })
}

connector!(Payments);
