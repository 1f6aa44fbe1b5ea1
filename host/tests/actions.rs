//! Proposals executed end to end: an agent (`proposer`) proposes, the gate
//! decides, the outbox hands the intent to a real connector (`mail`,
//! `payments`), which reaches a real peer on loopback (aiosmtpd, the
//! payments server of `peers/`). Approvals, rejections, the kill switch
//! and recovery of interrupted attempts, seen from the peers.

mod common;
mod peers;

use std::sync::Arc;

use keel_host::kernel::outbox::{self, IntentState};
use keel_host::memory::committer::Batch;
use keel_host::runtime::Runtime;
use keel_host::workspace::Workspace;
use serde_json::{Value, json};

use peers::payments::PaymentsPeer;
use peers::smtp::SmtpPeer;

const API_KEY: &str = "sk_test_e2e_7d1c";

struct Host {
    _dir: tempfile::TempDir,
    ws: Workspace,
    rt: Runtime,
    smtp: SmtpPeer,
    payments: PaymentsPeer,
}

async fn host() -> Host {
    let policy =
        "[limits]\ncall_timeout_ms = 10000\n\n[policy.approval]\nabove_by_kind = { \"payments.charge\" = 500 }\n";
    let c = peers::connected_workspace(policy, API_KEY, |_| {}).await;
    Host { _dir: c.dir, ws: c.ws, rt: c.rt, smtp: c.smtp, payments: c.payments }
}

async fn propose(rt: &Runtime, proposals: Value) -> Vec<Value> {
    let out = rt.call("proposer", json!({ "proposals": proposals }).to_string()).await.expect("the call runs");
    serde_json::from_str(&out.output).unwrap()
}

fn charge(amount: i64) -> Value {
    json!({"kind": "payments.charge", "amount": amount, "currency": "EUR",
        "payload": {"amount": amount, "currency": "EUR", "customer": "cus_acme"}})
}

fn email() -> Value {
    json!({"kind": "email.send", "payload": {"to": ["ada@example.com"], "subject": "Your quote", "body": "Hi Ada"}})
}

fn approval_number(result: &Value) -> u64 {
    let detail = result["detail"].as_str().unwrap_or_else(|| panic!("not parked: {result}"));
    detail.strip_prefix("approval #").and_then(|r| r.split(':').next()).and_then(|n| n.parse().ok()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_proposals_reach_the_real_peers_once() {
    let h = host().await;
    let r = propose(&h.rt, json!([email(), charge(400)])).await;
    let (mail_key, charge_key) = (r[0]["queued"].as_str().unwrap(), r[1]["queued"].as_str().unwrap());

    let done = h.rt.execute_ready().await.unwrap();
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(done.iter().all(|e| e.state == IntentState::Executed), "{done:?}");
    let mails = h.smtp.received();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].header("Subject").as_deref(), Some("Your quote"));
    let charges = h.payments.charges();
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0]["amount"], 400);
    let receipt = h.ws.store().intent(charge_key).unwrap().unwrap().receipt.unwrap();
    assert!(receipt.contains(charges[0]["id"].as_str().unwrap()), "{receipt}");
    assert_eq!(h.ws.store().intent(mail_key).unwrap().unwrap().state, IntentState::Executed);

    assert!(h.rt.execute_ready().await.unwrap().is_empty(), "nothing runs twice");
    assert_eq!((h.smtp.received().len(), h.payments.charges().len()), (1, 1));
    let audit = h.ws.store().audit_tail(20).unwrap();
    assert_eq!(audit.iter().filter(|e| e.operation == "actions.execute").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_charge_happens_once_after_approval_and_never_after_rejection() {
    let h = host().await;
    let r = propose(&h.rt, json!([charge(10_000), charge(20_000)])).await;
    let (approve, reject) = (approval_number(&r[0]), approval_number(&r[1]));
    assert!(h.rt.execute_ready().await.unwrap().is_empty(), "nothing runs before the operator decides");
    assert!(h.payments.charges().is_empty());

    h.rt.kernel().approve(approve, "operator", None).unwrap();
    h.rt.kernel().reject(reject, "operator", "duplicate").unwrap();
    let done = h.rt.execute_ready().await.unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    h.rt.execute_ready().await.unwrap();
    let charges = h.payments.charges();
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(charges[0]["amount"], 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_action_starts_while_the_kill_switch_is_on() {
    let h = host().await;
    let r = propose(&h.rt, json!([charge(100), email()])).await;
    assert!(r.iter().all(|v| v.get("queued").is_some()), "{r:?}");
    h.ws.store().set_kill_switch(true, "operator", None).unwrap();
    assert!(h.rt.execute_ready().await.unwrap().is_empty());
    assert!(h.payments.charges().is_empty() && h.smtp.received().is_empty());

    h.ws.store().set_kill_switch(false, "operator", None).unwrap();
    assert_eq!(h.rt.execute_ready().await.unwrap().len(), 2);
    assert_eq!((h.payments.charges().len(), h.smtp.received().len()), (1, 1));
}

/// What a crash between "attempt started" and "receipt committed" leaves:
/// both intents `sending`, the charge already seen by the server. A new
/// process retries the idempotent charge with the same key (the server
/// answers with the first charge) and leaves the email for the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_attempts_are_retried_only_when_idempotent() {
    let h = host().await;
    let r = propose(&h.rt, json!([charge(300), email()])).await;
    let (charge_key, mail_key) =
        (r[0]["queued"].as_str().unwrap().to_owned(), r[1]["queued"].as_str().unwrap().to_owned());
    // The first attempt reached the payments server, then the host died.
    let first = peers::http::request(
        h.payments.http.addr,
        "POST",
        "/v1/charges",
        &[("authorization", &format!("Bearer {API_KEY}")), ("idempotency-key", &charge_key)],
        b"amount=300&currency=eur&customer=cus_acme",
    );
    assert_eq!(first.0, 200, "{first:?}");
    for key in [&charge_key, &mail_key] {
        let mut intent = h.ws.store().intent(key).unwrap().unwrap();
        intent.state = IntentState::Sending;
        intent.attempts = 1;
        h.ws.store().commit_blocking(Batch { mutations: vec![outbox::put(intent)], audit: vec![] }).unwrap();
    }
    let rt = Arc::new(h.ws.runtime().unwrap());
    let done = rt.execute_ready().await.unwrap();
    assert_eq!(done.len(), 1, "only the charge runs again: {done:?}");
    assert_eq!(h.payments.charges().len(), 1, "one charge for one key");
    assert_eq!(h.ws.store().intent(&charge_key).unwrap().unwrap().state, IntentState::Executed);
    let mail = h.ws.store().intent(&mail_key).unwrap().unwrap();
    assert_eq!(mail.state, IntentState::NeedsReconcile);
    assert!(h.smtp.received().is_empty(), "never re-sent silently");
    let recovered =
        h.ws.store().audit_tail(20).unwrap().into_iter().filter(|e| e.operation == "actions.recover").count();
    assert_eq!(recovered, 2);
}

/// The executor keeps running while the operator engages the kill switch:
/// after the switch's commit at most the one attempt already in flight
/// reaches the server (the executor runs intents one at a time), and no
/// intent starts afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_stops_a_busy_executor() {
    let h = host().await;
    let proposals: Vec<Value> = (0..30).map(|_| charge(50)).collect();
    propose(&h.rt, json!(proposals)).await;
    let rt = Arc::new(h.rt);
    let executor = {
        let rt = rt.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                if rt.execute_ready().await.unwrap().is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
        })
    };
    while h.payments.charges().len() < 3 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let store = h.ws.store().clone();
    tokio::task::spawn_blocking(move || store.set_kill_switch(true, "operator", Some("load test".into())))
        .await
        .unwrap()
        .unwrap();
    let switched = std::time::SystemTime::now();
    executor.await.unwrap();

    let after: Vec<_> = h.payments.requests().into_iter().filter(|r| r.at > switched).collect();
    assert!(after.len() <= 1, "requests after the switch: {after:?}");
    let executed = h.ws.store().intents_in(IntentState::Executed, 100).unwrap().len();
    assert_eq!(h.payments.charges().len(), executed, "every request that reached the server is recorded");
    let waiting = h.ws.store().intents_in(IntentState::Ready, 100).unwrap();
    assert_eq!(waiting.len() + executed, 30);
    assert!(waiting.iter().all(|i| i.attempts == 0), "no attempt started after the switch");
    assert!(!waiting.is_empty(), "the switch landed before the work was done");
}

/// The payments key, used for real, never shows in a trace-level log, the
/// audit log or any CLI output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_never_leaks() {
    let h = host().await;
    let root = h.ws.root().to_owned();
    drop(h.rt);
    drop(h.ws);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("--workspace")
            .arg(&root)
            .args(args)
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let input = json!({"proposals": [charge(200)]}).to_string();
    let mut everything = run(&["call", "proposer", "--input", &input]);
    assert!(everything.contains("executed"), "the charge ran: {everything}");
    for args in [
        &["audit", "export", "--jsonl"][..],
        &["outbox", "--json"],
        &["status", "--json"],
        &["approvals", "list", "--all"],
        &["inspect", "payments"],
    ] {
        everything.push_str(&run(args));
    }
    assert_eq!(h.payments.charges().len(), 1);
    assert!(everything.len() > 1000, "the outputs were captured");
    assert!(!everything.contains(API_KEY), "the secret leaked");
}

/// A payments API that is down for its first answer, then charges.
async fn flaky_payments() -> peers::http::HttpPeer {
    let answered = std::sync::atomic::AtomicUsize::new(0);
    peers::http::HttpPeer::start(move |_| {
        if answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            return peers::http::PeerResponse::json(503, &json!({"error": {"message": "down for maintenance"}}));
        }
        peers::http::PeerResponse::json(
            200,
            &json!({"id": "ch_1", "object": "charge", "amount": 100, "currency": "EUR", "status": "succeeded"}),
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_failure_waits_its_backoff_then_succeeds_with_the_same_key() {
    let api = flaky_payments().await;
    let (dir, path) = common::workspace();
    let key_file = dir.path().join("stripe_key");
    std::fs::write(&key_file, format!("{API_KEY}\n")).unwrap();
    let config = format!(
        "[limits]\ncall_timeout_ms = 10000\n\n[connectors.payments]\nbase_url = \"{}\"\n\n[secrets.stripe_key]\nfile = \"{}\"\n",
        api.url(""),
        key_file.display()
    );
    std::fs::write(path.join("keel.toml"), config).unwrap();
    let ws = Workspace::open(&path).unwrap();
    let rt = ws.runtime().unwrap();
    let authority = api.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    common::install_connector(&ws, &rt, common::guests::PAYMENTS, &[authority]);
    common::install(&ws, &rt, common::guests::PROPOSER);

    let r = propose(&rt, json!([charge(100)])).await;
    let key = r[0]["queued"].as_str().unwrap().to_owned();
    let first = rt.execute_ready().await.unwrap();
    assert_eq!(first[0].state, IntentState::Ready, "503 is worth retrying: {first:?}");
    let intent = ws.store().intent(&key).unwrap().unwrap();
    let due = intent.not_before_ms.expect("a backoff is set");
    assert!(due > keel_host::memory::now_ms() + 500, "about a second away");
    assert!(rt.execute_ready().await.unwrap().is_empty(), "not before its backoff");
    assert_eq!(api.requests().len(), 1);

    tokio::time::sleep(std::time::Duration::from_millis(due.saturating_sub(keel_host::memory::now_ms()) + 50)).await;
    let second = rt.execute_ready().await.unwrap();
    assert_eq!(second[0].state, IntentState::Executed, "{second:?}");
    let requests = api.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].header("idempotency-key"),
        requests[1].header("idempotency-key"),
        "one key for every attempt"
    );
    let intent = ws.store().intent(&key).unwrap().unwrap();
    assert_eq!((intent.attempts, intent.not_before_ms), (2, None));
}
