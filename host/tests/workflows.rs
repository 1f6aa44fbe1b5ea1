//! Workflows end to end: definitions in `workflows/`, runs driven step by
//! step with sequence, branch and fan-out, approvals that park a run,
//! compensation of executed actions in reverse order (against the real
//! payments peer), pause, resume, cancel, and runs continued after the
//! process that started them is gone.

mod common;
mod peers;

use std::path::Path;

use keel_host::kernel::outbox::IntentState;
use keel_host::runtime::Runtime;
use keel_host::workflow::runs::{RunState, StepStatus};
use keel_host::workspace::Workspace;
use serde_json::{Value, json};

use peers::payments::PaymentsPeer;
use peers::smtp::SmtpPeer;

const API_KEY: &str = "sk_test_workflows_51ab";

struct Host {
    _dir: tempfile::TempDir,
    ws: Workspace,
    rt: Runtime,
    _smtp: SmtpPeer,
    payments: PaymentsPeer,
}

/// A workspace with the mail and payments connectors wired to their
/// peers, `proposer` and `echo` installed, and `workflows` written.
async fn host(workflows: &[(&str, &str)]) -> Host {
    host_with_policy(workflows, "").await
}

/// [`host`] with `extra` appended to the policy section.
async fn host_with_policy(workflows: &[(&str, &str)], extra: &str) -> Host {
    let policy =
        "[limits]\ncall_timeout_ms = 10000\n\n[policy.approval]\nabove_by_kind = { \"payments.charge\" = 500 }\n";
    let c =
        peers::connected_workspace(&format!("{policy}{extra}"), API_KEY, |path| write_workflows(path, workflows)).await;
    common::install(&c.ws, &c.rt, common::guests::ECHO);
    Host { _dir: c.dir, ws: c.ws, rt: c.rt, _smtp: c.smtp, payments: c.payments }
}

fn write_workflows(workspace: &Path, workflows: &[(&str, &str)]) {
    let dir = workspace.join("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in workflows {
        std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
    }
}

async fn run(h: &Host, name: &str, input: Value) -> keel_host::workflow::runs::Run {
    let (def, text) = h.ws.workflow(name).unwrap();
    let started = h.rt.start_run(&def, &text, input, "manual", "operator").await.unwrap();
    h.rt.drive_run(&started.id).await.unwrap()
}

const ROUTED: &str = r#"
description = "Qualify, then fan out over the items, or archive"

[[steps]]
id = "first"
agent = "echo"
input = { lead = "$.trigger.lead", qualified = "$.trigger.qualified", items = "$.trigger.items" }
branch = { on = "qualified", cases = { "true" = "fan" }, default = "archive" }

[[steps]]
id = "fan"
agent = "echo"
for_each = "$.steps.first.output.items"
max_parallel = 2
input = { n = "$.item", lead = "$.steps.first.output.lead" }

[[steps]]
id = "join"
agent = "echo"
input = { all = "$.steps.fan.outputs" }
next = "end"

[[steps]]
id = "archive"
agent = "echo"
input = { archived = "$.steps.first.output.lead" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_run_in_sequence_branch_and_fan_out_and_in() {
    let h = host(&[("routed", ROUTED)]).await;
    let run1 = run(&h, "routed", json!({"lead": "acme", "qualified": true, "items": [1, 2, 3]})).await;
    assert_eq!(run1.state, RunState::Succeeded, "{run1:?}");
    assert_eq!(run1.order, ["first", "fan", "join"]);
    let all = json!({"all": [{"n": 1, "lead": "acme"}, {"n": 2, "lead": "acme"}, {"n": 3, "lead": "acme"}]});
    assert_eq!(run1.output(), Some(&all));
    assert_eq!(run1.steps["fan"].items.len(), 3);

    let run2 = run(&h, "routed", json!({"lead": "initech", "qualified": false, "items": []})).await;
    assert_eq!(run2.state, RunState::Succeeded, "{run2:?}");
    assert_eq!(run2.order, ["first", "archive"], "the branch went to its default");
    assert_eq!(run2.output(), Some(&json!({"archived": "initech"})));

    let audit = h.ws.store().audit_tail(50).unwrap();
    let steps = audit.iter().filter(|e| e.operation == "workflow.step" && e.target.starts_with(&run1.id)).count();
    assert_eq!(steps, 3 + 3, "one entry per step and per fan-out item");
    assert!(audit.iter().any(|e| e.operation == "workflow.finish" && e.target.ends_with(&run2.id)));
}

const SAGA: &str = r#"
[[steps]]
id = "charge-one"
agent = "proposer"
input = { proposals = [{ kind = "payments.charge", amount = 100, currency = "EUR", payload = { amount = 100, currency = "EUR", customer = "cus_1" } }] }

[[steps]]
id = "charge-two"
agent = "proposer"
input = { proposals = [{ kind = "payments.charge", amount = 200, currency = "EUR", payload = { amount = 200, currency = "EUR", customer = "cus_2" } }] }

[[steps]]
id = "boom"
agent = "proposer"
input = { proposals = [], fail = true }
retry = { attempts = 2, backoff_ms = 10 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_third_step_compensates_two_then_one_once_each() {
    let h = host(&[("saga", SAGA)]).await;
    let done = run(&h, "saga", json!({})).await;
    assert_eq!(done.state, RunState::Compensated, "failed, and both charges undone: {done:?}");
    assert_eq!(done.steps["boom"].status, StepStatus::Failed);
    assert_eq!(done.steps["boom"].attempts, 2, "retried once");
    assert!(done.error.as_deref().unwrap().contains("failing on purpose"), "{:?}", done.error);

    let charges = h.payments.charges();
    assert_eq!(charges.len(), 2);
    let refunds = h.payments.refunds();
    let refunded: Vec<&str> = refunds.iter().map(|r| r["charge"].as_str().unwrap()).collect();
    assert_eq!(refunded, ["ch_2", "ch_1"], "newest first, each once");

    // Compensating again (a second process, an operator retry) does nothing.
    let again = h.rt.compensate_run(&done.id).await.unwrap();
    assert_eq!(again.state, RunState::Compensated);
    let requests = h.payments.requests().iter().filter(|r| r.path == "/v1/refunds").count();
    assert_eq!(requests, 2);
    let intents = h.ws.store().intents_with_prefix(&format!("{}/", done.id)).unwrap();
    assert!(intents.iter().all(|i| i.compensation.as_ref().is_some_and(|c| c.receipt.is_some())), "{intents:?}");
}

const NEEDS_APPROVAL: &str = r#"
[[steps]]
id = "big-charge"
agent = "proposer"
input = { proposals = [{ kind = "payments.charge", amount = 10000, currency = "EUR", payload = { amount = 10000, currency = "EUR", customer = "cus_big" } }] }

[[steps]]
id = "after"
agent = "echo"
input = { done = true }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waits_for_the_operator_and_goes_on_once_decided() {
    let h = host(&[("approve", NEEDS_APPROVAL)]).await;
    let waiting = run(&h, "approve", json!({})).await;
    assert_eq!(waiting.state, RunState::WaitingApproval, "{waiting:?}");
    assert_eq!(waiting.waiting_on, [format!("{}/big-charge/1", waiting.id)]);
    assert!(h.payments.charges().is_empty());
    // Nothing moves while undecided.
    assert_eq!(h.rt.continue_if_decided(&waiting.id).await.unwrap().state, RunState::WaitingApproval);

    let approvals = h.ws.store().approvals(Some(keel_host::kernel::approvals::ApprovalStatus::Pending)).unwrap();
    h.rt.kernel().approve(approvals[0].id, "operator", None).unwrap();
    let done = h.rt.continue_if_decided(&waiting.id).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{done:?}");
    assert_eq!(h.payments.charges().len(), 1, "charged once, after approval");
    assert_eq!(done.output(), Some(&json!({"done": true})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_waiting_run_withdraws_its_actions_and_undoes_the_executed_ones() {
    let two_steps = format!(
        "{}\n{}",
        SAGA.split("[[steps]]\nid = \"boom\"").next().unwrap(),
        NEEDS_APPROVAL.replace("id = \"after\"", "id = \"tail\"")
    );
    let h = host(&[("cancel-me", &two_steps)]).await;
    let waiting = run(&h, "cancel-me", json!({})).await;
    assert_eq!(waiting.state, RunState::WaitingApproval, "{waiting:?}");
    assert_eq!(h.payments.charges().len(), 2);

    let cancelled = h.rt.cancel_run(&waiting.id, "changed my mind").await.unwrap();
    assert_eq!(cancelled.state, RunState::Cancelled, "{cancelled:?}");
    assert_eq!(h.payments.refunds().len(), 2);
    let parked = h.ws.store().intent(&format!("{}/big-charge/1", waiting.id)).unwrap().unwrap();
    assert_eq!(parked.state, IntentState::Rejected, "the parked charge can no longer be approved into effect");
    let err = h.rt.cancel_run(&waiting.id, "again").await.unwrap_err();
    assert!(err.to_string().contains("already finished"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_run_stays_put_until_resumed_and_a_restarted_host_recovers_runs() {
    let h = host(&[("routed", ROUTED)]).await;
    let (def, text) = h.ws.workflow("routed").unwrap();
    let started =
        h.rt.start_run(&def, &text, json!({"lead": "x", "qualified": false, "items": []}), "manual", "operator")
            .await
            .unwrap();
    let paused = h.rt.pause_run(&started.id).await.unwrap();
    assert_eq!(paused.state, RunState::Paused);
    assert_eq!(h.rt.drive_run(&started.id).await.unwrap().state, RunState::Paused, "driving a paused run does nothing");
    let resumed = h.rt.resume_run(&started.id).await.unwrap();
    assert_eq!(resumed.state, RunState::Succeeded);

    // A run started but never driven (its process died) is picked up.
    let orphan =
        h.rt.start_run(&def, &text, json!({"lead": "y", "qualified": false, "items": []}), "manual", "operator")
            .await
            .unwrap();
    let recovered = h.rt.recover_runs().await.unwrap();
    let found = recovered.iter().find(|r| r.id == orphan.id).expect("recovered");
    assert_eq!(found.state, RunState::Succeeded);
    assert_eq!(found.output(), Some(&json!({"archived": "y"})));
}

const ASK: &str = r#"
[[steps]]
id = "ask"
agent = "model-caller"
input = { calls = [{ complete = { tier = "small", user = "$.trigger.question" } }] }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_call_of_a_step_is_journaled_and_model_answers_survive_a_crash() {
    let h = host(&[("ask", ASK)]).await;
    common::install(&h.ws, &h.rt, common::guests::MODEL_CALLER);
    let done = run(&h, "ask", json!({"question": "Hello, I need a quote for 20 seats"})).await;
    assert_eq!(done.state, RunState::Succeeded, "{done:?}");
    let journal = h.ws.store().journal(&done.id, "ask").unwrap();
    let model: Vec<_> = journal.iter().filter(|e| e.op == "model.complete").collect();
    assert_eq!(model.len(), 1, "{journal:?}");
    assert_eq!(model[0].request["tier"], "small");
    assert_eq!(model[0].result["Ok"]["model"], "offline/keel-rules-v1", "{:?}", model[0].result);
    assert!(journal.iter().enumerate().all(|(i, e)| e.seq == i as u32), "entries are numbered in order");
    assert!(h.ws.store().memo(&done.id, "ask").unwrap().is_empty(), "the memo goes when the step commits");

    // A process died mid-step after the model answered: its answer is in
    // the memo. The step runs again and gets that answer, not a new one.
    let (def, text) = h.ws.workflow("ask").unwrap();
    let question = "Hello, I need a quote for 20 seats";
    let started = h.rt.start_run(&def, &text, json!({"question": question}), "manual", "operator").await.unwrap();
    let request = serde_json::to_value(keel_host::bindings::keel::plugin::model::CompletionRequest {
        tier: "small".into(),
        messages: vec![keel_host::bindings::keel::plugin::model::Message {
            role: keel_host::bindings::keel::plugin::model::Role::User,
            content: question.into(),
        }],
        max_tokens: 64,
        temperature_milli: 0,
        json_schema: None,
    })
    .unwrap();
    let mut answer = model[0].result.clone();
    answer["Ok"]["text"] = json!("the answer paid for before the crash");
    let mut interrupted = keel_host::workflow::journal::StepJournal::new(&started.id, "ask", vec![]);
    interrupted.record("model.complete", request, answer);
    h.ws.store().commit(interrupted.take_memo().unwrap()).await.unwrap();

    let resumed = h.rt.drive_run(&started.id).await.unwrap();
    assert_eq!(resumed.state, RunState::Succeeded, "{resumed:?}");
    let output = resumed.output().unwrap();
    assert_eq!(output[0]["text"], "the answer paid for before the crash", "{output}");
}

/// A scheduled workflow whose model calls buy no action.
const COSTLY: &str = r#"
[trigger]
kind = "schedule"
cron = "*/5 * * * *"

[[steps]]
id = "think"
agent = "model-caller"
input = { calls = [{ complete = { tier = "small", user = "$.trigger.topic", temperature_milli = 700 } }] }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_workflow_that_spends_without_acting_is_paused_until_resumed() {
    let peer = peers::openai::OpenAiPeer::start().await;
    peer.set_usage(peers::openai::UsageReply::Fixed { prompt: 1000, completion: 1000 });
    let smtp = SmtpPeer::start(None);
    let payments = PaymentsPeer::start(API_KEY).await;
    let (dir, path) = common::workspace();
    let key_file = dir.path().join("stripe_key");
    std::fs::write(&key_file, format!("{API_KEY}\n")).unwrap();
    let config = format!(
        "{}\n{}\n[model.providers.hosted]\nkind = \"openai\"\nbase_url = \"{}\"\n\n[model.tiers]\nsmall = [\"hosted/m\"]\n\n\
         [model.prices.\"hosted/m\"]\ninput_per_million = 1.0\noutput_per_million = 1.0\n\n\
         [model.pruning]\nmax_cost_per_action = 0.001\nwindow_days = 1\nmin_runs = 2\n",
        common::TEST_CONFIG,
        peers::connector_config(&smtp, &payments, &key_file),
        peer.base_url()
    );
    std::fs::write(path.join("keel.toml"), config).unwrap();
    write_workflows(&path, &[("costly", COSTLY)]);
    let ws = Workspace::open(&path).unwrap();
    let rt = ws.runtime().unwrap();
    common::install(&ws, &rt, common::guests::MODEL_CALLER);
    let (def, text) = ws.workflow("costly").unwrap();
    let scheduled = |topic: &str| json!({"topic": topic});

    let first = rt.start_run(&def, &text, scheduled("one"), "schedule", "host").await.unwrap();
    assert_eq!(rt.drive_run(&first.id).await.unwrap().state, RunState::Succeeded);
    assert!(ws.store().paused_workflows().unwrap().is_empty(), "one run is not enough evidence (min_runs = 2)");
    let second = rt.start_run(&def, &text, scheduled("two"), "schedule", "host").await.unwrap();
    assert_eq!(rt.drive_run(&second.id).await.unwrap().state, RunState::Succeeded);

    let paused = ws.store().paused_workflows().unwrap();
    let reason = &paused["costly"].reason;
    assert!(reason.contains("0.004000 EUR and no executed action"), "2 runs x 2000 tokens at 1.0/M: {reason}");
    let audit = ws.store().audit_tail(10).unwrap();
    assert!(audit.iter().any(|e| e.operation == "workflow.prune" && e.actor == "host" && e.target == "costly"));
    let err = rt.start_run(&def, &text, scheduled("three"), "schedule", "host").await.unwrap_err();
    assert!(err.to_string().contains("keel workflows resume costly"), "{err}");
    assert_eq!(peer.request_count(), 2, "the paused workflow spent nothing more");
    // The operator may still run it by hand.
    rt.start_run(&def, &text, scheduled("by hand"), "manual", "operator").await.unwrap();

    rt.resume_workflow("costly").await.unwrap();
    assert!(ws.store().paused_workflows().unwrap().is_empty());
    rt.start_run(&def, &text, scheduled("four"), "schedule", "host").await.expect("resumed");
    let costs = ws.store().model_costs_since(&keel_host::kernel::ledger::utc_day(keel_host::memory::now_ms())).unwrap();
    let workflow = costs.iter().find(|(_, s, _)| s == "workflow:costly").expect("costs are kept per workflow");
    assert_eq!(workflow.2.micros, 4000);
}

/// Step `decide` only passes its input on; a counterfactual agent that acts
/// on it decides differently.
const DECIDE: &str = r#"
[[steps]]
id = "decide"
agent = "echo"
input = { proposals = [{ kind = "payments.charge", amount = 100, currency = "EUR", payload = { amount = 100, currency = "EUR", customer = "cus_9" } }] }

[[steps]]
id = "ask"
agent = "model-caller"
input = { calls = [{ complete = { tier = "small", user = "Summarise: we met Acme today", temperature_milli = 700 } }] }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_identical_and_a_changed_agent_shows_where_it_decides_differently() {
    let h = host(&[("decide", DECIDE)]).await;
    common::install(&h.ws, &h.rt, common::guests::MODEL_CALLER);
    let done = run(&h, "decide", json!({})).await;
    assert_eq!(done.state, RunState::Succeeded, "{done:?}");
    let audit_before = h.ws.store().audit_tail(1).unwrap()[0].seq;

    let same = h.rt.replay_run(&done.id, &Default::default(), &Default::default()).await.unwrap();
    assert!(same.identical(), "{same:?}");
    assert_eq!(same.steps.len(), 2);
    let audit_after = h.ws.store().audit_tail(1).unwrap()[0].seq;
    assert_eq!(audit_before, audit_after, "a replay writes nothing: no model spend, no memory, no audit");

    let swap = [("echo".to_owned(), std::path::PathBuf::from(common::guests::PROPOSER))].into();
    let changed = h.rt.replay_run(&done.id, &swap, &Default::default()).await.unwrap();
    assert!(!changed.identical());
    let first = changed.first_difference().unwrap();
    assert_eq!(first.task, "decide");
    let divergence = first.divergence.as_ref().expect("the proposer makes a call echo never made");
    assert_eq!((divergence.seq, divergence.actual_op.as_str()), (0, "actions.propose"));
    assert_eq!(divergence.actual_request["kind"], "payments.charge");
    assert!(divergence.expected.is_none(), "the original made no call there");
    assert!(changed.steps[1].identical, "later steps are judged on their own journals");
    assert!(h.payments.charges().is_empty(), "a replay never executes effects");

    // The CLI says the same, and exits 1 on a difference.
    let root = h.ws.root().to_path_buf();
    let Host { ws, rt, .. } = h;
    drop(rt);
    drop(ws);
    let out = common::keel(&root, &["replay", &done.id]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(common::stdout(&out).contains("identical (2 steps replayed)"), "{}", common::stdout(&out));
    let agent = format!("echo={}", common::guests::PROPOSER);
    let out = common::keel(&root, &["replay", &done.id, "--agent", &agent]);
    assert_eq!(out.status.code(), Some(1));
    let text = common::stdout(&out);
    assert!(text.contains("decide") && text.contains("now actions.propose"), "{text}");
    let out = common::keel(&root, &["audit", "sample", "--runs", "5"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        common::stdout(&out).contains("sampled 1 of 1 recent finished runs: 0 would decide differently"),
        "{}",
        common::stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_budget_caps_what_all_its_steps_may_spend_in_a_day() {
    let two_charges = SAGA.split("[[steps]]\nid = \"boom\"").next().unwrap();
    let h = host_with_policy(&[("spendy", two_charges)], "\n[policy.budget]\nworkflows = { spendy = 250 }\n").await;
    let done = run(&h, "spendy", json!({})).await;
    assert_eq!(done.state, RunState::Succeeded, "the agent got the refusal as a value: {done:?}");
    let second = &done.steps["charge-two"].output.as_ref().unwrap()[0];
    assert_eq!(second["error"], "budget-exceeded", "{second}");
    assert!(second["detail"].as_str().unwrap().contains("workflow `spendy`"), "{second}");
    assert_eq!(h.payments.charges().len(), 1, "100 fits the budget of 250, 100 + 200 does not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_run_limit_drives_one_run_at_a_time_when_set_to_one() {
    let h = host_with_policy(&[("routed", ROUTED)], "\n[workflows]\nmax_concurrent_runs = 1\n").await;
    let (def, text) = h.ws.workflow("routed").unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let input = json!({"lead": format!("l{i}"), "qualified": true, "items": [1, 2, 3, 4]});
        ids.push(h.rt.start_run(&def, &text, input, "manual", "operator").await.unwrap().id);
    }
    let runs = h.rt.recover_runs().await.unwrap();
    assert!(runs.iter().all(|r| r.state == RunState::Succeeded), "{runs:?}");
    let mut spans: Vec<(u64, u64)> = runs
        .iter()
        .map(|r| {
            let start = r.steps.values().map(|s| s.started_at_ms).min().unwrap();
            (start, r.finished_at_ms.unwrap())
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "runs overlapped: {spans:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counterfactual_asks_another_model_live_and_shows_both_answers() {
    let peer = peers::openai::OpenAiPeer::start().await;
    let models = format!(
        "\n[model.providers.hosted]\nkind = \"openai\"\nbase_url = \"{}\"\n\n[model.tiers]\nsmall = [\"offline\"]\n\n\
         [model.prices.\"hosted/m\"]\ninput_per_million = 0\n",
        peer.base_url()
    );
    let h = host_with_policy(&[("ask", ASK)], &models).await;
    common::install(&h.ws, &h.rt, common::guests::MODEL_CALLER);
    let done = run(&h, "ask", json!({"question": "Can we meet on Tuesday?"})).await;
    assert_eq!(done.state, RunState::Succeeded, "{done:?}");
    assert_eq!(peer.request_count(), 0, "the run used the offline model");

    let swap = [("small".to_owned(), "hosted/m".to_owned())].into();
    let report = h.rt.replay_run(&done.id, &Default::default(), &swap).await.unwrap();
    assert_eq!(peer.request_count(), 1, "the counterfactual asked the other model live");
    assert!(!report.identical());
    let step = &report.steps[0];
    assert!(step.divergence.is_none(), "the agent made the same calls: {:?}", step.divergence);
    let answer = &step.model_answers[0];
    assert_eq!((answer.tier.as_str(), answer.model.as_str()), ("small", "hosted/m"));
    assert_eq!(answer.recorded.as_ref().unwrap()["Ok"]["model"], "offline/keel-rules-v1");
    assert_eq!(answer.now["Ok"]["text"], "echo: Can we meet on Tuesday?");
    assert_eq!(step.replayed_output.as_ref().unwrap()[0]["model"], "hosted/m");
}
