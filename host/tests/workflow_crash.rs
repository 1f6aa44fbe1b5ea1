//! SIGKILL a host driving many workflow runs at once, at varying moments,
//! restart it, and do it again until every run is finished; then check
//! what docs/workflows.md and docs/kernel.md promise:
//!
//! * every run finished exactly once: `succeeded` or `failed`, with one
//!   `workflow.finish` audit entry, and no action of it left `ready`,
//!   `sending` or awaiting approval;
//! * the payments peer charged each run's customer exactly once, whatever
//!   was retried (charges are idempotent, keyed by the step's task id);
//! * no email was sent twice: a send a kill interrupted is
//!   `needs-reconcile`, which fails its run, and a failed run's charge is
//!   refunded exactly once (the run ends `compensated`); a succeeded run sent its email once and
//!   refunded nothing;
//! * the audit log verifies.
//!
//! The children are this test binary re-executed with [`CHILD_ENV`] set:
//! each opens the workspace and does what `keel runs recover` does. Each
//! kill waits until the child has committed some audit entries, so it
//! lands inside the work (steps, sends, compensations, finishes) however
//! fast the machine is.

mod common;
mod peers;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use keel_host::kernel::outbox::{Intent, IntentState};
use keel_host::memory::Store;
use keel_host::memory::audit::AuditEntry;
use keel_host::workflow::runs::{RunState, StepStatus};
use keel_host::workspace::Workspace;
use serde_json::{Value, json};

use peers::payments::PaymentsPeer;
use peers::smtp::SmtpPeer;

const CHILD_ENV: &str = "KEEL_WORKFLOW_CRASH_CHILD";
const TEST_NAME: &str = "sigkill_during_many_runs_never_doubles_an_effect";
const API_KEY: &str = "sk_test_workflow_crash";
/// Runs started before the first child. About ten audit entries each: many
/// more than the kill rounds consume, so every kill lands inside runs.
const RUNS: usize = 80;
/// Children killed before the next ones are let finish.
const KILL_ROUNDS: usize = 30;
/// Unkilled children after those, should runs remain (one is enough).
const FINISH_ROUNDS: usize = 3;
/// Longest a child may take to open the workspace, to make progress, or
/// to finish when not killed.
const CHILD_PATIENCE: Duration = Duration::from_secs(30);

/// Charge the customer, note it, email them, file a receipt: steps 1 and
/// 3 propose one action each (no approval policy: both run at once); the
/// customer comes from the run's input. The last step proposes nothing, so
/// its commit also finishes the run.
const CHECKOUT: &str = r#"
[limits]
concurrency = 12

[[steps]]
id = "charge"
agent = "proposer"
input = { proposals = [{ kind = "payments.charge", amount = 100, currency = "EUR", payload = { amount = 100, currency = "EUR", customer = "$.trigger.customer" } }] }

[[steps]]
id = "note"
agent = "echo"
input = { customer = "$.trigger.customer", charged = "$.steps.charge.output" }

[[steps]]
id = "notify"
agent = "proposer"
input = { proposals = [{ kind = "email.send", payload = { to = ["ada@example.com"], subject = "$.trigger.customer", body = "thanks" } }] }

[[steps]]
id = "receipt"
agent = "echo"
input = { customer = "$.trigger.customer", sent = "$.steps.notify.output" }
"#;

/// Runs not finished yet, in any state.
fn unfinished(store: &Store) -> usize {
    RunState::ALL
        .into_iter()
        .filter(|s| !s.is_finished())
        .map(|s| store.runs_in(s, usize::MAX).expect("runs are readable").len())
        .sum()
}

/// The sequence number of the newest audit entry.
fn audit_head(store: &Store) -> u64 {
    store.audit_tail(1).expect("the audit log is readable").first().map_or(0, |e| e.seq)
}

/// The child: `keel runs recover`, saying `ready N` (runs unfinished)
/// before, `progress N` whenever audit entries were committed (N since
/// `ready`), and `done N` (runs unfinished) or `error WHY` after.
fn child(workspace: &str) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let code = rt.block_on(async {
        let ws = Workspace::open(workspace.as_ref()).expect("the child opens the workspace");
        let runtime = ws.runtime().expect("the child builds a runtime");
        let store = ws.store().clone();
        let start = audit_head(&store);
        println!("ready {}", unfinished(&store));
        std::thread::spawn(move || {
            let mut seen = start;
            loop {
                std::thread::sleep(Duration::from_millis(2));
                let head = audit_head(&store);
                if head != seen {
                    println!("progress {}", head - start);
                    seen = head;
                }
            }
        });
        match runtime.recover_runs().await {
            Ok(_) => {
                println!("done {}", unfinished(ws.store()));
                0
            }
            Err(e) => {
                println!("error {e}");
                1
            }
        }
    });
    std::process::exit(code)
}

/// When a round kills its child: once the child has committed `entries`
/// audit entries, `then` later.
#[derive(Debug, Clone, Copy)]
struct KillAt {
    entries: u64,
    then: Duration,
}

/// Round `round`'s kill: after 1 to 12 audit entries and 0 to 16 ms, in a
/// fixed, scrambled order.
fn kill_at(round: usize) -> KillAt {
    let round = round as u64;
    KillAt { entries: 1 + (round * 7) % 12, then: Duration::from_millis((round * 11) % 17) }
}

/// How a child's round went.
#[derive(Debug)]
struct Round {
    /// Runs unfinished when it started.
    unfinished_at_start: usize,
    /// Runs unfinished when it returned; `None` when it was killed.
    unfinished_at_end: Option<usize>,
}

/// Lines of `child`'s stdout, read on a thread of their own.
fn lines_of(child: &mut Child) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line of `lines` with one of `prefixes`, from there on, within
/// `wait`.
fn expect_line(lines: &Receiver<String>, prefixes: &[&str], wait: Duration) -> Result<String, RecvTimeoutError> {
    let deadline = Instant::now() + wait;
    loop {
        let line = lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
        // The harness's `test NAME ... ` may begin the child's first line.
        if let Some(at) = prefixes.iter().find_map(|p| line.find(p)) {
            return Ok(line[at..].to_owned());
        }
    }
}

/// The number in a child's line (`ready 12`).
fn count(line: &str) -> u64 {
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("bad child line {line:?}"))
}

/// One child, killed with SIGKILL as `kill` says, or let finish when
/// `None`. Its stderr goes to `log`, shown if it fails.
fn round(workspace: &Path, log: &Path, round: usize, kill: Option<KillAt>) -> Round {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, workspace)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut child);
    let mut failed = |what: String| -> ! {
        let _ = child.kill();
        let status = child.wait().unwrap();
        let stderr = std::fs::read_to_string(log).unwrap_or_default();
        panic!("round {round}: {what}; the child exited ({status}), its stderr:\n{stderr}")
    };
    let unfinished_at_start = match expect_line(&lines, &["ready ", "error "], CHILD_PATIENCE) {
        Ok(line) if line.starts_with("ready ") => count(&line) as usize,
        Ok(line) => failed(line),
        Err(e) => failed(format!("the child did not open the workspace ({e})")),
    };
    // Wait for the kill's moment, unless the child ends first.
    let mut end = None;
    let mut wait = CHILD_PATIENCE;
    if let Some(kill) = kill {
        loop {
            match expect_line(&lines, &["progress ", "done ", "error "], CHILD_PATIENCE) {
                Ok(line) if line.starts_with("progress ") && count(&line) < kill.entries => continue,
                Ok(line) if line.starts_with("progress ") => wait = kill.then,
                Ok(line) => end = Some(line),
                Err(e) => failed(format!("the child stopped making progress ({e})")),
            }
            break;
        }
    }
    let end = end.map_or_else(|| expect_line(&lines, &["done ", "error "], wait), Ok);
    let unfinished_at_end = match end {
        Ok(line) if line.starts_with("done ") => Some(count(&line) as usize),
        Ok(line) => failed(format!("recovering runs failed: {line}")),
        Err(RecvTimeoutError::Timeout) if kill.is_some() => None,
        Err(e) => failed(format!("the child neither finished nor failed ({e})")),
    };
    child.kill().unwrap(); // SIGKILL; harmless if it already exited
    child.wait().unwrap();
    Round { unfinished_at_start, unfinished_at_end }
}

/// What the peers and the workspace hold once the last child is gone.
struct Evidence<'a> {
    store: &'a Store,
    audit: Vec<AuditEntry>,
    charges: Vec<Value>,
    refunds: Vec<Value>,
    /// The subject of each email received.
    subjects: Vec<String>,
}

/// What is wrong with run `id` (of `customer`), one sentence each, and
/// the state it ended in.
fn problems_of(evidence: &Evidence<'_>, id: &str, customer: &str) -> (Vec<String>, RunState) {
    let mut problems = Vec::new();
    let run = evidence.store.run(id).unwrap().unwrap_or_else(|| panic!("run {id} is gone"));
    if !matches!(run.state, RunState::Succeeded | RunState::Compensated) {
        problems.push(format!("it ended {}", run.state.as_str()));
    }
    let target = format!(" {id}");
    let finishes = evidence.audit.iter().filter(|e| e.operation == "workflow.finish" && e.target.ends_with(&target));
    match finishes.count() {
        1 => {}
        n => problems.push(format!("it has {n} `workflow.finish` audit entries")),
    }
    let intents = evidence.store.intents_with_prefix(&format!("{id}/")).unwrap();
    for i in &intents {
        if matches!(i.state, IntentState::Ready | IntentState::Sending | IntentState::AwaitingApproval) {
            problems.push(format!("its action {} is still {}", i.key, i.state.as_str()));
        }
    }
    let the = |kind: &str| -> Option<&Intent> {
        match intents.iter().filter(|i| i.proposal.kind == kind).collect::<Vec<_>>()[..] {
            [intent] => Some(intent),
            _ => None,
        }
    };
    let (Some(charge), Some(email)) = (the("payments.charge"), the("email.send")) else {
        problems.push(format!("it does not have one charge and one email: {intents:?}"));
        return (problems, run.state);
    };

    // The charge: exactly one at the peer, whatever was retried.
    if charge.state != IntentState::Executed {
        problems.push(format!("its charge is {}", charge.state.as_str()));
    }
    let charged: Vec<&Value> = evidence.charges.iter().filter(|c| c["customer"] == customer).collect();
    if charged.len() != 1 {
        problems.push(format!("{customer} was charged {} times", charged.len()));
    }
    let charge_id = charged.first().and_then(|c| c["id"].as_str()).unwrap_or_default();
    let refunds = evidence.refunds.iter().filter(|r| r["charge"] == charge_id).count();

    // The email: never twice; a send a kill interrupted fails the run, whose
    // charge is then refunded, once.
    let emails = evidence.subjects.iter().filter(|s| *s == customer).count();
    if emails > 1 {
        problems.push(format!("{customer} got {emails} emails"));
    }
    match run.state {
        RunState::Succeeded => {
            let receipt = run.steps.get("receipt");
            if receipt.is_none_or(|s| s.status != StepStatus::Succeeded || s.output.is_none()) {
                problems.push(format!("it succeeded without its last step's output: {receipt:?}"));
            }
            if email.state != IntentState::Executed || emails != 1 {
                let note = email.note.as_deref().unwrap_or_default();
                problems.push(format!(
                    "it succeeded, yet its email is {} ({emails} received) {note}",
                    email.state.as_str()
                ));
            }
            if refunds != 0 {
                problems.push(format!("it succeeded, yet its charge was refunded {refunds} times"));
            }
        }
        RunState::Compensated => {
            let error = run.error.as_deref().unwrap_or_default();
            if email.state != IntentState::NeedsReconcile || !error.contains("needs-reconcile") {
                problems.push(format!("it failed with its email {}: {error}", email.state.as_str()));
            }
            let undone = charge.compensation.as_ref().is_some_and(|c| c.receipt.is_some());
            if refunds != 1 || !undone {
                problems.push(format!("it failed, and its charge was refunded {refunds} times: {charge:?}"));
            }
        }
        _ => {}
    }
    (problems, run.state)
}

#[test]
fn sigkill_during_many_runs_never_doubles_an_effect() {
    if let Ok(workspace) = std::env::var(CHILD_ENV) {
        child(&workspace);
    }
    let began = Instant::now();
    let peers_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let payments = peers_rt.block_on(PaymentsPeer::start(API_KEY));
    let smtp = SmtpPeer::start(None);

    let (dir, path) = peers::connected_config("[limits]\ncall_timeout_ms = 10000\n", API_KEY, &smtp, &payments);
    std::fs::create_dir_all(path.join("workflows")).unwrap();
    std::fs::write(path.join("workflows/checkout.toml"), CHECKOUT).unwrap();

    // Install (which compiles every component into the workspace's cache,
    // so the children compile nothing) and record the runs, undriven. The
    // workspace is closed before any child opens it.
    let mut customers: BTreeMap<String, String> = BTreeMap::new(); // run id -> customer
    {
        let ws = Workspace::open(&path).unwrap();
        let rt = ws.runtime().unwrap();
        peers::install_mail_payments_and_proposer(&ws, &rt, &smtp, &payments);
        common::install(&ws, &rt, common::guests::ECHO);
        let (def, text) = ws.workflow("checkout").unwrap();
        for i in 0..RUNS {
            let customer = format!("cus_{i}");
            let input = json!({ "customer": customer });
            let run = peers_rt.block_on(rt.start_run(&def, &text, input, "manual", "operator")).unwrap();
            customers.insert(run.id, customer);
        }
    }
    let set_up = began.elapsed();

    // Kill children, then let them finish. A kill landed mid-work when the
    // next child still finds runs unfinished.
    let log = dir.path().join("child.log");
    let mut rounds: Vec<Round> = Vec::new();
    let mut killed_mid_work = 0;
    for r in 0..KILL_ROUNDS + FINISH_ROUNDS {
        let kill = (r < KILL_ROUNDS).then(|| kill_at(r));
        let outcome = round(&path, &log, r, kill);
        eprintln!("round {r}: {kill:?}: {outcome:?}");
        let previous_killed = rounds.last().is_some_and(|p| p.unfinished_at_end.is_none());
        if previous_killed && outcome.unfinished_at_start > 0 {
            killed_mid_work += 1;
        }
        let all_finished = outcome.unfinished_at_end == Some(0);
        rounds.push(outcome);
        if all_finished {
            break;
        }
    }
    let kills = rounds.iter().filter(|r| r.unfinished_at_end.is_none()).count();
    assert_eq!(rounds.last().unwrap().unfinished_at_end, Some(0), "runs remain unfinished: {rounds:?}");

    let ws = Workspace::open(&path).expect("the workspace opens after the last child");
    let mut audit: Vec<AuditEntry> = Vec::new();
    ws.store()
        .audit_for_each(|e| {
            audit.push(e.clone());
            Ok(())
        })
        .unwrap();
    let evidence = Evidence {
        store: ws.store(),
        audit,
        charges: payments.charges(),
        refunds: payments.refunds(),
        subjects: smtp.received().iter().filter_map(|m| m.header("subject")).collect(),
    };
    let mut problems = Vec::new();
    let mut ended: BTreeMap<&str, usize> = BTreeMap::new();
    let mut rerun_attempts = 0;
    for (id, customer) in &customers {
        let (found, state) = problems_of(&evidence, id, customer);
        problems.extend(found.into_iter().map(|p| format!("run {id} ({customer}): {p}")));
        *ended.entry(state.as_str()).or_default() += 1;
        let run = ws.store().run(id).unwrap().unwrap();
        rerun_attempts += run.steps.values().map(|s| s.attempts.saturating_sub(1) as usize).sum::<usize>();
    }
    let settled = evidence.audit.iter().filter(|e| e.operation == "actions.recover").count();
    eprintln!(
        "{} rounds ({kills} killed, {killed_mid_work} of them mid-work) in {:?} (set-up {set_up:?}); \
         runs {ended:?}; {settled} interrupted sends settled; {rerun_attempts} step attempts run again",
        rounds.len(),
        began.elapsed()
    );
    let shown = problems.iter().take(40).cloned().collect::<Vec<_>>().join("\n");
    assert!(problems.is_empty(), "{} problems, the first {}:\n{shown}", problems.len(), problems.len().min(40));
    assert_eq!(evidence.charges.len(), RUNS, "no charge for anyone else: {:?}", evidence.charges);
    let failed = ended.get("compensated").copied().unwrap_or(0);
    assert_eq!(evidence.refunds.len(), failed, "refunds only for failed (compensated) runs: {:?}", evidence.refunds);
    assert_eq!(ws.store().audit_verify().unwrap().broken, None, "the audit log verifies");
    assert!(killed_mid_work >= KILL_ROUNDS / 2, "too few kills landed inside runs: {rounds:?}");
    assert!(settled > 0, "no kill landed mid-send: the test proved nothing about interrupted actions");
}
