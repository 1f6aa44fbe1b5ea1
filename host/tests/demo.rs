//! The README's demo, run the way `examples/demo.sh` runs it (its
//! `examples/lead-to-outreach/run.sh`, with this build's `keel` and
//! components): two batches of emails through the lead-to-outreach
//! workflow on the offline defaults, against a real mail sink and CalDAV
//! server. The report it prints must match the store and the audit log,
//! the mail sink must hold exactly the emails executed, and the second
//! batch must use what the first stored: the same sender is one record
//! with two messages, and the planner's rationale recalls the company's
//! earlier message, also for a colleague writing from the same company.
//! And with OpenAI-compatible servers configured for the `small` and
//! `large` tiers, the same workflow extracts and composes with them, and
//! their cost shows in `keel costs` per model, plugin and workflow.

mod common;
mod peers;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use keel_host::kernel::approvals::ApprovalStatus;
use keel_host::kernel::outbox::IntentState;
use keel_host::memory::records;
use keel_host::workflow::runs::RunState;
use keel_host::workspace::Workspace;
use serde_json::Value;

/// The value after `label:` in the last report the demo printed.
fn last_report_line<'a>(stdout: &'a str, label: &str) -> &'a str {
    let line =
        stdout.lines().rev().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no `{label}` line:\n{stdout}"));
    line[label.len()..].trim()
}

/// `N state` pairs of a report line, e.g. "4 awaiting-approval, 5 executed".
fn counts(text: &str) -> BTreeMap<String, u64> {
    text.split(", ")
        .filter(|part| *part != "none")
        .map(|part| {
            let (n, what) = part.split_once(' ').unwrap_or_else(|| panic!("not `N what`: {part}"));
            (what.to_owned(), n.parse().unwrap())
        })
        .collect()
}

fn run_outputs(ws: &Workspace, file: &str) -> BTreeMap<String, Value> {
    let runs = ws.store().recent_runs(100).unwrap();
    let run = runs.iter().find(|r| r.input["file"] == file).unwrap_or_else(|| panic!("no run for {file}"));
    run.steps.iter().map(|(id, s)| (id.clone(), s.output.clone().unwrap_or(Value::Null))).collect()
}

#[test]
fn the_demo_report_matches_the_store_and_the_second_batch_builds_on_the_first() {
    peers::require_python_module("aiosmtpd", "aiosmtpd");
    peers::require_python_module("radicale", "radicale");
    let dir = tempfile::tempdir().unwrap();
    let ws_path = dir.path().join("ws");
    let plugins = Path::new(common::guests::EXTRACTOR).parent().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lead-to-outreach/run.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_keel"))
        .arg(plugins)
        .arg(&ws_path)
        .env_remove("KEEL_WORKSPACE")
        .output()
        .unwrap();
    let stdout = common::stdout(&out);
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{}", common::stderr(&out));
    println!("{stdout}");

    let ws = Workspace::open(&ws_path).unwrap();
    let store = ws.store();

    // The report's numbers are the store's.
    let runs = counts(last_report_line(&stdout, "runs:").split_once(" (").unwrap().1.trim_end_matches(')'));
    let stored_runs: BTreeMap<String, u64> = RunState::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), store.runs_in(*s, usize::MAX).unwrap().len() as u64))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(runs, stored_runs);
    assert_eq!(runs.values().sum::<u64>(), 8, "one run per email");
    let leads = records::stats(store).unwrap()["leads"].records;
    assert_eq!(last_report_line(&stdout, "records:"), format!("{leads} leads"));
    assert_eq!(leads, 5, "7 senders wrote, 2 of them twice, 1 was spam: {stdout}");
    let actions = counts(last_report_line(&stdout, "actions:"));
    let stored_actions: BTreeMap<String, u64> = store
        .intent_counts()
        .unwrap()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| (s.as_str().to_owned(), n))
        .collect();
    assert_eq!(actions, stored_actions);
    let pending = store.approvals(Some(ApprovalStatus::Pending)).unwrap().len();
    assert_eq!(last_report_line(&stdout, "approvals:"), format!("{pending} waiting for you"));
    assert_eq!(pending, 4, "two high-value emails and two meetings wait for the operator");

    // ... and the audit log's.
    let mut by_operation: BTreeMap<String, u64> = BTreeMap::new();
    store
        .audit_for_each(|e| {
            *by_operation.entry(e.operation.clone()).or_default() += 1;
            Ok(())
        })
        .unwrap();
    let executed = store.intents_in(IntentState::Executed, usize::MAX).unwrap();
    assert_eq!(by_operation["workflow.start"], 8);
    assert_eq!(by_operation.get("actions.execute").copied(), Some(executed.len() as u64), "{by_operation:?}");
    assert_eq!(store.audit_verify().unwrap().broken, None);

    // The mail sink got exactly the executed emails.
    let mails = std::fs::read_dir(format!("{}-mail", ws_path.display()))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "eml"))
        .count();
    assert_eq!(mails, executed.iter().filter(|i| i.proposal.kind == "email.send").count());
    assert_eq!(mails, 5, "replies to Brightleaf (twice), Nordlicht (twice) and the support request");

    // Compounding: one record per sender, history recalled.
    let dana = records::get(store, "leads", "dana.whitfield@acme-robotics.com").unwrap().unwrap();
    let dana = dana.data;
    assert_eq!((dana["messages"].as_u64(), dana["needs"].as_array().map(Vec::len)), (Some(2), Some(2)), "{dana}");
    assert_eq!(dana["budget"], 32000.0, "the newer budget wins: {dana}");
    let again = run_outputs(&ws, "06-acme-again.eml");
    assert_eq!(again["extract"]["new"], false);
    let rationale = again["plan"]["rationale"].as_str().unwrap();
    assert!(rationale.contains("Acme Robotics GmbH wrote 1 time(s) before"), "{rationale}");
    let colleague = run_outputs(&ws, "07-nordlicht-colleague.eml");
    assert_eq!(colleague["extract"]["new"], true, "a colleague is a new contact");
    assert!(colleague["plan"]["history"][0]["text"].as_str().unwrap().contains("Petra Sommer"), "{colleague:?}");
    let first = run_outputs(&ws, "01-acme.eml");
    assert!(first["plan"]["history"].as_array().unwrap().is_empty(), "nothing to recall the first time");
    assert!(stdout.contains("known sender, message 2") && stdout.contains("recalled: Acme Robotics GmbH"), "{stdout}");
    let spam = run_outputs(&ws, "05-spam.eml");
    assert_eq!(spam["extract"]["skipped"], "spam");
    assert!(records::get(store, "leads", "offers@seo-rank-boost.biz").unwrap().is_none(), "spam is not a lead");
}

/// An inquiry the offline rules would read differently from the models.
const INQUIRY: &str = "From: Tom Baker <tom@brightleaf-studio.com>\nSubject: Analytics dashboard\n\n\
    Hello, we need an analytics dashboard. Budget: EUR 8,000.\n\nTom Baker\nBrightleaf Studio\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_model_servers_configured_the_workflow_uses_them_and_counts_their_cost() {
    let small = peers::openai::OpenAiPeer::start().await;
    small.set_content(Some("lead"));
    small.set_structured_content(Some(
        &serde_json::json!({"name": "Tom Baker", "email": "tom@brightleaf-studio.com", "company": "Brightleaf Studio",
            "need": "a dashboard of profit per client", "subject": "Analytics dashboard", "budget": 8000,
            "currency": "EUR", "confidence": 0.93})
        .to_string(),
    ));
    let large = peers::openai::OpenAiPeer::start().await;
    large.set_content(Some("Dear Tom, thank you for writing about the dashboard. (the large model)"));
    let head = format!(
        "[policy]\ncurrency = \"EUR\"\n\n[model.providers.fast]\nkind = \"openai\"\nbase_url = \"{}\"\n\n\
         [model.providers.smart]\nkind = \"openai\"\nbase_url = \"{}\"\n\n[model.tiers]\nsmall = [\"fast/mini-1\"]\n\
         large = [\"smart/big-1\"]\n\n[model.prices.\"fast/mini-1\"]\ninput_per_million = 1.0\noutput_per_million = 2.0\n\n\
         [model.prices.\"smart/big-1\"]\ninput_per_million = 10.0\noutput_per_million = 30.0\n",
        small.base_url(),
        large.base_url()
    );
    let workflow = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lead-to-outreach/workflows");
    let c = peers::connected_workspace(&head, "sk_test_demo", |path| {
        std::fs::create_dir_all(path.join("workflows")).unwrap();
        let text = std::fs::read_to_string(workflow.join("lead-to-outreach.toml")).unwrap();
        std::fs::write(path.join("workflows/lead-to-outreach.toml"), text).unwrap();
    })
    .await;
    for agent in [common::guests::EXTRACTOR, common::guests::PLANNER, common::guests::EXECUTOR] {
        common::install(&c.ws, &c.rt, agent);
    }
    let (def, text) = c.ws.workflow("lead-to-outreach").unwrap();
    let input = serde_json::json!({"text": INQUIRY, "file": "inquiry.eml"});
    let run = c.rt.start_run(&def, &text, input, "manual", "operator").await.unwrap();
    let done = c.rt.drive_run(&run.id).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.error);

    assert_eq!((small.request_count(), large.request_count()), (2, 1), "classify and extract small, compose large");
    let lead = records::get(c.ws.store(), "leads", "tom@brightleaf-studio.com").unwrap().unwrap().data;
    assert_eq!(lead["need"], "a dashboard of profit per client", "the model's extraction is stored: {lead}");
    let mails = c.smtp.wait_for(1);
    assert!(mails[0].body().contains("(the large model)"), "{}", mails[0].body());
    assert_eq!(mails[0].header("Subject").as_deref(), Some("Re: Analytics dashboard"));

    let path = c.dir.path().join("ws");
    let peers::Connected { dir: _dir, ws, rt, .. } = c;
    drop((rt, ws));
    let out = common::keel(&path, &["costs", "--json"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let costs: Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    let line = |list: &str, name: &str| {
        costs[list].as_array().unwrap().iter().find(|l| l["name"] == name).cloned().unwrap_or_else(|| {
            panic!("no {list} line for {name}: {costs}");
        })
    };
    assert_eq!(line("models", "fast/mini-1")["calls"], 2);
    assert_eq!(line("models", "smart/big-1")["calls"], 1);
    assert!(line("models", "smart/big-1")["micros"].as_u64().unwrap() > 0, "{costs}");
    let workflow = line("workflows", "lead-to-outreach");
    assert_eq!(workflow["useful_actions"], 1, "the sent reply: {workflow}");
    assert_eq!(workflow["micros"], costs["total"]["micros"], "all spend was this workflow's");
    assert!(line("plugins", "extractor")["micros"].as_u64().unwrap() > 0);
}
