//! SIGKILL a host that proposes and executes actions against real peers,
//! many times, at varying moments (between intent and send, between send
//! and receipt): the payments server never charges twice for one key, an
//! interrupted email is marked `needs-reconcile` and never re-sent, every
//! attempt is in the audit log, and the log verifies.

mod common;
mod peers;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keel_host::kernel::outbox::{Intent, IntentState};
use keel_host::workspace::Workspace;
use serde_json::json;

use peers::payments::PaymentsPeer;
use peers::smtp::SmtpPeer;

const CHILD_ENV: &str = "KEEL_OUTBOX_CRASH_CHILD";
const ROUNDS: usize = 20;
const API_KEY: &str = "sk_test_crash";

/// The child: proposes a charge and an email per call and executes them,
/// forever, printing a line after each pass.
fn child(workspace: &str) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ws = Workspace::open(workspace.as_ref()).expect("the child opens the workspace");
        let runtime = ws.runtime().unwrap();
        for i in 0u64.. {
            let proposals = json!({"proposals": [
                {"kind": "payments.charge", "amount": 100, "currency": "EUR",
                 "payload": {"amount": 100, "currency": "EUR", "customer": format!("cus_{i}")}},
                {"kind": "email.send", "payload": {"to": ["ada@example.com"], "subject": format!("n{i}"), "body": "hi"}},
            ]});
            runtime.call("proposer", proposals.to_string()).await.expect("the call runs");
            runtime.execute_ready().await.expect("the outbox runs");
            println!("pass {i}");
        }
    });
    unreachable!("the child never stops")
}

fn kind_of(intent: &Intent) -> &str {
    &intent.proposal.kind
}

#[test]
fn sigkill_never_doubles_an_effect() {
    if let Ok(workspace) = std::env::var(CHILD_ENV) {
        child(&workspace);
    }
    let peers_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let payments = peers_rt.block_on(PaymentsPeer::start(API_KEY));
    let smtp = SmtpPeer::start(None);

    let (_dir, path) = peers::connected_config("[limits]\ncall_timeout_ms = 10000\n", API_KEY, &smtp, &payments);
    {
        let ws = Workspace::open(&path).unwrap();
        let rt = ws.runtime().unwrap();
        peers::install_mail_payments_and_proposer(&ws, &rt, &smtp, &payments);
    }

    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sigkill_never_doubles_an_effect", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let passes = 1 + round % 3;
        let started = Instant::now();
        let mut seen = 0;
        while seen < passes && started.elapsed() < Duration::from_secs(60) {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("pass ") => seen += 1,
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        assert!(seen > 0, "round {round}: the child made no progress");
        // Land the kill at a different point of the next pass each round.
        std::thread::sleep(Duration::from_millis((round as u64 * 23) % 60));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    // A last process settles what the kills interrupted.
    let ws = Workspace::open(&path).expect("the workspace opens after SIGKILL");
    let runtime = ws.runtime().unwrap();
    peers_rt.block_on(runtime.execute_ready()).unwrap();
    peers_rt.block_on(runtime.execute_ready()).unwrap();

    let mut intents: Vec<Intent> = Vec::new();
    for state in IntentState::ALL {
        intents.extend(ws.store().intents_in(state, 10_000).unwrap());
    }
    let by_state =
        |kind: &str, state: IntentState| intents.iter().filter(|i| kind_of(i) == kind && i.state == state).count();
    assert_eq!(by_state("payments.charge", IntentState::Sending) + by_state("email.send", IntentState::Sending), 0);

    // Charges: idempotent, so every one ends executed, one charge per key.
    let charge_intents = intents.iter().filter(|i| kind_of(i) == "payments.charge").count();
    assert_eq!(by_state("payments.charge", IntentState::Executed), charge_intents, "{intents:#?}");
    let charges = payments.charges();
    assert_eq!(charges.len(), charge_intents, "one charge per intent, whatever was retried");
    let keys: BTreeSet<String> = payments
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/charges")
        .filter_map(|r| r.header("idempotency-key").map(str::to_owned))
        .collect();
    assert_eq!(keys.len(), charge_intents, "every charge intent reached the server under its own key");

    // Emails: not idempotent; an interrupted one is the operator's, never re-sent.
    let sent = by_state("email.send", IntentState::Executed);
    let unsure = by_state("email.send", IntentState::NeedsReconcile);
    assert_eq!(sent + unsure, intents.iter().filter(|i| kind_of(i) == "email.send").count(), "{intents:#?}");
    let received = smtp.received().len();
    assert!(received >= sent && received <= sent + unsure, "{received} mails for {sent} sent, {unsure} unsure");

    // Every attempt is in the audit log, and the log verifies.
    let audit = ws.store().audit_tail(100_000).unwrap();
    let mut attempts_logged: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &audit {
        if e.operation == "actions.execute" || e.operation == "actions.recover" {
            let key = e.target.split_whitespace().nth(1).unwrap_or_default();
            *attempts_logged.entry(key).or_default() += 1;
        }
    }
    for i in intents.iter().filter(|i| i.attempts > 0) {
        assert!(attempts_logged.get(i.key.as_str()).copied().unwrap_or(0) >= 1, "attempt of {} not audited", i.key);
    }
    assert_eq!(ws.store().audit_verify().unwrap().broken, None);
    let recovered = audit.iter().filter(|e| e.operation == "actions.recover").count();
    eprintln!("{charge_intents} charges, {sent} emails sent, {unsure} unsure, {recovered} attempts recovered");
    assert!(recovered > 0, "no kill landed mid-attempt: the test proved nothing about recovery");
}
