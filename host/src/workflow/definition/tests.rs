use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::*;

fn agents(name: &str) -> AgentCheck {
    match name {
        "mail" => AgentCheck::NotAnAgent("connector".into()),
        "planer" | "ghost" => AgentCheck::Missing,
        _ => AgentCheck::Agent,
    }
}

fn parse_ok(text: &str) -> WorkflowDef {
    parse(Path::new("workflows/t.toml"), text, &agents).unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts that `text` fails at `line` on `field` with a message holding
/// `expected`, and that the message reads `file:line...: field: ...`.
#[track_caller]
fn assert_error(text: &str, line: usize, field: &str, expected: &str) -> DefinitionError {
    let err = parse(Path::new("workflows/t.toml"), text, &agents).unwrap_err();
    let shown = err.to_string();
    assert_eq!((err.line(), err.field()), (Some(line), Some(field)), "{shown}");
    assert!(shown.starts_with(&format!("workflows/t.toml:{line}:")), "{shown}");
    assert!(shown.contains(&format!(" {field}: ")), "{shown}");
    assert!(shown.contains(expected), "expected {expected:?} in: {shown}");
    err
}

const FULL: &str = r#"
description = "Inbound lead to personal reply"

[trigger]
kind = "webhook"
path = "crm/leads"

[limits]
concurrency = 2
run_timeout_ms = 60000

[[steps]]
id = "extract"
agent = "extractor"
input = { email = "$.trigger.body", run = "$.run.id", literal = "$$5", when = 1979-05-27T07:32:00Z }
retry = { attempts = 3, backoff_ms = 500, max_backoff_ms = 30000 }
timeout_ms = 10000

[[steps]]
id = "qualify"
agent = "qualifier"
branch = { on = "verdict.qualified", cases = { "true" = "outreach", "needs review" = "end" }, default = "archive" }

[[steps]]
id = "outreach"
agent = "writer"
for_each = "$.steps.extract.output.contacts"
max_parallel = 8
next = "summary"

[[steps]]
id = "archive"
agent = "archiver"
input = ["$.steps.qualify.output", "$.steps.extract.output.contacts.0"]
next = "end"

[[steps]]
id = "summary"
agent = "writer"
input.sent = "$.steps.outreach.outputs"
"#;

#[test]
fn a_full_file_parses_with_each_construct() {
    let def = parse_ok(FULL);
    assert_eq!(def.name, "t");
    assert_eq!(def.description.as_deref(), Some("Inbound lead to personal reply"));
    assert_eq!(def.trigger, Trigger::Webhook { path: "crm/leads".into() });
    assert_eq!(def.limits, WorkflowLimits { concurrency: 2, run_timeout_ms: Some(60000) });
    assert_eq!(def.entry(), "extract");
    assert_eq!(def.source, Path::new("workflows/t.toml"));
    let ids: Vec<&str> = def.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["extract", "qualify", "outreach", "archive", "summary"]);

    let extract = def.step("extract").unwrap();
    assert_eq!(
        extract.input,
        Some(json!({"email": "$.trigger.body", "run": "$.run.id", "literal": "$$5", "when": "1979-05-27T07:32:00Z"}))
    );
    assert_eq!(extract.retry, RetryPolicy { attempts: 3, backoff_ms: 500, max_backoff_ms: 30000 });
    assert_eq!(extract.timeout_ms, Some(10000));
    assert_eq!(extract.next, Next::Step("qualify".into()), "the implicit successor is explicit");
    assert_eq!(extract.max_parallel, 1);

    let qualify = def.step("qualify").unwrap();
    assert_eq!(qualify.input, Some(json!("$.steps.extract.output")), "default: the previous step's output");
    assert_eq!(qualify.retry, RetryPolicy::default());
    assert_eq!(
        qualify.next,
        Next::Branch {
            on: vec![PathSegment::Key("verdict".into()), PathSegment::Key("qualified".into())],
            cases: [("true".to_owned(), "outreach".to_owned()), ("needs review".to_owned(), "end".to_owned())].into(),
            default: "archive".into(),
        }
    );

    let outreach = def.step("outreach").unwrap();
    assert_eq!(outreach.for_each.as_ref().map(ToString::to_string).as_deref(), Some("$.steps.extract.output.contacts"));
    assert_eq!(outreach.max_parallel, 8);
    assert_eq!(outreach.input, Some(json!("$.item")), "a for_each step defaults to its element");
    assert_eq!(def.step("archive").unwrap().next, Next::End);
    assert_eq!(def.step("summary").unwrap().input, Some(json!({"sent": "$.steps.outreach.outputs"})));
    assert!(def.step("nope").is_none());

    // Stored as JSON in runs: it round-trips.
    let stored = serde_json::to_value(&def).unwrap();
    assert_eq!(stored["trigger"], json!({"kind": "webhook", "path": "crm/leads"}));
    assert_eq!(stored["steps"][2]["for_each"], json!("$.steps.extract.output.contacts"));
    assert_eq!(serde_json::from_value::<WorkflowDef>(stored).unwrap(), def);
}

#[test]
fn each_trigger_kind_parses() {
    let steps = "\n[[steps]]\nid = \"a\"\nagent = \"x\"\n";
    let trigger = |table: &str| parse_ok(&format!("[trigger]\n{table}{steps}")).trigger;
    assert_eq!(parse_ok(steps).trigger, Trigger::Manual);
    assert_eq!(trigger("kind = \"manual\""), Trigger::Manual);
    assert_eq!(
        trigger("kind = \"schedule\"\ncron = \"0 9 * * MON-FRI\"\ntimezone = \"Europe/Berlin\"\ninput = { n = 1 }"),
        Trigger::Schedule { cron: "0 9 * * MON-FRI".into(), timezone: "Europe/Berlin".into(), input: json!({"n": 1}) }
    );
    assert_eq!(
        trigger("kind = \"schedule\"\ncron = \"@daily\""),
        Trigger::Schedule { cron: "@daily".into(), timezone: "UTC".into(), input: json!({}) }
    );
    assert_eq!(
        trigger("kind = \"inbox\"\nfolder = \"./inbox/leads\"\npattern = \"*.eml\""),
        Trigger::Inbox { folder: "inbox/leads".into(), pattern: "*.eml".into() }
    );
    assert_eq!(
        trigger("kind = \"inbox\"\nfolder = \"in\""),
        Trigger::Inbox { folder: "in".into(), pattern: "*".into() }
    );
    assert_eq!(trigger("kind = \"record\"\ncollection = \"leads\""), Trigger::Record { collection: "leads".into() });
    let def = parse_ok(steps);
    assert_eq!(def.limits, WorkflowLimits { concurrency: DEFAULT_CONCURRENCY, run_timeout_ms: None });
    assert_eq!(def.steps[0].input, Some(json!("$.trigger")));
    assert_eq!(def.steps[0].next, Next::End);
}

const STEP_A: &str = "[[steps]]\nid = \"a\"\nagent = \"x\"\n";

#[test]
fn toml_errors_carry_line_column_and_field() {
    let err = assert_error(&format!("{STEP_A}agnet = 3\n"), 4, "steps[0].agnet", "unknown field `agnet`");
    assert!(err.to_string().starts_with("workflows/t.toml:4:1: "), "{err}");
    let err = assert_error(&format!("{STEP_A}timeout_ms = \"x\"\n"), 4, "steps[0].timeout_ms", "invalid type");
    assert!(err.to_string().starts_with("workflows/t.toml:4:14: "), "{err}");
    assert_error(&format!("{STEP_A}retry = {{ attempts = -1 }}\n"), 4, "steps[0].retry.attempts", "invalid value");
    assert_error("[[steps]]\nid = \"a\"\n", 1, "steps[0].agent", "missing");
    assert_error(&format!("[trigger]\ncron = \"x\"\n{STEP_A}"), 1, "trigger.kind", "missing");
    assert_error(&format!("colour = 1\n{STEP_A}"), 1, "colour", "unknown field");
    let err = parse(Path::new("workflows/t.toml"), "[[steps]\nid = \"a\"\n", &agents).unwrap_err();
    assert!(matches!(err, DefinitionError::Toml { line: 1, field: None, .. }), "{err}");
    assert!(err.to_string().starts_with("workflows/t.toml:1:9: "), "{err}");
}

#[test]
fn step_errors_name_file_line_and_field() {
    let two = |a: &str, b: &str| {
        format!("[[steps]]\nid = \"a\"\nagent = \"x\"\n{a}\n[[steps]]\nid = \"b\"\nagent = \"x\"\n{b}\n")
    };
    assert_error(
        &two("", "").replace("\"b\"", "\"a\""),
        6,
        "steps[1].id",
        "`a` is already the id of steps[0] (line 2)",
    );
    assert_error(
        &two("next = \"c\"", ""),
        4,
        "steps[0].next",
        "no step named `c`: use a step id (`a`, `b`) or \"end\"",
    );
    assert_error(&two("", "next = \"a\""), 8, "steps[1].next", "cycle `a -> b -> a`");
    assert_error(&two("next = \"a\"", ""), 4, "steps[0].next", "cycle `a -> a`");
    assert_error(
        &two("", "input = { x = [\"$.item\"] }"),
        8,
        "steps[1].input.x[0]",
        "`$.item`: no element is bound here (only a step with `for_each` has one)",
    );
    assert_error(&two("", "input = \"$.steps.b.output\""), 8, "steps[1].input", "cannot read its own output");
    assert_error(&two("", "input = \"$.step.a\""), 8, "steps[1].input", "unknown root `step`");
    assert_error(&two("next = \"end\"", ""), 6, "steps[1]", "step `b` is never reached from the first step `a`");
    assert_error(
        &two("", "").replace("agent = \"x\"\n\n[[", "agent = \"planer\"\n\n[["),
        3,
        "steps[0].agent",
        "no installed agent named `planer`: see `keel list`",
    );
    assert_error(
        &two("", "").replace("agent = \"x\"\n\n[[", "agent = \"mail\"\n\n[["),
        3,
        "steps[0].agent",
        "`mail` is a connector, not an agent",
    );
    assert_error(
        &two("next = \"b\"\nbranch = { on = \"x\", cases = { a = \"b\" }, default = \"end\" }", ""),
        5,
        "steps[0].branch",
        "exclude each other",
    );
    assert_error(&two("max_parallel = 2", ""), 4, "steps[0].max_parallel", "only a step with `for_each`");
    assert_error(
        &two("retry = { attempts = 21 }", ""),
        4,
        "steps[0].retry.attempts",
        "21 is out of range: use 1 to 20",
    );
    assert_error(
        &two("retry = { backoff_ms = 500, max_backoff_ms = 100 }", ""),
        4,
        "steps[0].retry.max_backoff_ms",
        "use 500 to",
    );
    assert_error(&two("", "").replace("\"b\"", "\"end\""), 6, "steps[1].id", "reserved");
    assert_error(&two("", "").replace("\"b\"", "\"B\""), 6, "steps[1].id", "not a valid step id");
    assert_error("description = \"x\"\n", 1, "steps", "missing: add at least one [[steps]]");
    assert_error(&format!("[limits]\nconcurrency = 0\n{STEP_A}"), 2, "limits.concurrency", "use 1 to 1000");
    assert_error(&two("", "input = { v = nan }"), 8, "steps[1].input.v", "cannot be represented in JSON");
}

#[test]
fn branch_errors() {
    let text = |branch: &str| {
        format!("[[steps]]\nid = \"a\"\nagent = \"x\"\nbranch = {branch}\n[[steps]]\nid = \"b\"\nagent = \"x\"\n")
    };
    assert_error(
        &text("{ on = \"ok\", cases = { \"true\" = \"b\" } }"),
        4,
        "steps[0].branch.default",
        "missing: name the step",
    );
    assert_error(&text("{ on = \"ok\", cases = {}, default = \"b\" }"), 4, "steps[0].branch.cases", "empty");
    assert_error(
        &text("{ on = \"a..b\", cases = { x = \"b\" }, default = \"b\" }"),
        4,
        "steps[0].branch.on",
        "empty segment",
    );
    assert_error(
        &text("{ on = \"ok\", cases = { \"no way\" = \"c\" }, default = \"b\" }"),
        4,
        "steps[0].branch.cases.\"no way\"",
        "no step named `c`",
    );
    assert_error(
        &text("{ on = \"ok\", cases = { x = \"b\" }, default = \"a\" }"),
        4,
        "steps[0].branch.default",
        "cycle `a -> a`",
    );
}

#[test]
fn references_must_name_steps_that_always_run_before() {
    // a branches to b or c; both go on to d. d may read a, not b.
    let text = |d_input: &str| {
        format!(
            "[[steps]]\nid = \"a\"\nagent = \"x\"\nbranch = {{ on = \"k\", cases = {{ b = \"b\" }}, default = \"c\" }}\n\
             [[steps]]\nid = \"b\"\nagent = \"x\"\nnext = \"d\"\n\
             [[steps]]\nid = \"c\"\nagent = \"x\"\ninput = \"$.steps.a.output\"\n\
             [[steps]]\nid = \"d\"\nagent = \"x\"\ninput = {d_input}\n"
        )
    };
    let def = parse_ok(&text("{ from = \"$.steps.a.output.k\" }"));
    assert_eq!(def.step("b").unwrap().input, Some(json!("$.steps.a.output")));
    assert_error(
        &text("{ from = \"$.steps.b.output\" }"),
        16,
        "steps[3].input.from",
        "step `b` does not run before `d` on every path from the first step `a`",
    );
    assert_error(&text("\"$.steps.zz.output\""), 16, "steps[3].input", "no step named `zz`");
    // Without `input`, c would read b's output (the previous step in file order).
    let err = assert_error(
        &text("1").replace("input = \"$.steps.a.output\"\n", ""),
        9,
        "steps[2].input",
        "defaults to `$.steps.b.output`",
    );
    assert!(err.to_string().contains("set `input`"), "{err}");
}

#[test]
fn for_each_references() {
    let text = |first: &str, second: &str| {
        format!("[[steps]]\nid = \"a\"\nagent = \"x\"\n{first}\n[[steps]]\nid = \"b\"\nagent = \"x\"\n{second}\n")
    };
    let def = parse_ok(&text("for_each = \"$.trigger.items\"", "input = \"$.steps.a.outputs.0\""));
    assert_eq!(def.steps[0].max_parallel, DEFAULT_MAX_PARALLEL);
    assert_eq!(parse_ok(&text("for_each = \"$.trigger\"", "")).steps[1].input, Some(json!("$.steps.a.outputs")));
    assert_error(
        &text("for_each = \"$.trigger\"", "input = \"$.steps.a.output\""),
        8,
        "steps[1].input",
        "`a` is a for_each step: read its outputs as `$.steps.a.outputs`",
    );
    assert_error(&text("", "input = \"$.steps.a.outputs\""), 8, "steps[1].input", "`a` is not a for_each step");
    assert_error(&text("", "for_each = \"$.item\""), 8, "steps[1].for_each", "own `for_each`");
    assert_error(&text("", "for_each = \"$.run.id\""), 8, "steps[1].for_each", "not an array");
    assert_error(&text("", "for_each = \"$.steps.b.output\""), 8, "steps[1].for_each", "its own output");
    assert_error(&text("", "for_each = \"items\""), 8, "steps[1].for_each", "starts with `$.`");
    assert_error(&text("", "for_each = \"$.trigger\"\nmax_parallel = 65"), 9, "steps[1].max_parallel", "use 1 to 64");
}

#[test]
fn trigger_errors() {
    let text = |trigger: &str| format!("[trigger]\n{trigger}\n{STEP_A}");
    assert_error(&text("kind = \"inbox\"\nfolder = \"../x\""), 3, "trigger.folder", "`..`");
    assert_error(&text("kind = \"inbox\"\nfolder = \"/var/mail\""), 3, "trigger.folder", "absolute");
    assert_error(&text("kind = \"inbox\"\nfolder = \"in\"\npattern = \"a/*.eml\""), 4, "trigger.pattern", "file names");
    assert_error(&text("kind = \"inbox\""), 1, "trigger.folder", "missing: kind = \"inbox\" needs it");
    assert_error(&text("kind = \"cron\""), 2, "trigger.kind", "unknown trigger kind `cron`");
    assert_error(
        &text("kind = \"manual\"\ncron = \"x\""),
        3,
        "trigger.cron",
        "not used by kind = \"manual\" (it belongs to kind = \"schedule\")",
    );
    assert_error(&text("kind = \"schedule\"\ncron = \" \""), 3, "trigger.cron", "empty");
    assert_error(&text("kind = \"webhook\"\npath = \"/leads\""), 3, "trigger.path", "not a valid webhook path");
    assert_error(&text("kind = \"record\"\ncollection = \"a b\""), 3, "trigger.collection", "not valid");
}

#[test]
fn the_name_comes_from_the_file() {
    let err = parse(Path::new("workflows/Leads.toml"), STEP_A, &agents).unwrap_err();
    assert!(matches!(&err, DefinitionError::BadName { name, .. } if name == "Leads"), "{err}");
    assert!(err.to_string().contains("rename the file"), "{err}");
    assert_eq!(parse(Path::new("w/lead-2.toml"), STEP_A, &agents).unwrap().name, "lead-2");
}

#[test]
fn load_dir_reads_every_toml_file_sorted_by_name() {
    let dir = tempfile::tempdir().unwrap();
    assert!(load_dir(&dir.path().join("workflows"), &agents).unwrap().is_empty(), "a missing folder is empty");
    std::fs::write(dir.path().join("b.toml"), STEP_A).unwrap();
    std::fs::write(dir.path().join("a-b.toml"), STEP_A).unwrap();
    std::fs::write(dir.path().join("a.toml"), STEP_A).unwrap();
    std::fs::write(dir.path().join("README.md"), "not a workflow").unwrap();
    let names: Vec<String> = load_dir(dir.path(), &agents).unwrap().into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["a", "a-b", "b"]);
    std::fs::write(dir.path().join("c.toml"), format!("{STEP_A}next = \"zz\"\n")).unwrap();
    let err = load_dir(dir.path(), &agents).unwrap_err();
    assert!(err.to_string().starts_with(&format!("{}:4: steps[0].next", dir.path().join("c.toml").display())), "{err}");
}

#[test]
fn retry_delay_grows_and_is_capped() {
    let retry = RetryPolicy { attempts: 5, backoff_ms: 500, max_backoff_ms: 3000 };
    let delays: Vec<Duration> = (0..=5).map(|attempt| retry.delay(attempt)).collect();
    let ms = |n| Duration::from_millis(n);
    assert_eq!(delays, [ms(500), ms(500), ms(1000), ms(2000), ms(3000), ms(3000)]);
    assert_eq!(retry.delay(u32::MAX), ms(3000));
    let zero = RetryPolicy { attempts: 3, backoff_ms: 0, max_backoff_ms: 0 };
    assert_eq!(zero.delay(7), Duration::ZERO);
}

#[test]
fn the_example_in_the_module_docs_is_valid() {
    let source = include_str!("../definition.rs");
    let example: Vec<&str> = source
        .lines()
        .skip_while(|line| *line != "//! ```toml")
        .skip(1)
        .take_while(|line| *line != "//! ```")
        .map(|line| line.strip_prefix("//!").unwrap_or(line).trim_start_matches(' '))
        .collect();
    let def = parse(Path::new("workflows/leads.toml"), &example.join("\n"), &agents).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(def.steps.len(), 4);
    assert_eq!(def.trigger, Trigger::Webhook { path: "leads".into() });
}
