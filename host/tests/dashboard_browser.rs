//! The operator dashboard in a real browser: Debian's headless Chromium,
//! driven over W3C WebDriver, against the real `keel serve` binary. A
//! webhook starts a workflow whose model call costs money (a loopback
//! OpenAI-compatible peer) and whose charge waits for approval; the
//! operator opens the sign-in link of `keel token link`, sees the charge,
//! approves it, and sees it executed (the payments peer received it), the
//! run finished, the audit entries and the cost chart; the kill switch
//! toggles; a refused token brings the token form back. Screenshots go to
//! `target/test-output/`.

mod common;
mod peers;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use peers::keel_serve::Server;
use peers::openai::{OpenAiPeer, UsageReply};
use peers::webdriver::{Browser, Element};

const PAYMENTS_KEY: &str = "sk_test_dashboard_51c9";
const MODEL_KEY: &str = "sk-model-dashboard-3e8a";
/// How long the page gets to show a change (it polls every 2 s).
const PAGE_WAIT: Duration = Duration::from_secs(20);

/// A webhook starts it: a model call drafts the note (priced), the charge
/// is above the approval threshold and waits, then the run finishes.
const RENEWAL: &str = r#"
description = "Draft the renewal note, charge the customer"

[trigger]
kind = "webhook"
path = "renewal"

[[steps]]
id = "draft"
agent = "model-caller"
input = { calls = [{ complete = { tier = "small", user = "Write the renewal note for Acme" } }] }

[[steps]]
id = "charge"
agent = "proposer"
input = { proposals = [{ kind = "payments.charge", amount = 12000, currency = "EUR", confidence = 0.92, rationale = "Annual renewal for Acme, invoice INV-2026-11", payload = { amount = 12000, currency = "EUR", customer = "cus_acme" } }] }

[[steps]]
id = "after"
agent = "echo"
input = { done = true }
"#;

/// The head of keel.toml: charges above 5.00 EUR wait; the `small` tier
/// goes to the loopback model server at a price.
fn head(model_url: &str, model_key_file: &Path) -> String {
    format!(
        r#"[limits]
call_timeout_ms = 10000

[policy.approval]
above_by_kind = {{ "payments.charge" = 500 }}

[model.providers.hosted]
kind = "openai"
base_url = "{model_url}"
api_key = "model_key"
timeout_ms = 5000
max_retries = 1
retry_base_ms = 10

[secrets.model_key]
file = "{}"

[model.tiers]
small = ["hosted/m-small"]

[model.prices."hosted/m-small"]
input_per_million = 1.0
output_per_million = 2.0
"#,
        model_key_file.display()
    )
}

/// `keel serve` on a free loopback port; killed when dropped.
fn serve(workspace: &Path) -> Server {
    Server::start(workspace, &[])
}

/// A JSON API request with the token.
fn api(addr: SocketAddr, token: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let bearer = format!("Bearer {token}");
    let headers = [("authorization", bearer.as_str()), ("content-type", "application/json")];
    let (status, text) = peers::http::request(addr, method, path, &headers, body.as_bytes());
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The status line and headers of `GET path`, lowercased names.
fn head_of(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

/// Where screenshots go: `target/test-output/` (created).
fn output_dir() -> PathBuf {
    let target = option_env!("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-output");
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap_or(dir)
}

/// A value the page computes, by a script returning it.
fn page(browser: &Browser, script: &str) -> Value {
    browser.script(script, json!([]))
}

/// The pending card of approval `id`, once the page shows it.
fn card(browser: &Browser, id: u64) -> Element {
    let selector = format!("[data-approval=\"{id}\"]");
    browser.wait_for(&format!("approval #{id} to be shown as waiting"), PAGE_WAIT, |b| b.find(&selector))
}

#[test]
fn the_operator_approves_a_workflow_charge_in_the_dashboard_and_sees_it_executed_and_audited() {
    peers::webdriver::require_chromium();
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let model = tokio.block_on(OpenAiPeer::with_key(MODEL_KEY));
    model.set_usage(UsageReply::Fixed { prompt: 60_000, completion: 20_000 });
    let secrets = tempfile::tempdir().unwrap();
    let model_key_file = secrets.path().join("model_key");
    std::fs::write(&model_key_file, format!("{MODEL_KEY}\n")).unwrap();
    let connected =
        tokio.block_on(peers::connected_workspace(&head(&model.base_url(), &model_key_file), PAYMENTS_KEY, |path| {
            std::fs::create_dir_all(path.join("workflows")).unwrap();
            std::fs::write(path.join("workflows/renewal.toml"), RENEWAL).unwrap();
        }));
    let peers::Connected { dir: _dir, ws, rt, smtp: _smtp, payments } = connected;
    common::install(&ws, &rt, common::guests::ECHO);
    common::install(&ws, &rt, common::guests::MODEL_CALLER);
    let path = ws.root().to_path_buf();
    drop((rt, ws));
    let token = keel_host::serve::auth::rotate(&path).unwrap();

    let server = serve(&path);
    let addr = server.addr;

    // The page and its assets: public, typed, never cached, locked down.
    for (asset, kind) in
        [("/", "text/html"), ("/dashboard/app.js", "text/javascript"), ("/dashboard/style.css", "text/css")]
    {
        let (status, headers) = head_of(addr, asset);
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap_or("");
        assert_eq!(status, 200, "GET {asset}: {headers:?}");
        assert!(header("content-type").starts_with(kind), "GET {asset}: {headers:?}");
        assert_eq!(header("cache-control"), "no-cache", "GET {asset}");
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "GET {asset}: {csp}");
        assert!(!csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"), "GET {asset}: {csp}");
    }

    // A webhook starts the workflow; its charge waits for the operator.
    let (status, started) = api(addr, &token, "POST", "/api/v1/hooks/renewal", r#"{"customer": "acme"}"#);
    assert_eq!(status, 202, "{started}");
    let run_id = started["run"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + PAGE_WAIT;
    let pending = loop {
        let (_, list) = api(addr, &token, "GET", "/api/v1/approvals?status=pending", "");
        if let Some(first) = list.as_array().and_then(|l| l.first()) {
            break first.clone();
        }
        let (_, run) = api(addr, &token, "GET", &format!("/api/v1/runs/{run_id}"), "");
        assert!(std::time::Instant::now() < deadline, "the run parked no charge: {run}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let approval = pending["approval"]["id"].as_u64().unwrap();
    let intent_key = pending["intent"]["key"].as_str().unwrap().to_owned();
    assert!(payments.charges().is_empty(), "nothing charged before approval");

    // The operator opens the address `keel serve` gives, token in the fragment.
    let link = common::keel(&path, &["token", "link"]);
    assert!(link.status.success(), "keel token link: {}", common::stderr(&link));
    let link = common::stdout(&link).trim().to_owned();
    assert_eq!(link, format!("http://{addr}/#token={token}"), "the sign-in link");
    let browser = Browser::start();
    browser.goto(&link);
    let shown = card(&browser, approval);
    let text = browser.text(&shown);
    for expected in [
        "payments.charge",
        "120.00 EUR",
        "Annual renewal for Acme, invoice INV-2026-11",
        "92%",
        "above the approval threshold",
        "proposer",
        &run_id,
    ] {
        assert!(text.contains(expected), "the pending card lacks `{expected}`:\n{text}");
    }
    let payload = page(&browser, &format!("return document.getElementById('approval-{approval}-payload').value"));
    let payload: Value = serde_json::from_str(payload.as_str().unwrap_or_default()).unwrap();
    assert_eq!(payload, json!({"amount": 12000, "currency": "EUR", "customer": "cus_acme"}), "the payload to edit");
    let title = page(&browser, "return document.title");
    assert_eq!(title, json!("(1) keel"), "the tab says how many wait");
    let url = browser.current_url();
    assert!(!url.contains("token"), "the token stays in the address bar: {url}");
    assert_eq!(page(&browser, "return sessionStorage.getItem('keel.token')"), json!(token), "kept for the tab");

    // Costs: the model call of the draft step, per day and per workflow.
    let bars = browser.wait_for("the cost chart with a bar for today", PAGE_WAIT, |b| {
        let bars = page(
            b,
            "return [...document.querySelectorAll('#costs-svg rect.bar')].map(r => Number(r.getAttribute('height')))",
        );
        let bars: Vec<f64> = serde_json::from_value(bars).unwrap_or_default();
        (bars.len() == 14 && bars.last().is_some_and(|h| *h > 10.0)).then_some(bars)
    });
    assert!(bars[..13].iter().all(|h| *h == 0.0), "only today cost anything: {bars:?}");
    let costs = browser.text(&browser.get("#costs"));
    assert!(
        costs.contains("0.1000 EUR") && costs.contains("renewal"),
        "one model call, 60k+20k tokens at 1/2 EUR per million:\n{}",
        browser.page_text()
    );
    assert!(browser.find("#costs-svg title").is_some(), "bars carry their value as a tooltip");

    let waiting = output_dir().join("dashboard-pending.png");
    browser.screenshot(&waiting);
    println!("dashboard screenshot (a charge waits): {}", waiting.display());

    // Reject needs a reason: without one nothing is sent.
    let in_card = |selector: &str| browser.get(&format!("[data-approval=\"{approval}\"] {selector}"));
    browser.click(&in_card("button.reject"));
    assert_eq!(browser.text(&in_card(".card-note")), "Say why you reject it.");

    // Edit the payload (another customer id), then approve: the charge is
    // executed at once with the edit, and the run goes on.
    let textarea = in_card("textarea.payload");
    browser.clear(&textarea);
    browser.type_text(&textarea, r#"{"amount": 12000, "currency": "EUR", "customer": "cus_acme_eu"}"#);
    let approve = in_card("button.approve");
    assert_eq!(browser.text(&approve), "Approve edited", "the button says the payload changed");
    browser.click(&approve);
    browser.wait_for("the card to leave the pending list", PAGE_WAIT, |b| {
        b.find(&format!("[data-approval=\"{approval}\"]")).is_none().then_some(())
    });
    let message = browser.text(&browser.get("#message"));
    assert!(message.contains(&format!("Approved #{approval}")) && message.contains("executed"), "{message}");
    let decision = format!("#decisions-rows tr[data-key=\"{intent_key}\"][data-state=\"executed\"]");
    let row = browser.wait_for("the charge shown as executed in recent decisions", PAGE_WAIT, |b| b.find(&decision));
    let row_text = browser.text(&row);
    assert!(row_text.contains("ch_1") && row_text.contains("Annual renewal"), "receipt and rationale: {row_text}");
    let charges = payments.charges();
    assert_eq!(charges.len(), 1, "charged once, after approval: {charges:?}");
    assert_eq!((charges[0]["amount"].as_i64(), charges[0]["customer"].as_str()), (Some(12000), Some("cus_acme_eu")));
    for operation in ["approvals.approve", "actions.execute"] {
        let selector = format!("#audit-rows tr[data-operation=\"{operation}\"]");
        let entry = browser.wait_for(&format!("the `{operation}` audit entry"), PAGE_WAIT, |b| b.find(&selector));
        assert!(browser.text(&entry).contains(&intent_key), "{operation}: {}", browser.text(&entry));
    }
    let finished = format!("#runs-rows tr[data-run=\"{run_id}\"][data-state=\"succeeded\"]");
    browser.wait_for("the run to finish after the approval", PAGE_WAIT, |b| b.find(&finished));
    browser.wait_for("the audit chain checked intact", PAGE_WAIT, |b| {
        (page(b, "return document.getElementById('audit-verify').dataset.intact") == json!("true")).then_some(())
    });
    assert_eq!(browser.text(&browser.get("#pending-count")), "0");
    // The charge was useful: it now carries the model spend.
    let figure = |b: &Browser, key: &str| b.find(&format!("[data-figure=\"{key}\"] dd")).map(|e| b.text(&e));
    browser.wait_for("the cost per useful action after the charge", PAGE_WAIT, |b| {
        (figure(b, "useful").as_deref() == Some("1") && figure(b, "per-action").as_deref() == Some("0.1000 EUR"))
            .then_some(())
    });
    let per_workflow = browser.text(&browser.get("#costs-workflows tr[data-workflow=\"renewal\"]"));
    assert_eq!(per_workflow, "renewal 0.1000 EUR 1 1 0.1000 EUR", "cost, calls, useful actions, per action");
    let shot = output_dir().join("dashboard.png");
    browser.screenshot(&shot);
    println!("dashboard screenshot: {}", shot.display());

    // The kill switch: stop, then resume, each audited.
    let switch = browser.get("#switch-button");
    assert_eq!(browser.text(&switch).to_lowercase(), "stop all actions");
    browser.type_text(&browser.get("#switch-reason"), "incident 7");
    browser.click(&switch);
    browser.wait_for("the kill switch shown engaged", PAGE_WAIT, |b| {
        (page(b, "return document.getElementById('switch').dataset.engaged") == json!("true")).then_some(())
    });
    let state = browser.text(&browser.get("#switch-state"));
    assert!(state.contains("ON") && state.contains("incident 7"), "{state}");
    assert_eq!(api(addr, &token, "GET", "/api/v1/kill-switch", "").1["engaged"], json!(true));
    browser.wait_for("the `kernel.stop` audit entry", PAGE_WAIT, |b| {
        b.find("#audit-rows tr[data-operation=\"kernel.stop\"]")
    });
    let stopped = output_dir().join("dashboard-stopped.png");
    browser.screenshot(&stopped);
    println!("dashboard screenshot (kill switch on): {}", stopped.display());
    browser.click(&browser.get("#switch-button"));
    browser.wait_for("the kill switch shown off", PAGE_WAIT, |b| {
        (page(b, "return document.getElementById('switch').dataset.engaged") == json!("false")).then_some(())
    });
    assert_eq!(api(addr, &token, "GET", "/api/v1/kill-switch", "").1["engaged"], json!(false));

    // A refused token brings the form back; the right one reconnects.
    page(&browser, "sessionStorage.setItem('keel.token', 'keel_wrong'); location.reload(); return null");
    let why = browser.wait_for("the token form after a 401", PAGE_WAIT, |b| {
        let form = b.find("#login")?;
        let text = b.text(&form);
        text.contains("refused").then_some(text)
    });
    assert!(why.contains("serve.token"), "{why}");
    assert_eq!(page(&browser, "return document.getElementById('board').hidden"), json!(true), "no stale data shown");
    browser.screenshot(&output_dir().join("dashboard-token.png"));
    browser.type_text(&browser.get("#token-input"), &token);
    browser.click(&browser.get("#login button[type=submit]"));
    browser.wait_for("the dashboard after entering the token", PAGE_WAIT, |b| {
        b.find(&format!("#decisions-rows tr[data-key=\"{intent_key}\"]"))
    });
    drop(browser);
    drop(server);
}
