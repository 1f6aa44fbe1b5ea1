//! The reference connectors end to end through `ConnectorHost`, against
//! real servers on loopback: aiosmtpd, Radicale, and HTTP servers in
//! `peers/`. Also the egress rules (SSRF through names, redirects and
//! ungranted ports) and the secret canary.

mod common;
mod peers;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use keel_host::connectors::{ConnectorCall, ConnectorError, ConnectorHost, ProposedAction};
use keel_host::runtime::Limits;
use keel_host::runtime::engine::build_engine;
use serde_json::{Value, json};
use wasmtime::component::Component;

use peers::caldav::CaldavPeer;
use peers::http::{HttpPeer, PeerResponse};
use peers::payments::PaymentsPeer;
use peers::smtp::SmtpPeer;

const CONNECTORS: [&str; 4] = ["mail", "calendar", "payments", "webhook"];

/// One host and the compiled connectors, shared by every test.
struct Fixture {
    host: ConnectorHost,
    components: BTreeMap<&'static str, Component>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        capture_tracing();
        let limits = Limits::default();
        let engine = build_engine(&limits).expect("engine");
        // host/build.rs builds agents/ (connectors included) into this dir.
        let release = std::path::Path::new(common::guests::GUESTS_DIR).join("../wasm32-wasip2/release");
        let components = CONNECTORS
            .into_iter()
            .map(|name| {
                let path = release.join(format!("{name}.wasm"));
                let component = Component::from_file(&engine, &path)
                    .unwrap_or_else(|e| panic!("compiling {}: {e:#}", path.display()));
                (name, component)
            })
            .collect();
        Fixture { host: ConnectorHost::new(&engine, &limits).expect("connector host"), components }
    })
}

/// Everything every test logs, at trace level, for the secret canary.
fn trace_output() -> &'static Arc<Mutex<Vec<u8>>> {
    static OUTPUT: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    OUTPUT.get_or_init(Default::default)
}

#[derive(Clone)]
struct TraceBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for TraceBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_tracing() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let buffer = TraceBuffer(trace_output().clone());
    // Everything at trace, except the compiler's own chatter.
    let filter = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("cranelift", LevelFilter::OFF)
        .with_target("cranelift_codegen", LevelFilter::OFF)
        .with_target("cranelift_frontend", LevelFilter::OFF)
        .with_target("regalloc2", LevelFilter::OFF)
        .with_target("wasmtime_cranelift", LevelFilter::OFF)
        .with_target("wasmtime_environ", LevelFilter::OFF);
    let layer = tracing_subscriber::fmt::layer().with_ansi(false).with_writer(move || buffer.clone());
    let _ = tracing_subscriber::registry().with(layer).with(filter).try_init();
}

/// What a test passes for one call.
struct Call {
    name: &'static str,
    outbound: Vec<String>,
    settings: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
}

impl Call {
    fn new(name: &'static str, outbound: &[&str]) -> Call {
        Call {
            name,
            outbound: outbound.iter().map(|s| (*s).to_owned()).collect(),
            settings: BTreeMap::new(),
            secrets: BTreeMap::new(),
        }
    }

    fn setting(mut self, key: &str, value: &str) -> Call {
        self.settings.insert(key.into(), value.into());
        self
    }

    fn secret(mut self, name: &str, value: &str) -> Call {
        self.secrets.insert(name.into(), value.into());
        self
    }

    fn as_call(&self) -> ConnectorCall<'_> {
        ConnectorCall {
            name: self.name,
            component: &fixture().components[self.name],
            outbound: &self.outbound,
            settings: &self.settings,
            secrets: &self.secrets,
        }
    }

    async fn perform(&self, action: &ProposedAction, key: &str) -> Result<Value, ConnectorError> {
        let receipt = fixture().host.perform(&self.as_call(), action, key).await?;
        Ok(serde_json::from_str(&receipt).expect("receipts are JSON"))
    }

    async fn compensate(&self, receipt: &Value, key: &str) -> Result<Value, ConnectorError> {
        let receipt = fixture().host.compensate(&self.as_call(), &receipt.to_string(), key).await?;
        Ok(serde_json::from_str(&receipt).expect("receipts are JSON"))
    }
}

fn action(kind: &str, payload: Value) -> ProposedAction {
    ProposedAction {
        kind: kind.into(),
        payload,
        amount: None,
        currency: None,
        confidence: 0.9,
        rationale: "test".into(),
    }
}

fn refused(result: Result<Value, ConnectorError>) -> String {
    match result {
        Err(e @ ConnectorError::EgressRefused { .. }) => e.to_string(),
        other => panic!("expected an egress refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_lists_each_connectors_kinds() {
    let mut served = BTreeMap::new();
    for name in CONNECTORS {
        fixture().host.check_imports(name, &fixture().components[name]).expect("links as a connector");
        let call = Call::new(name, &[]);
        for spec in fixture().host.describe(&call.as_call()).await.expect("describe") {
            assert_eq!(spec.payload_schema["type"], "object", "{} schema", spec.kind);
            served.insert(spec.kind.clone(), (spec.idempotent, spec.compensation.clone()));
        }
    }
    assert_eq!(served["email.send"], (false, None));
    assert_eq!(served["calendar.create"], (true, Some("calendar.cancel".into())));
    assert_eq!(served["payments.charge"], (true, Some("payments.refund".into())));
    assert_eq!(served["webhook.post"], (false, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_is_delivered_over_smtp_with_auth() {
    let smtp = SmtpPeer::start(Some("keel:smtp-pass-1"));
    let server = format!("127.0.0.1:{}", smtp.port);
    let call = Call::new("mail", &[&server])
        .setting("server", &server)
        .setting("from", "ops@acme.test")
        .setting("username", "keel")
        .secret("smtp_password", "smtp-pass-1");
    let body = "Hello Ada,\n.this line starts with a dot\n\nBye";
    let payload =
        json!({"to": ["ada@example.test"], "cc": ["bob@example.test"], "subject": "Invoice 42", "body": body});
    let receipt = call.perform(&action("email.send", payload), "run-7/step-1/0").await.expect("mail sent");

    let mails = smtp.wait_for(1);
    assert_eq!(mails.len(), 1, "one message delivered");
    let mail = &mails[0];
    assert_eq!(mail.mail_from, "ops@acme.test");
    assert_eq!(mail.rcpt_tos, ["ada@example.test", "bob@example.test"]);
    assert_eq!(mail.login.as_deref(), Some("keel"));
    assert_eq!(mail.header("subject").as_deref(), Some("Invoice 42"));
    assert_eq!(mail.header("to").as_deref(), Some("ada@example.test"));
    assert_eq!(mail.header("cc").as_deref(), Some("bob@example.test"));
    assert_eq!(mail.header("x-keel-idempotency-key").as_deref(), Some("run-7/step-1/0"));
    let message_id = mail.header("message-id").unwrap();
    assert_eq!(message_id, "<keel.run-7.step-1.0@acme.test>");
    assert_eq!(receipt["message_id"], message_id.as_str());
    assert!(receipt["server_reply"].as_str().unwrap().starts_with("250"), "{receipt}");
    // Dot-stuffing survived the round trip: the server undid it.
    assert_eq!(mail.body().replace("\r\n", "\n").trim_end(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_refuses_bad_recipients_before_connecting() {
    let call = Call::new("mail", &["127.0.0.1:9"]).setting("server", "127.0.0.1:9").setting("from", "ops@acme.test");
    let payload = json!({"to": ["x@y>\r\nRCPT TO:<evil@z"], "subject": "s", "body": "b"});
    let err = call.perform(&action("email.send", payload), "k").await.unwrap_err();
    assert!(matches!(err, ConnectorError::Failed { retry_safe: false, .. }), "{err}");
    assert!(err.to_string().contains("not a plain email address"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_event_is_created_once_and_cancelled() {
    let caldav = tokio::task::spawn_blocking(CaldavPeer::start).await.unwrap();
    let grant = caldav.addr.to_string();
    let call = Call::new("calendar", &[&grant])
        .setting("calendar_url", &caldav.calendar_url)
        .setting("username", peers::caldav::USER)
        .secret("caldav_password", "caldav-pass-1");
    let payload = json!({
        "summary": "Call with Acme; budget, scope",
        "start": "2030-03-01T09:00:00Z",
        "end": "2030-03-01T09:30:00Z",
        "attendees": ["ada@example.test"]
    });
    let key = "run-3/step-2/0";
    let first = call.perform(&action("calendar.create", payload.clone()), key).await.expect("event created");
    assert_eq!(first["already_existed"], false);
    let url = first["url"].as_str().unwrap().to_owned();
    let (status, ics) = caldav.get(&url);
    assert_eq!(status, 200, "GET {url}: {ics}");
    assert!(ics.contains("UID:run-3/step-2/0"), "{ics}");
    assert!(ics.contains("SUMMARY:Call with Acme\\; budget\\, scope"), "{ics}");
    assert!(ics.contains("DTSTART:20300301T090000Z") && ics.contains("mailto:ada@example.test"), "{ics}");

    // A retry with the same key finds the event and changes nothing.
    let again = call.perform(&action("calendar.create", payload), key).await.expect("retry is idempotent");
    assert_eq!(again["already_existed"], true);
    assert_eq!(again["url"], url.as_str());

    let cancelled = call.compensate(&first, &format!("{key}/undo")).await.expect("event cancelled");
    assert_eq!(cancelled["cancelled"], url.as_str());
    assert_eq!(caldav.get(&url).0, 404, "the event is gone");
    let twice = call.compensate(&first, &format!("{key}/undo")).await.expect("cancelling twice is fine");
    assert_eq!(twice["already_gone"], true);
}

fn charge(amount: i64) -> ProposedAction {
    ProposedAction {
        amount: Some(amount),
        currency: Some("EUR".into()),
        ..action(
            "payments.charge",
            json!({"amount": amount, "currency": "EUR", "customer": "cus_acme", "description": "Invoice 42"}),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_charge_happens_once_per_key_and_refunds() {
    let api = PaymentsPeer::start("sk_test_key_1").await;
    let call = Call::new("payments", &[&api.http.addr.to_string()])
        .setting("base_url", &api.base_url())
        .secret("stripe_key", "sk_test_key_1");
    let first = call.perform(&charge(1200), "run-1/step-4/0").await.expect("charged");
    let second = call.perform(&charge(1200), "run-1/step-4/0").await.expect("retried");
    assert_eq!(first, second, "the same key returns the same receipt");
    assert_eq!(first["charge_id"], "ch_1");
    assert_eq!(first["amount"], 1200);
    assert_eq!(api.charges().len(), 1, "one charge for two requests");
    let requests = api.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[0].at <= requests[1].at);
    for r in &requests {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/charges"));
        assert_eq!(r.header("idempotency-key"), Some("run-1/step-4/0"));
        assert_eq!(r.header("content-type"), Some("application/x-www-form-urlencoded"));
        assert!(r.text().contains("amount=1200") && r.text().contains("currency=eur"), "{}", r.text());
    }

    let refund = call.compensate(&first, "run-1/step-4/0/undo").await.expect("refunded");
    assert_eq!(refund["refund_id"], "re_1");
    assert_eq!(refund["charge_id"], "ch_1");
    assert_eq!(api.refunds()[0]["charge"], "ch_1");

    // The payload may not charge more than the proposal the policy judged.
    let mut sneaky = charge(1200);
    sneaky.payload["amount"] = json!(999_999);
    let err = call.perform(&sneaky, "run-1/step-5/0").await.unwrap_err();
    assert!(err.to_string().contains("differs from the proposal's amount"), "{err}");
    assert_eq!(api.requests().len(), 3, "nothing sent for the refused charge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_post_is_recorded() {
    let hook = HttpPeer::start(|_| PeerResponse::json(200, &json!({"ok": true}))).await;
    let call = Call::new("webhook", &[&hook.addr.to_string()]).setting("url", &hook.url("/hooks/keel"));
    let body = json!({"event": "invoice.paid", "id": 42});
    let receipt = call.perform(&action("webhook.post", json!({"body": body})), "run-9/step-1/0").await.expect("posted");
    assert_eq!(receipt["status"], 200);
    let requests = hook.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/hooks/keel");
    assert_eq!(requests[0].header("idempotency-key"), Some("run-9/step-1/0"));
    assert_eq!(requests[0].header("content-type"), Some("application/json"));
    assert_eq!(serde_json::from_slice::<Value>(&requests[0].body).unwrap(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_name_resolving_to_loopback_is_refused() {
    let hook = HttpPeer::start(|_| PeerResponse::json(200, &json!({}))).await;
    let port = hook.addr.port();
    let grant = format!("localhost:{port}");
    let call = Call::new("webhook", &[&grant]).setting("url", &format!("http://localhost:{port}/hook"));
    let message = refused(call.perform(&action("webhook.post", json!({"body": {}})), "k").await);
    assert!(message.contains(&format!("`localhost:{port}`")) && message.contains("loopback"), "{message}");
    assert!(message.contains(&format!("grant the IP literal \"127.0.0.1:{port}\"")), "{message}");
    assert!(hook.requests().is_empty(), "nothing reached the server");

    // The same over SMTP: the guest's lookup of the name is refused.
    let smtp = SmtpPeer::start(None);
    let server = format!("localhost:{}", smtp.port);
    let call = Call::new("mail", &[&server]).setting("server", &server).setting("from", "ops@acme.test");
    let payload = json!({"to": ["ada@example.test"], "subject": "s", "body": "b"});
    let message = refused(call.perform(&action("email.send", payload), "k").await);
    assert!(message.contains("loopback") && message.contains("IP literal"), "{message}");
    assert!(smtp.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_internal_addresses_are_refused() {
    let inner = HttpPeer::start(|_| PeerResponse::json(200, &json!({"reached": true}))).await;
    let inner_port = inner.addr.port();
    let target = format!("http://localhost:{inner_port}/internal");
    let redirector = HttpPeer::start(move |r| match r.path.as_str() {
        "/to-private" => PeerResponse::redirect(307, "http://10.0.0.1/hook"),
        _ => PeerResponse::redirect(307, &target),
    })
    .await;
    // The loopback peer is granted by IP literal (allowed); the follow-up
    // hosts are a private IP (never granted) and a name resolving to
    // loopback (granted by name, so refused).
    let grants = [redirector.addr.to_string(), format!("localhost:{inner_port}")];
    let grants: Vec<&str> = grants.iter().map(String::as_str).collect();

    let call = Call::new("webhook", &grants).setting("url", &redirector.url("/to-private"));
    let message = refused(call.perform(&action("webhook.post", json!({"body": {}})), "k1").await);
    assert!(message.contains("`10.0.0.1:80` is not granted"), "{message}");

    let call = Call::new("webhook", &grants).setting("url", &redirector.url("/to-localhost"));
    let message = refused(call.perform(&action("webhook.post", json!({"body": {}})), "k2").await);
    assert!(message.contains(&format!("`localhost:{inner_port}` resolves to 127.0.0.1")), "{message}");
    assert_eq!(redirector.requests().len(), 2, "each first hop was allowed");
    assert!(inner.requests().is_empty(), "no redirect reached the internal server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungranted_ports_are_refused() {
    let smtp = SmtpPeer::start(None);
    let server = format!("127.0.0.1:{}", smtp.port);
    let other = format!("127.0.0.1:{}", smtp.port.wrapping_add(1).max(1));
    let call = Call::new("mail", &[&other]).setting("server", &server).setting("from", "ops@acme.test");
    let payload = json!({"to": ["ada@example.test"], "subject": "s", "body": "b"});
    let message = refused(call.perform(&action("email.send", payload), "k").await);
    assert!(message.contains(&format!("`{server}` is not granted (granted: {other})")), "{message}");
    assert!(smtp.received().is_empty());

    let hook = HttpPeer::start(|_| PeerResponse::json(200, &json!({}))).await;
    let call = Call::new("webhook", &[&other]).setting("url", &hook.url("/hook"));
    let message = refused(call.perform(&action("webhook.post", json!({"body": {}})), "k").await);
    assert!(message.contains(&format!("`{}` is not granted", hook.addr)), "{message}");
    assert!(hook.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_never_reach_logs_or_errors() {
    const CANARY: &str = "sk_canary_5f1d2c77e0b9";
    fixture();
    // Used for real: a bearer token the server checks...
    let api = PaymentsPeer::start(CANARY).await;
    let call = Call::new("payments", &[&api.http.addr.to_string()])
        .setting("base_url", &api.base_url())
        .secret("stripe_key", CANARY);
    call.perform(&charge(500), "canary/1").await.expect("charged with the canary key");
    assert_eq!(api.requests()[0].header("authorization"), Some(format!("Bearer {CANARY}").as_str()));

    // ...and echoed back by a server that rejects it, into the error value.
    let strict = PaymentsPeer::start("sk_other").await;
    let call = Call::new("payments", &[&strict.http.addr.to_string()])
        .setting("base_url", &strict.base_url())
        .secret("stripe_key", CANARY);
    let err = call.perform(&charge(500), "canary/2").await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("Invalid API Key provided: [redacted]"), "{message}");
    assert!(!format!("{message} {err:?}").contains(CANARY), "the error shows the secret: {message}");

    // SMTP AUTH with the canary as password.
    let smtp = SmtpPeer::start(Some(&format!("keel:{CANARY}")));
    let server = format!("127.0.0.1:{}", smtp.port);
    let call = Call::new("mail", &[&server])
        .setting("server", &server)
        .setting("from", "ops@acme.test")
        .setting("username", "keel")
        .secret("smtp_password", CANARY);
    let payload = json!({"to": ["ada@example.test"], "subject": "s", "body": "b"});
    call.perform(&action("email.send", payload), "canary/3").await.expect("mail sent with the canary password");
    assert_eq!(call.as_call().secrets.len(), 1);
    assert!(!format!("{:?}", call.as_call()).contains(CANARY));

    let output = String::from_utf8_lossy(&trace_output().lock().unwrap()).into_owned();
    assert!(output.contains("keel.connector.perform"), "trace output was captured");
    assert!(!output.contains(CANARY), "a secret reached the trace output");
}
