//! The kernel's decisions on proposals, through a real guest (`proposer`):
//! queued intents with their keys, approvals for amounts and low
//! confidence, rate limits and budgets, the kill switch, and nothing
//! proposed by a call that fails. Execution by connectors is tested in
//! connectors.rs; here the served kinds are registered as an install of
//! those connectors would register them.

mod common;

use keel_host::kernel::KernelError;
use keel_host::kernel::approvals::ApprovalStatus;
use keel_host::kernel::outbox::IntentState;
use keel_host::kernel::registry::{self, KindSpec};
use keel_host::memory::audit::Decision;
use keel_host::memory::committer::Batch;
use keel_host::runtime::Runtime;
use keel_host::workspace::Workspace;
use serde_json::{Value, json};

const POLICY: &str = r#"
[limits]
call_timeout_ms = 5000

[policy]
currency = "EUR"
confidence_floor = 0.5

[policy.rate.kinds."email.send"]
per_minute = 1
burst = 3

[policy.budget]
daily = 5000
plugin_daily = 1000

[policy.approval]
above_by_kind = { "payments.charge" = 500 }
"#;

/// Registers `payments.charge` and `email.send` as the reference
/// connectors describe them.
fn register_kinds(ws: &Workspace) {
    let charge = KindSpec {
        kind: "payments.charge".into(),
        payload_schema: json!({"type": "object", "required": ["customer"], "properties": {"customer": {"type": "string"}}}),
        compensation: Some("payments.refund".into()),
        idempotent: true,
    };
    let email = KindSpec {
        kind: "email.send".into(),
        payload_schema: json!({"type": "object", "required": ["to"], "properties": {"to": {"type": "string"}}}),
        compensation: None,
        idempotent: false,
    };
    let mutations = vec![registry::register("payments", vec![charge]), registry::register("mail", vec![email])];
    ws.store().commit_blocking(Batch { mutations, audit: vec![] }).unwrap();
}

fn host_with(config: &str) -> (tempfile::TempDir, Workspace, Runtime) {
    let (dir, path) = common::workspace();
    std::fs::write(path.join("keel.toml"), config).unwrap();
    let ws = Workspace::open(&path).unwrap();
    register_kinds(&ws);
    let runtime = ws.runtime().unwrap();
    common::install(&ws, &runtime, common::guests::PROPOSER);
    (dir, ws, runtime)
}

fn host() -> (tempfile::TempDir, Workspace, Runtime) {
    host_with(POLICY)
}

async fn propose(runtime: &Runtime, proposals: Value) -> Vec<Value> {
    let out = runtime.call("proposer", json!({ "proposals": proposals }).to_string()).await.expect("the call runs");
    serde_json::from_str(&out.output).unwrap()
}

fn charge(amount: i64) -> Value {
    json!({"kind": "payments.charge", "payload": {"customer": "acme"}, "amount": amount, "currency": "EUR"})
}

fn email(to: &str) -> Value {
    json!({"kind": "email.send", "payload": {"to": to}})
}

/// The approval number in a `pending-approval` detail.
fn approval_number(result: &Value) -> u64 {
    assert_eq!(result["error"], "pending-approval", "{result}");
    let detail = result["detail"].as_str().unwrap();
    detail.strip_prefix("approval #").and_then(|r| r.split(':').next()).and_then(|n| n.parse().ok()).unwrap()
}

#[tokio::test]
async fn allowed_proposals_are_queued_under_their_keys() {
    let (_dir, ws, rt) = host();
    let r = propose(&rt, json!([charge(400), email("ada@example.com")])).await;
    let key = r[0]["queued"].as_str().expect("queued");
    assert!(key.starts_with("t-") && key.ends_with("/proposer/1"), "run/step/index: {key}");
    assert!(r[1]["queued"].as_str().unwrap().ends_with("/proposer/2"));

    let intent = ws.store().intent(key).unwrap().unwrap();
    assert_eq!(
        (intent.state, intent.connector.as_str(), intent.proposal.amount),
        (IntentState::Ready, "payments", Some(400))
    );
    let audit = ws.store().audit_tail(10).unwrap();
    let entry = audit.iter().find(|e| e.target.ends_with(key)).unwrap();
    assert_eq!((entry.actor.as_str(), entry.decision), ("proposer", Decision::Allowed));
    assert!(entry.reason.as_deref().unwrap().contains("within policy"), "{entry:?}");
}

#[tokio::test]
async fn a_charge_above_the_threshold_waits_for_the_operator() {
    let (_dir, ws, rt) = host();
    let r = propose(&rt, json!([charge(10_000), charge(20_000)])).await;
    let (first, second) = (approval_number(&r[0]), approval_number(&r[1]));
    assert!(r[0]["detail"].as_str().unwrap().contains("above the approval threshold of 500"), "{r:?}");

    let pending = ws.store().approvals(Some(ApprovalStatus::Pending)).unwrap();
    assert_eq!(pending.iter().map(|a| a.id).collect::<Vec<_>>(), [first, second]);
    let parked = ws.store().intent(&pending[0].intent_key).unwrap().unwrap();
    assert_eq!(parked.state, IntentState::AwaitingApproval);
    let audit = ws.store().audit_tail(10).unwrap();
    assert!(audit.iter().any(|e| e.decision == Decision::Parked && e.target.ends_with(&pending[0].intent_key)));

    let kernel = rt.kernel();
    let approved = kernel.approve(first, "operator", None).unwrap();
    assert_eq!(approved.state, IntentState::Ready);
    assert!(matches!(kernel.approve(first, "operator", None), Err(KernelError::AlreadyDecided { .. })));
    kernel.reject(second, "operator", "too much").unwrap();
    let rejected = ws.store().intent(&pending[1].intent_key).unwrap().unwrap();
    assert_eq!((rejected.state, rejected.note.as_deref()), (IntentState::Rejected, Some("too much")));
    assert!(matches!(kernel.approve(second, "operator", None), Err(KernelError::AlreadyDecided { .. })));
    assert!(matches!(kernel.approve(999, "operator", None), Err(KernelError::NoSuchApproval(999))));
}

#[tokio::test]
async fn an_edit_is_checked_against_the_schema_before_it_is_approved() {
    let (_dir, ws, rt) = host();
    let id = approval_number(&propose(&rt, json!([charge(9000)])).await[0]);
    let err = rt.kernel().approve(id, "operator", Some(json!({"customer": 7}))).unwrap_err();
    assert!(err.to_string().contains("does not match its schema"), "{err}");
    let intent = rt.kernel().approve(id, "operator", Some(json!({"customer": "acme-eu"}))).unwrap();
    assert_eq!(intent.proposal.payload, json!({"customer": "acme-eu"}));
    assert_eq!(ws.store().approval(id).unwrap().unwrap().note.as_deref(), Some("approved with an edited payload"));
}

#[tokio::test]
async fn low_confidence_goes_to_the_operator() {
    let (_dir, _ws, rt) = host();
    let unsure = json!({"kind": "email.send", "payload": {"to": "x@example.com"}, "confidence": 0.3});
    let r = propose(&rt, json!([unsure])).await;
    approval_number(&r[0]);
    assert!(r[0]["detail"].as_str().unwrap().contains("below the floor of 0.50"), "{r:?}");
}

#[tokio::test]
async fn rate_limits_and_budgets_are_budget_exceeded_and_audited() {
    let (_dir, ws, rt) = host();
    let r = propose(&rt, json!([email("a@x.io"), email("b@x.io"), email("c@x.io"), email("d@x.io")])).await;
    assert!(r[..3].iter().all(|v| v.get("queued").is_some()), "a burst of 3: {r:?}");
    assert_eq!(r[3]["error"], "budget-exceeded", "{r:?}");
    assert!(r[3]["detail"].as_str().unwrap().contains("rate limit: `email.send` may propose 1 per minute"));

    // plugin_daily = 1000: two charges of 400 fit, a third does not.
    let r = propose(&rt, json!([charge(400), charge(400), charge(400)])).await;
    assert!(r[0].get("queued").is_some() && r[1].get("queued").is_some(), "{r:?}");
    assert_eq!(r[2]["error"], "budget-exceeded");
    assert!(r[2]["detail"].as_str().unwrap().contains("daily budget of 1000 EUR for plugin `proposer`"), "{r:?}");
    // The spend of the committed call is durable; the next call sees it.
    let r = propose(&rt, json!([charge(300)])).await;
    assert_eq!(r[0]["error"], "budget-exceeded", "800 of 1000 spent: {r:?}");

    let denials: Vec<_> =
        ws.store().audit_tail(50).unwrap().into_iter().filter(|e| e.decision == Decision::Denied).collect();
    assert_eq!(denials.len(), 3, "{denials:?}");
}

#[tokio::test]
async fn ungranted_unknown_and_malformed_proposals_are_refused() {
    let (_dir, _ws, rt) = host();
    let r = propose(
        &rt,
        json!([
            {"kind": "calendar.create", "payload": {}},
            {"kind": "email.send", "payload": {"subject": "no recipient"}},
            {"kind": "payments.charge", "payload": {"customer": "acme"}, "amount": 100},
        ]),
    )
    .await;
    assert_eq!(r[0]["error"], "denied", "not granted: {r:?}");
    assert_eq!(r[1]["error"], "invalid-input");
    assert!(r[1]["detail"].as_str().unwrap().contains("\"to\" is a required property"), "{r:?}");
    assert_eq!(r[2]["error"], "invalid-input", "an amount needs its currency: {r:?}");
}

#[tokio::test]
async fn a_failed_call_proposes_nothing() {
    let (_dir, ws, rt) = host();
    let script = json!({"proposals": [charge(400), charge(9000)], "fail": true});
    rt.call("proposer", script.to_string()).await.expect_err("fails on purpose");
    for state in IntentState::ALL {
        assert!(ws.store().intents_in(state, 10).unwrap().is_empty(), "{state:?}");
    }
    assert!(ws.store().approvals(None).unwrap().is_empty());
    // Its reservation was released: the whole budget is still there.
    let r = propose(&rt, json!([charge(500), charge(500)])).await;
    assert!(r.iter().all(|v| v.get("queued").is_some()), "{r:?}");
}

#[tokio::test]
async fn the_kill_switch_parks_every_proposal() {
    let (_dir, ws, rt) = host();
    ws.store().set_kill_switch(true, "operator", Some("incident".into())).unwrap();
    let r = propose(&rt, json!([charge(100)])).await;
    approval_number(&r[0]);
    assert!(r[0]["detail"].as_str().unwrap().contains("kill switch is on"), "{r:?}");
    ws.store().set_kill_switch(false, "operator", None).unwrap();
    let r = propose(&rt, json!([charge(100)])).await;
    assert!(r[0].get("queued").is_some(), "{r:?}");
    let ops: Vec<String> = ws.store().audit_tail(20).unwrap().into_iter().map(|e| e.operation).collect();
    assert!(ops.contains(&"kernel.stop".to_owned()) && ops.contains(&"kernel.resume".to_owned()), "{ops:?}");
}

#[tokio::test]
async fn undecided_approvals_expire_as_the_policy_says() {
    let config = format!("{POLICY}expiry_hours = 0.0001\n");
    let (_dir, ws, rt) = host_with(&config);
    let id = approval_number(&propose(&rt, json!([charge(9000)])).await[0]);
    assert!(rt.kernel().expire_approvals(keel_host::memory::now_ms()).unwrap().is_empty(), "not yet");
    let later = keel_host::memory::now_ms() + 1000;
    assert_eq!(rt.kernel().expire_approvals(later).unwrap(), [id]);
    let a = ws.store().approval(id).unwrap().unwrap();
    assert_eq!(a.status, ApprovalStatus::Expired);
    assert_eq!(ws.store().intent(&a.intent_key).unwrap().unwrap().state, IntentState::Rejected);
}
