//! A Stripe-style payments API on loopback: `POST /v1/charges` and
//! `POST /v1/refunds` with form bodies and bearer auth. A repeated
//! `Idempotency-Key` gets the first answer again and creates nothing, as
//! Stripe does; every request is recorded with its time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::http::{HttpPeer, PeerResponse, RecordedRequest};

#[derive(Default)]
struct Ledger {
    /// Idempotency key -> the answer given the first time.
    answers: HashMap<String, PeerResponse>,
    charges: Vec<serde_json::Value>,
    refunds: Vec<serde_json::Value>,
}

pub struct PaymentsPeer {
    pub http: HttpPeer,
    ledger: Arc<Mutex<Ledger>>,
}

impl PaymentsPeer {
    /// Accepts requests bearing `api_key`.
    pub async fn start(api_key: &str) -> PaymentsPeer {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let state = ledger.clone();
        let expected = format!("Bearer {api_key}");
        let http = HttpPeer::start(move |request| {
            if request.header("authorization") != Some(expected.as_str()) {
                let shown = request.header("authorization").unwrap_or_default();
                // Like a real API, the message echoes the key it got.
                let message = format!("Invalid API Key provided: {}", shown.trim_start_matches("Bearer "));
                return PeerResponse::json(
                    401,
                    &json!({"error": {"type": "invalid_request_error", "message": message}}),
                );
            }
            answer(&mut state.lock().unwrap(), request)
        })
        .await;
        PaymentsPeer { http, ledger }
    }

    pub fn base_url(&self) -> String {
        self.http.url("")
    }

    /// Charges created (not requests made).
    pub fn charges(&self) -> Vec<serde_json::Value> {
        self.ledger.lock().unwrap().charges.clone()
    }

    pub fn refunds(&self) -> Vec<serde_json::Value> {
        self.ledger.lock().unwrap().refunds.clone()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.http.requests()
    }
}

fn answer(ledger: &mut Ledger, request: &RecordedRequest) -> PeerResponse {
    let Some(key) = request.header("idempotency-key").map(str::to_owned) else {
        return PeerResponse::json(400, &json!({"error": {"message": "Idempotency-Key is required here"}}));
    };
    if let Some(previous) = ledger.answers.get(&key) {
        return previous.clone();
    }
    let form = parse_form(&request.text());
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    let response = match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/v1/charges") => {
            let Ok(amount) = field("amount").parse::<i64>() else {
                return PeerResponse::json(400, &json!({"error": {"message": "amount must be an integer"}}));
            };
            let charge = json!({
                "id": format!("ch_{}", ledger.charges.len() + 1),
                "object": "charge",
                "amount": amount,
                "currency": field("currency"),
                "customer": field("customer"),
                "description": field("description"),
                "status": "succeeded",
            });
            ledger.charges.push(charge.clone());
            PeerResponse::json(200, &charge)
        }
        ("POST", "/v1/refunds") => {
            let charge_id = field("charge");
            if !ledger.charges.iter().any(|c| c["id"] == charge_id.as_str()) {
                return PeerResponse::json(404, &json!({"error": {"message": format!("No such charge: {charge_id}")}}));
            }
            let refund = json!({
                "id": format!("re_{}", ledger.refunds.len() + 1),
                "object": "refund",
                "charge": charge_id,
                "status": "succeeded",
            });
            ledger.refunds.push(refund.clone());
            PeerResponse::json(200, &refund)
        }
        _ => PeerResponse::json(404, &json!({"error": {"message": "unknown endpoint"}})),
    };
    ledger.answers.insert(key, response.clone());
    response
}

/// `a=1&b=x+y` -> map, with `+` and `%XX` decoded.
fn parse_form(body: &str) -> HashMap<String, String> {
    let decode = |s: &str| {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            if bytes[i] == b'%'
                && let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    body.split('&').filter_map(|pair| pair.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
}
