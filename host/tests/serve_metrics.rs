//! `GET /metrics` of the real `keel serve`, and spans exported over OTLP.
//!
//! Work is done first through the library (a workflow that recalls three
//! notes and uses one, model calls with a cache hit, a charge whose first
//! attempt gets a 503 and which succeeds after its backoff, two proposals
//! parked for approval, one approved), then `keel serve` is started with
//! an OTLP collector peer: the scrape is parsed strictly (every line, HELP
//! and TYPE for every family, cumulative histogram buckets ending in +Inf
//! with `_sum` and `_count`) and each value is checked against what the
//! database says happened. A webhook run while serving shows the counters
//! move and its spans reach the collector. A CLI call exports its spans,
//! parent and child in one trace; with the collector down, the call is not
//! held up and the drop is warned about.

mod common;
mod peers;

use std::collections::BTreeMap;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use keel_host::kernel::outbox::IntentState;
use keel_host::workspace::Workspace;
use serde_json::{Value, json};

use peers::http::{HttpPeer, PeerResponse};
use peers::keel_serve::Server;
use peers::openai::{OpenAiPeer, UsageReply};
use peers::otlp::{OtlpPeer, attribute};

const API_KEY: &str = "sk_test_metrics_5e1a";

const NOTE_USED: &str = "Acme prefers invoices by post, addressed to the finance team.";
const NOTE_IDLE_1: &str = "Globex asked about a discount for annual plans last spring.";
const NOTE_IDLE_2: &str = "Initech renewed early and wants a call about onboarding.";

/// Three steps: remember three notes, recall them and keep the first (a
/// key/value write of its text), then finish with an empty output.
fn recall_workflow() -> String {
    format!(
        r#"
[[steps]]
id = "learn"
agent = "memory-plane"
input = {{ ops = [
  {{ op = "remember", namespace = "notes", text = "{NOTE_USED}" }},
  {{ op = "remember", namespace = "notes", text = "{NOTE_IDLE_1}" }},
  {{ op = "remember", namespace = "notes", text = "{NOTE_IDLE_2}" }},
] }}

[[steps]]
id = "use"
agent = "memory-plane"
input = {{ ops = [
  {{ op = "recall", namespace = "notes", query = "invoices customers plans", k = 3 }},
  {{ op = "put", namespace = "notes", key = "chosen", value = "{NOTE_USED}" }},
] }}

[[steps]]
id = "done"
agent = "memory-plane"
input = {{ ops = [] }}
"#
    )
}

const HOOKED: &str = r#"
[trigger]
kind = "webhook"
path = "leads"

[[steps]]
id = "take"
agent = "echo"
input = { lead = "$.trigger.name" }
"#;

/// A payments API that is down for its first answer, then charges.
async fn flaky_payments() -> HttpPeer {
    let answered = std::sync::atomic::AtomicUsize::new(0);
    HttpPeer::start(move |_| {
        let n = answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n == 0 {
            return PeerResponse::json(503, &json!({"error": {"message": "down for maintenance"}}));
        }
        PeerResponse::json(200, &json!({"id": format!("ch_{n}"), "object": "charge", "status": "succeeded"}))
    })
    .await
}

fn config(payments: &HttpPeer, model: &OpenAiPeer, key_file: &Path) -> String {
    format!(
        r#"[limits]
call_timeout_ms = 10000

[policy.approval]
above_by_kind = {{ "payments.charge" = 500 }}

[connectors.payments]
base_url = "{payments}"

[secrets.stripe_key]
file = "{key}"

[secrets.hosted_key]
file = "{key}"

[model.providers.hosted]
kind = "openai"
base_url = "{model}"
api_key = "hosted_key"
timeout_ms = 5000
max_retries = 0

[model.tiers]
small = ["hosted/m-small"]

[model.prices."hosted/m-small"]
input_per_million = 1.0
output_per_million = 2.0
"#,
        payments = payments.url(""),
        model = model.base_url(),
        key = key_file.display(),
    )
}

fn charge(amount: i64) -> Value {
    json!({"kind": "payments.charge", "amount": amount, "currency": "EUR",
        "payload": {"amount": amount, "currency": "EUR", "customer": "cus_acme"}})
}

/// What a strict parse of the exposition found.
#[derive(Debug, Default)]
struct Scrape {
    /// Family -> type.
    types: BTreeMap<String, String>,
    /// (sample name, labels sorted, `le` included) -> value.
    samples: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl Scrape {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut labels: Vec<(String, String)> =
            labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        labels.sort();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?} in the scrape"))
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{a="x",b="y\"z"}` (without the braces) -> pairs, unescaped.
fn parse_labels(text: &str, line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert!(valid_name(&name) && !name.contains(':'), "bad label name `{name}` in: {line}");
        assert_eq!(chars.next(), Some('"'), "label value not quoted in: {line}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => panic!("bad escape {other:?} in: {line}"),
                },
                Some('"') => break,
                Some('\n') | None => panic!("unterminated label value in: {line}"),
                Some(c) => value.push(c),
            }
        }
        out.push((name, value));
        match chars.next() {
            Some(',') | None => {}
            other => panic!("expected `,` after a label, got {other:?} in: {line}"),
        }
    }
    out
}

fn parse_value(text: &str, line: &str) -> f64 {
    match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        t => t.parse().unwrap_or_else(|e| panic!("bad value `{t}` ({e}) in: {line}")),
    }
}

/// Parses the text format strictly: every line is a HELP, a TYPE or a
/// sample; every family has HELP then TYPE before its samples; sample
/// names belong to the family (`_bucket`/`_sum`/`_count` for histograms,
/// `_sum`/`_count` for summaries); histograms are cumulative, end in +Inf
/// and their `_count` equals the +Inf bucket.
fn parse(text: &str) -> Scrape {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut scrape = Scrape::default();
    let mut helped = Vec::new();
    let mut current: Option<(String, String)> = None;
    // (family, labels without le) -> buckets in order, sum, count.
    type Series = (Vec<(f64, f64)>, Option<f64>, Option<f64>);
    let mut histograms: BTreeMap<(String, Vec<(String, String)>), Series> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or_else(|| panic!("HELP without text: {line}"));
            assert!(valid_name(name) && name.starts_with("keel_"), "bad family name: {line}");
            assert!(!help.trim().is_empty(), "empty help: {line}");
            assert!(!helped.contains(&name.to_owned()), "family {name} described twice");
            helped.push(name.to_owned());
            current = None;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("TYPE without a type: {line}"));
            assert_eq!(helped.last().map(String::as_str), Some(name), "TYPE must follow the family's HELP: {line}");
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "bad type: {line}");
            scrape.types.insert(name.to_owned(), kind.to_owned());
            current = Some((name.to_owned(), kind.to_owned()));
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "unexpected line: {line:?}");
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample without a value: {line}"));
        let value = parse_value(value, line);
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                (name, parse_labels(inner, line))
            }
            None => (series, Vec::new()),
        };
        assert!(valid_name(name), "bad sample name: {line}");
        let (family, kind) = current.as_ref().unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
        let suffix = name.strip_prefix(family.as_str()).unwrap_or_else(|| panic!("{name} is not in family {family}"));
        let allowed: &[&str] = match kind.as_str() {
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["_sum", "_count", ""],
            _ => &[""],
        };
        assert!(allowed.contains(&suffix), "sample {name} does not belong to {kind} {family}");
        let mut sorted = labels.clone();
        sorted.sort();
        assert!(scrape.samples.insert((name.to_owned(), sorted), value).is_none(), "the same series twice: {line}");
        if kind == "histogram" {
            let without_le: Vec<(String, String)> = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
            let entry = histograms.entry((family.clone(), without_le)).or_default();
            match suffix {
                "_bucket" => {
                    let le =
                        labels.iter().find(|(k, _)| k == "le").unwrap_or_else(|| panic!("bucket without le: {line}"));
                    entry.0.push((parse_value(&le.1, line), value));
                }
                "_sum" => entry.1 = Some(value),
                _ => entry.2 = Some(value),
            }
        }
    }
    for name in &helped {
        assert!(scrape.types.contains_key(name), "family {name} has HELP but no TYPE");
    }
    for ((family, labels), (buckets, sum, count)) in &histograms {
        assert!(!buckets.is_empty(), "{family}{labels:?} has no buckets");
        assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0), "{family}{labels:?}: bounds not increasing");
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{family}{labels:?}: buckets not cumulative");
        assert_eq!(buckets.last().unwrap().0, f64::INFINITY, "{family}{labels:?}: no +Inf bucket");
        assert!(sum.is_some(), "{family}{labels:?}: no _sum");
        assert_eq!(*count, Some(buckets.last().unwrap().1), "{family}{labels:?}: _count is not the +Inf bucket");
    }
    scrape
}

fn start_serve(workspace: &Path, otlp: &str) -> Server {
    Server::start_with_env(
        workspace,
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", otlp), ("OTEL_SERVICE_NAME", "keel-under-test")],
    )
}

fn scrape(addr: SocketAddr, token: &str) -> Scrape {
    let bearer = format!("Bearer {token}");
    let (status, body) = peers::http::request(addr, "GET", "/metrics", &[("authorization", bearer.as_str())], b"");
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_what_happened_and_spans_reach_the_collector() {
    let payments = flaky_payments().await;
    let model = OpenAiPeer::with_key(API_KEY).await;
    model.set_usage(UsageReply::Fixed { prompt: 100, completion: 50 });
    let collector = OtlpPeer::start().await;
    let (dir, path) = common::workspace();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{API_KEY}\n")).unwrap();
    std::fs::write(path.join("keel.toml"), config(&payments, &model, &key_file)).unwrap();
    std::fs::create_dir_all(path.join("workflows")).unwrap();
    std::fs::write(path.join("workflows/recall.toml"), recall_workflow()).unwrap();
    std::fs::write(path.join("workflows/hooked.toml"), HOOKED).unwrap();

    // The work, through the library.
    let (run, mttr, audit_before) = {
        let ws = Workspace::open(&path).unwrap();
        let rt = ws.runtime().unwrap();
        let authority = payments.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
        common::install_connector(&ws, &rt, common::guests::PAYMENTS, &[authority]);
        for plugin in [common::guests::PROPOSER, common::guests::MEMORY_PLANE, common::guests::MODEL_CALLER] {
            common::install(&ws, &rt, plugin);
        }
        common::install(&ws, &rt, common::guests::ECHO);

        let (def, text) = ws.workflow("recall").unwrap();
        let started = rt.start_run(&def, &text, json!({}), "manual", "operator").await.unwrap();
        let run = rt.drive_run(&started.id).await.unwrap();
        assert_eq!(run.state.as_str(), "succeeded", "{run:?}");
        let recalled = &run.steps["use"].output.as_ref().unwrap()[0];
        assert_eq!(recalled.as_array().map(Vec::len), Some(3), "all three notes recalled: {recalled}");

        let ask = json!({"complete": {"tier": "small", "user": "summarise the week", "temperature_milli": 0}});
        let out = rt.call("model-caller", json!({"calls": [ask, ask]}).to_string()).await.unwrap();
        let answers: Value = serde_json::from_str(&out.output).unwrap();
        assert_eq!((answers[0]["cached"].as_bool(), answers[1]["cached"].as_bool()), (Some(false), Some(true)));
        assert_eq!(answers[0]["cost_micros"], 200, "100 tokens at 1.0 + 50 at 2.0 per million");

        let propose = |proposals: Value| {
            let rt = &rt;
            async move {
                let out = rt.call("proposer", json!({ "proposals": proposals }).to_string()).await.unwrap();
                serde_json::from_str::<Vec<Value>>(&out.output).unwrap()
            }
        };
        let queued = propose(json!([charge(100)])).await;
        assert!(queued[0]["queued"].is_string(), "{queued:?}");
        let first = rt.execute_ready().await.unwrap();
        assert_eq!(first[0].state, IntentState::Ready, "the 503 is retried later: {first:?}");
        let parked = propose(json!([charge(900), charge(800)])).await;
        assert!(parked.iter().all(|p| p["error"] == "pending-approval"), "{parked:?}");
        let approval = |p: &Value| -> u64 {
            let detail = p["detail"].as_str().unwrap();
            detail.strip_prefix("approval #").and_then(|r| r.split(':').next()).unwrap().parse().unwrap()
        };
        rt.kernel().approve(approval(&parked[1]), "operator", None).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while ws.store().intents_in(IntentState::Executed, 10).unwrap().len() < 2 {
            assert!(Instant::now() < deadline, "the charges did not execute");
            tokio::time::sleep(Duration::from_millis(200)).await;
            rt.execute_ready().await.unwrap();
        }
        // Time to recover, from the audit entries of the attempts.
        let attempts: Vec<_> =
            ws.store().audit_tail(1000).unwrap().into_iter().filter(|e| e.operation == "actions.execute").collect();
        assert_eq!(attempts.len(), 3, "{attempts:?}");
        assert_eq!(format!("{:?}", attempts[0].decision), "Denied");
        // Recovered at the connector's next success (the retry, or the
        // approved charge if it came first).
        let mttr = (attempts[1].at_ms - attempts[0].at_ms) as f64 / 1000.0;
        let audit_before = ws.store().audit_tail(1).unwrap()[0].seq;
        (run, mttr, audit_before)
    };
    let stop = common::keel(&path, &["stop", "--reason", "metrics test"]);
    assert!(stop.status.success(), "{}", common::stderr(&stop));
    let rotated = common::keel(&path, &["token", "rotate"]);
    let token = common::stdout(&rotated).trim().to_owned();

    let server = start_serve(&path, &collector.endpoint());
    let (status, _) = peers::http::request(server.addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 401, "the metrics need the token");
    let wrong = [("authorization", "Bearer keel_not_the_token")];
    assert_eq!(peers::http::request(server.addr, "GET", "/metrics", &wrong, b"").0, 401);
    let bearer = format!("Bearer {token}");
    let (status, body) = peers::http::request(server.addr, "GET", "/metrics", &[("authorization", &bearer)], b"");
    assert_eq!(status, 200, "{body}");
    let s = parse(&body);

    // States.
    assert_eq!(s.value("keel_kill_switch_engaged", &[]), 1.0);
    assert_eq!(s.value("keel_intents", &[("state", "executed")]), 2.0);
    assert_eq!(s.value("keel_intents", &[("state", "awaiting-approval")]), 1.0);
    assert_eq!(s.value("keel_intents", &[("state", "ready")]), 0.0);
    assert_eq!(s.value("keel_approvals_pending", &[]), 1.0);
    assert_eq!(s.value("keel_runs", &[("state", "succeeded")]), 1.0);
    assert_eq!(s.value("keel_runs", &[("state", "running")]), 0.0);
    let entries = s.value("keel_audit_entries", &[]);
    assert!(entries >= (audit_before + 1) as f64, "the stop was audited too: {entries} vs {audit_before}");
    assert_eq!(s.value("keel_metrics_audit_folded", &[]), entries, "every entry is counted");

    // Manual intervention: two of three proposals went to a human.
    assert_eq!(s.value("keel_proposals_total", &[("decision", "queued")]), 1.0);
    assert_eq!(s.value("keel_proposals_total", &[("decision", "parked")]), 2.0);
    assert_eq!(s.value("keel_proposals_total", &[("decision", "rejected")]), 0.0);
    assert!(close(s.value("keel_manual_intervention_ratio", &[]), 2.0 / 3.0));
    assert_eq!(s.value("keel_approval_decisions_total", &[("decision", "approved")]), 1.0);
    assert_eq!(s.value("keel_approval_decisions_total", &[("decision", "rejected")]), 0.0);

    // Cost per useful action: 200 micros for two executed charges.
    assert_eq!(s.value("keel_currency_info", &[("currency", "EUR")]), 1.0);
    assert_eq!(s.value("keel_model_spend_micros_total", &[]), 200.0);
    assert_eq!(s.value("keel_model_calls_total", &[]), 2.0);
    assert_eq!(s.value("keel_model_cache_hits_total", &[]), 1.0);
    assert_eq!(s.value("keel_model_tokens_total", &[("direction", "input")]), 100.0);
    assert_eq!(s.value("keel_model_spend_by_model_micros_total", &[("model", "hosted/m-small")]), 200.0);
    assert_eq!(s.value("keel_useful_actions", &[]), 2.0);
    assert_eq!(s.value("keel_cost_per_useful_action_micros", &[]), 100.0);

    // End-to-end latency of the recall run, in its bucket.
    let seconds = (run.finished_at_ms.unwrap() - run.created_at_ms) as f64 / 1000.0;
    let w = [("workflow", "recall")];
    assert_eq!(s.value("keel_workflow_run_duration_seconds_count", &w), 1.0);
    assert!(close(s.value("keel_workflow_run_duration_seconds_sum", &w), seconds), "{seconds}");
    for le in ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "300", "900", "3600", "14400", "86400"]
    {
        let expected = if seconds <= le.parse::<f64>().unwrap() { 1.0 } else { 0.0 };
        assert_eq!(s.value("keel_workflow_run_duration_seconds_bucket", &[w[0], ("le", le)]), expected, "le {le}");
    }
    assert_eq!(s.value("keel_workflow_run_duration_seconds_bucket", &[w[0], ("le", "+Inf")]), 1.0);
    assert_eq!(s.value("keel_workflow_runs_finished_total", &[w[0], ("state", "succeeded")]), 1.0);

    // Retrieval relevance: three notes recalled, one used.
    assert_eq!(s.value("keel_recall_hits_total", &[("namespace", "notes")]), 3.0);
    assert_eq!(s.value("keel_recall_hits_unused_total", &[("namespace", "notes")]), 2.0);
    assert!(close(s.value("keel_recall_unused_ratio", &[]), 2.0 / 3.0));

    // The connector failed once and recovered after the backoff.
    let fail = [("connector", "payments"), ("kind", "payments.charge"), ("outcome", "ready")];
    assert_eq!(s.value("keel_connector_failures_total", &fail), 1.0);
    assert_eq!(s.value("keel_connector_successes_total", &[("connector", "payments")]), 2.0);
    assert_eq!(s.value("keel_connector_failing", &[("connector", "payments")]), 0.0);
    assert_eq!(s.value("keel_connector_recovery_seconds_count", &[("connector", "payments")]), 1.0);
    let mean = s.value("keel_connector_mean_time_to_recover_seconds", &[("connector", "payments")]);
    assert!(close(mean, mttr), "{mean} vs {mttr}");
    assert_eq!(s.types["keel_workflow_run_duration_seconds"], "histogram");
    assert_eq!(s.types["keel_connector_recovery_seconds"], "summary");
    assert_eq!(s.types["keel_proposals_total"], "counter");

    // A run while serving moves the counters (after the one-second cache).
    let auth = [("authorization", bearer.as_str()), ("content-type", "application/json")];
    let (status, body) = peers::http::request(server.addr, "POST", "/api/v1/hooks/leads", &auth, br#"{"name":"Ada"}"#);
    assert_eq!(status, 202, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["run"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let s = loop {
        std::thread::sleep(Duration::from_millis(300));
        let s = scrape(server.addr, &token);
        if s.get("keel_workflow_runs_finished_total", &[("workflow", "hooked"), ("state", "succeeded")]) == Some(1.0) {
            break s;
        }
        assert!(Instant::now() < deadline, "the webhook run never showed in the metrics");
    };
    assert_eq!(s.value("keel_runs", &[("state", "succeeded")]), 2.0);
    assert_eq!(s.value("keel_workflow_run_duration_seconds_count", &[("workflow", "hooked")]), 1.0);
    assert_eq!(s.value("keel_workflow_run_duration_seconds_count", &w), 1.0, "the old run is not counted twice");
    assert_eq!(s.value("keel_metrics_audit_folded", &[]), s.value("keel_audit_entries", &[]));

    if !cfg!(feature = "otlp") {
        return;
    }
    // Its spans reached the collector: the step's call, with the run's task id.
    let deadline = Instant::now() + Duration::from_secs(10);
    let task = format!("{id}/take");
    let call = loop {
        let spans = collector.spans();
        if let Some(span) =
            spans.into_iter().find(|s| s["name"] == "keel.call" && attribute(s, "task") == Some(&json!(task)))
        {
            break span;
        }
        assert!(Instant::now() < deadline, "no keel.call span for {task}: {:?}", collector.spans());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(call["service"], "keel-under-test");
    assert_eq!(attribute(&call, "plugin"), Some(&json!("echo")));
    let s = loop {
        std::thread::sleep(Duration::from_millis(1100));
        let s = scrape(server.addr, &token);
        if s.value("keel_otlp_spans_exported_total", &[]) > 0.0 {
            break s;
        }
        assert!(Instant::now() < deadline, "the exported spans were not counted");
    };
    assert_eq!(s.value("keel_otlp_spans_dropped_total", &[]), 0.0);
    drop(server);
}

#[cfg(feature = "otlp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_call_exports_its_spans_in_one_trace_and_a_down_collector_holds_nothing_up() {
    let collector = OtlpPeer::start().await;
    let c = peers::connected_workspace("[limits]\ncall_timeout_ms = 10000\n", API_KEY, |_| {}).await;
    let path = c.ws.root().to_path_buf();
    drop((c.ws, c.rt));
    let input = json!({"proposals": [charge(100)]}).to_string();
    let call = |endpoint: &str| {
        Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("--workspace")
            .arg(&path)
            .args(["call", "proposer", "--input", &input])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env_remove("RUST_LOG")
            .env_remove("OTEL_SERVICE_NAME")
            .output()
            .unwrap()
    };
    let out = call(&collector.endpoint());
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(c.payments.charges().len(), 1, "the charge was executed by the call");

    // Flushed before the process exited.
    let spans = collector.spans();
    let named = |name: &str| -> &Value {
        spans.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no {name} span in {spans:#?}"))
    };
    let call_span = named("keel.call");
    let propose = named("keel.actions.propose");
    let execute = named("keel.action.execute");
    let perform = named("keel.connector.perform");
    assert_eq!(call_span["service"], "keel");
    assert_eq!(attribute(call_span, "plugin"), Some(&json!("proposer")));
    assert_eq!(propose["parentSpanId"], call_span["spanId"], "a host call is a child of its call");
    assert_eq!(propose["traceId"], call_span["traceId"]);
    assert_eq!(perform["parentSpanId"], execute["spanId"], "the connector's perform is inside the attempt");
    assert_eq!(perform["traceId"], execute["traceId"]);
    assert_eq!(attribute(execute, "kind"), Some(&json!("payments.charge")));
    assert_eq!(attribute(execute, "connector"), Some(&json!("payments")));
    assert_eq!(attribute(execute, "attempt"), Some(&json!("1")));
    assert_eq!(attribute(execute, "outcome"), Some(&json!("executed")));
    for span in &spans {
        let hex = |v: &Value, len: usize| {
            v.as_str().is_some_and(|s| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit()))
        };
        assert!(hex(&span["traceId"], 32) && hex(&span["spanId"], 16), "{span}");
        let start: u64 = span["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
        let end: u64 = span["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
        assert!(start > 1_600_000_000_000_000_000 && start <= end, "{span}");
    }
    let requests = collector.requests();
    assert!(requests.iter().all(|r| r.header("content-type") == Some("application/json")), "{requests:?}");

    // A collector that is down: the call goes on, the drop is warned about.
    let down = format!("http://127.0.0.1:{}", peers::free_port());
    let started = Instant::now();
    let out = call(&down);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(8), "the exit flush waits at most a few seconds");
    assert!(common::stderr(&out).contains("OTLP export failed, spans dropped"), "{}", common::stderr(&out));
}
