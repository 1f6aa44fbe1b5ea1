//! The steps: each step's own fields first, then the graph they form
//! (targets exist, no cycle, every step reachable), then the references in
//! inputs and `for_each` (each names a step that always runs earlier).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use toml::Spanned;

use super::graph::{dominators, find_cycle, reachable};
use super::locate::{field_name, line_of};
use super::raw::{RawBranch, RawRetry, RawStep};
use super::reference::{PathSegment, RefRoot, Reference, parse_path, references};
use super::validate::{Checker, key};
use super::{
    AgentCheck, DEFAULT_BACKOFF_MS, DEFAULT_MAX_BACKOFF_MS, DEFAULT_MAX_PARALLEL, DefinitionError, END, MAX_ATTEMPTS,
    MAX_BACKOFF_MS, MAX_PARALLEL, MAX_STEP_TIMEOUT_MS, MAX_STEPS, Next, RetryPolicy, StepDef, check_step_id,
};

/// A place a step may go next, as written (or implied by file order).
struct Link {
    target: String,
    offset: usize,
    field: String,
    implicit: bool,
}

/// A step whose own fields are valid, with what the graph checks need.
struct Checked {
    def: StepDef,
    /// Start of the step's `[[steps]]` header.
    header: usize,
    id_offset: usize,
    /// The span start of `input` and `for_each` as written.
    input_offset: Option<usize>,
    for_each_offset: usize,
    links: Vec<Link>,
}

pub(super) fn build(
    c: &Checker<'_>,
    raw: Option<Spanned<Vec<Spanned<RawStep>>>>,
    agents: &dyn Fn(&str) -> AgentCheck,
) -> Result<Vec<StepDef>, DefinitionError> {
    let Some(raw) = raw else {
        return Err(c.error(0, "steps", "missing: add at least one [[steps]] table with an `id` and an `agent`"));
    };
    if raw.get_ref().is_empty() {
        return Err(c.at(&raw, "steps", "empty: add at least one [[steps]] table with an `id` and an `agent`"));
    }
    if raw.get_ref().len() > MAX_STEPS {
        let message =
            format!("{} steps are too many: use at most {MAX_STEPS}, or split the workflow", raw.get_ref().len());
        return Err(c.at(&raw, "steps", message));
    }
    let raw = raw.into_inner();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut steps = Vec::with_capacity(raw.len());
    for (i, step) in raw.iter().enumerate() {
        let id = step.get_ref().id.get_ref();
        check_step_id(id).map_err(|e| c.at(&step.get_ref().id, format!("steps[{i}].id"), e))?;
        if id == END {
            let message = "`end` is reserved for `next = \"end\"`: pick another id";
            return Err(c.at(&step.get_ref().id, format!("steps[{i}].id"), message));
        }
        if let Some(&first) = index.get(id.as_str()) {
            let line = line_of(c.text, steps_id_offset(&raw, first));
            let message =
                format!("`{id}` is already the id of steps[{first}] (line {line}): give each step its own id");
            return Err(c.at(&step.get_ref().id, format!("steps[{i}].id"), message));
        }
        index.insert(id.clone(), i);
        let previous = i.checked_sub(1).map(|p| &raw[p]);
        steps.push(check_step(c, i, step, previous, raw.get(i + 1), agents)?);
    }
    let edges = resolve_links(c, &steps, &index)?;
    check_cycles(c, &steps, &edges)?;
    let entry = &steps[0].def.id;
    for (i, seen) in reachable(&edges).into_iter().enumerate() {
        if !seen {
            let message = format!(
                "step `{}` is never reached from the first step `{entry}`: point a `next` or a branch case at it, \
                 or remove it",
                steps[i].def.id
            );
            return Err(c.error(steps[i].id_offset, format!("steps[{i}]"), message));
        }
    }
    let dominators = dominators(&edges);
    let refs = References { steps: &steps, index: &index, dominators: &dominators };
    for i in 0..steps.len() {
        refs.check_step(c, i)?;
    }
    Ok(steps.into_iter().map(|step| step.def).collect())
}

fn steps_id_offset(raw: &[Spanned<RawStep>], i: usize) -> usize {
    raw[i].get_ref().id.span().start
}

/// Checks one step's own fields; `previous` and `following` are its
/// neighbours in file order (for its default input and `next`).
fn check_step(
    c: &Checker<'_>,
    i: usize,
    raw: &Spanned<RawStep>,
    previous: Option<&Spanned<RawStep>>,
    following: Option<&Spanned<RawStep>>,
    agents: &dyn Fn(&str) -> AgentCheck,
) -> Result<Checked, DefinitionError> {
    let header = raw.span().start;
    let s = raw.get_ref();
    let field = |name: &str| format!("steps[{i}].{name}");
    let agent = s.agent.get_ref();
    match agents(agent) {
        AgentCheck::Agent => {}
        AgentCheck::NotAnAgent(world) => {
            let message = format!("`{agent}` is a {world}, not an agent: name an installed agent (see `keel list`)");
            return Err(c.at(&s.agent, field("agent"), message));
        }
        AgentCheck::Missing => {
            let message = format!("no installed agent named `{agent}`: see `keel list`");
            return Err(c.at(&s.agent, field("agent"), message));
        }
    }
    let input = match &s.input {
        Some(input) => Some(c.json(input, &[key("steps"), PathSegment::Index(i), key("input")])?),
        None => None,
    };
    let timeout_ms =
        s.timeout_ms.as_ref().map(|t| c.range(t, &field("timeout_ms"), 1, MAX_STEP_TIMEOUT_MS)).transpose()?;
    let retry = retry(c, s.retry.as_ref(), &field("retry"))?;
    let for_each = match &s.for_each {
        Some(text) => Some(for_each(text.get_ref()).map_err(|e| c.at(text, field("for_each"), e))?),
        None => None,
    };
    let max_parallel = match (&s.max_parallel, &for_each) {
        (Some(value), Some(_)) => c.range(value, &field("max_parallel"), 1, MAX_PARALLEL)?,
        (Some(value), None) => {
            let message = "only a step with `for_each` runs in parallel: remove it, or add `for_each`";
            return Err(c.at(value, field("max_parallel"), message));
        }
        (None, Some(_)) => DEFAULT_MAX_PARALLEL,
        (None, None) => 1,
    };
    let (next, links) = match (&s.next, &s.branch) {
        (Some(_), Some(branch)) => {
            let message = "`next` and `branch` exclude each other: keep `branch` (its cases and default say where \
                           to go), or `next`";
            return Err(c.at(branch, field("branch"), message));
        }
        (Some(next), None) => {
            let target = next.get_ref().clone();
            let link =
                Link { target: target.clone(), offset: next.span().start, field: field("next"), implicit: false };
            (if target == END { Next::End } else { Next::Step(target) }, vec![link])
        }
        (None, Some(branch)) => self::branch(c, branch, &field("branch"))?,
        (None, None) => match following {
            Some(following) => {
                let target = following.get_ref().id.get_ref().clone();
                let link = Link { target: target.clone(), offset: header, field: field("next"), implicit: true };
                (Next::Step(target), vec![link])
            }
            None => (Next::End, Vec::new()),
        },
    };
    // The default input, made explicit.
    let input = input.unwrap_or_else(|| {
        Value::String(match (&for_each, previous) {
            (Some(_), _) => "$.item".to_owned(),
            (None, None) => "$.trigger".to_owned(),
            (None, Some(p)) => {
                let outputs = if p.get_ref().for_each.is_some() { "outputs" } else { "output" };
                format!("$.steps.{}.{outputs}", p.get_ref().id.get_ref())
            }
        })
    });
    let def = StepDef {
        id: s.id.get_ref().clone(),
        agent: agent.clone(),
        input: Some(input),
        timeout_ms,
        retry,
        next,
        for_each,
        max_parallel,
    };
    Ok(Checked {
        def,
        header,
        id_offset: s.id.span().start,
        input_offset: s.input.as_ref().map(|input| input.span().start),
        for_each_offset: s.for_each.as_ref().map_or(header, |f| f.span().start),
        links,
    })
}

fn retry(c: &Checker<'_>, raw: Option<&Spanned<RawRetry>>, field: &str) -> Result<RetryPolicy, DefinitionError> {
    let Some(raw) = raw else { return Ok(RetryPolicy::default()) };
    let r = raw.get_ref();
    let attempts =
        r.attempts.as_ref().map(|v| c.range(v, &format!("{field}.attempts"), 1, MAX_ATTEMPTS)).transpose()?;
    let backoff_ms =
        r.backoff_ms.as_ref().map(|v| c.range(v, &format!("{field}.backoff_ms"), 0, MAX_BACKOFF_MS)).transpose()?;
    let backoff_ms = backoff_ms.unwrap_or(DEFAULT_BACKOFF_MS);
    let max_backoff_ms = match &r.max_backoff_ms {
        Some(v) => c.range(v, &format!("{field}.max_backoff_ms"), backoff_ms, MAX_BACKOFF_MS)?,
        None => DEFAULT_MAX_BACKOFF_MS.max(backoff_ms),
    };
    Ok(RetryPolicy { attempts: attempts.unwrap_or(1), backoff_ms, max_backoff_ms })
}

fn for_each(text: &str) -> Result<Reference, String> {
    const HINT: &str = "iterate over an array from `$.trigger` or `$.steps.ID.output`";
    let reference = Reference::parse(text)?;
    match reference.root {
        RefRoot::Item => Err(format!("`{text}`: `$.item` is an element of this step's own `for_each`: {HINT}")),
        RefRoot::RunId => Err(format!("`{text}` is a string, not an array: {HINT}")),
        _ => Ok(reference),
    }
}

fn branch(c: &Checker<'_>, raw: &Spanned<RawBranch>, field: &str) -> Result<(Next, Vec<Link>), DefinitionError> {
    let b = raw.get_ref();
    let on = parse_path(b.on.get_ref()).map_err(|e| c.at(&b.on, format!("{field}.on"), e))?;
    const CASES: &str = "map values to step ids, e.g. cases = { \"true\" = \"outreach\" }";
    let cases = match &b.cases {
        Some(cases) if !cases.get_ref().is_empty() => cases.get_ref(),
        Some(cases) => return Err(c.at(cases, format!("{field}.cases"), format!("empty: {CASES}"))),
        None => return Err(c.at(raw, format!("{field}.cases"), format!("missing: {CASES}"))),
    };
    let Some(default) = &b.default else {
        let message = "missing: name the step (or \"end\") to take when the value matches no case";
        return Err(c.at(raw, format!("{field}.default"), message));
    };
    let mut links = Vec::with_capacity(cases.len() + 1);
    for (value, target) in cases {
        let case = field_name(&[key("cases"), key(value)]);
        let link_field = format!("{field}.{case}");
        links.push(Link {
            target: target.get_ref().clone(),
            offset: target.span().start,
            field: link_field,
            implicit: false,
        });
    }
    let default_field = format!("{field}.default");
    links.push(Link {
        target: default.get_ref().clone(),
        offset: default.span().start,
        field: default_field,
        implicit: false,
    });
    let cases =
        cases.iter().map(|(value, target)| (value.clone(), target.get_ref().clone())).collect::<BTreeMap<_, _>>();
    Ok((Next::Branch { on, cases, default: default.get_ref().clone() }, links))
}

/// The graph's edges (step index -> step indexes), once every target is
/// known to exist.
fn resolve_links(
    c: &Checker<'_>,
    steps: &[Checked],
    index: &HashMap<String, usize>,
) -> Result<Vec<Vec<usize>>, DefinitionError> {
    let mut edges = Vec::with_capacity(steps.len());
    for step in steps {
        let mut targets = Vec::new();
        for link in &step.links {
            if link.target == END {
                continue;
            }
            let Some(&to) = index.get(&link.target) else {
                let message = format!("no step named `{}`: use {} or \"end\"", link.target, known_ids(steps));
                return Err(c.error(link.offset, &link.field, message));
            };
            targets.push(to);
        }
        edges.push(targets);
    }
    Ok(edges)
}

fn known_ids(steps: &[Checked]) -> String {
    const SHOWN: usize = 10;
    let mut ids: Vec<String> = steps.iter().take(SHOWN).map(|s| format!("`{}`", s.def.id)).collect();
    if steps.len() > SHOWN {
        ids.push("...".to_owned());
    }
    format!("a step id ({})", ids.join(", "))
}

fn check_cycles(c: &Checker<'_>, steps: &[Checked], edges: &[Vec<usize>]) -> Result<(), DefinitionError> {
    let Some(cycle) = find_cycle(edges) else { return Ok(()) };
    let (first, last) = (cycle[0], cycle[cycle.len() - 1]);
    let mut shown: Vec<&str> = cycle.iter().map(|&i| steps[i].def.id.as_str()).collect();
    shown.push(&steps[first].def.id);
    // The edge that closes the cycle is the one the error points at.
    let first_id = &steps[first].def.id;
    let link = steps[last].links.iter().find(|link| &link.target == first_id);
    let (offset, field, implicit) = link.map_or((steps[last].header, format!("steps[{last}].next"), true), |link| {
        (link.offset, link.field.clone(), link.implicit)
    });
    let mut message = format!(
        "the steps form a cycle `{}`: a run takes each step at most once; end it with `next = \"end\"` or point \
         it at a later step",
        shown.join(" -> ")
    );
    if implicit {
        message.push_str(&format!(" (steps[{last}] has no `next`, so it continues with the next step in file order)"));
    }
    Err(c.error(offset, field, message))
}

/// Checks references against the graph: a step may read only steps that
/// run before it on every path from the entry.
struct References<'a> {
    steps: &'a [Checked],
    index: &'a HashMap<String, usize>,
    dominators: &'a [Vec<bool>],
}

impl References<'_> {
    fn check_step(&self, c: &Checker<'_>, i: usize) -> Result<(), DefinitionError> {
        let step = &self.steps[i];
        if let Some(reference) = &step.def.for_each {
            self.check(i, reference).map_err(|(problem, hint)| {
                c.error(
                    step.for_each_offset,
                    format!("steps[{i}].for_each"),
                    format!("`{reference}`: {problem}: {hint}"),
                )
            })?;
        }
        let Some(template) = &step.def.input else { return Ok(()) };
        let Some(input_offset) = step.input_offset else {
            // The default input (a single reference): say where it came from.
            let Some(Ok(reference)) = references(template).into_iter().next().map(|(_, r)| r) else { return Ok(()) };
            return self.check(i, &reference).map_err(|(problem, _)| {
                let message = format!("absent, so it defaults to `{reference}`, but {problem}: set `input`");
                c.error(step.header, format!("steps[{i}].input"), message)
            });
        };
        for (inner, reference) in references(template) {
            let at: Vec<PathSegment> =
                [key("steps"), PathSegment::Index(i), key("input")].into_iter().chain(inner).collect();
            let result = reference.and_then(|reference| {
                self.check(i, &reference).map_err(|(problem, hint)| format!("`{reference}`: {problem}: {hint}"))
            });
            if let Err(message) = result {
                return Err(c.error(c.offset_of(&at, input_offset), field_name(&at), message));
            }
        }
        Ok(())
    }

    /// Why step `i` may not use `reference` and what to do, if it may not.
    fn check(&self, i: usize, reference: &Reference) -> Result<(), (String, String)> {
        let this = &self.steps[i].def;
        let (id, wants_outputs) = match &reference.root {
            RefRoot::Trigger | RefRoot::RunId => return Ok(()),
            RefRoot::Item if this.for_each.is_some() => return Ok(()),
            RefRoot::Item => {
                return Err((
                    "no element is bound here (only a step with `for_each` has one)".to_owned(),
                    "add `for_each` to this step, or read `$.trigger` or `$.steps.ID.output`".to_owned(),
                ));
            }
            RefRoot::StepOutput(id) => (id, false),
            RefRoot::StepOutputs(id) => (id, true),
        };
        let Some(&j) = self.index.get(id) else {
            return Err((format!("no step named `{id}`"), format!("use {}", known_ids(self.steps))));
        };
        if j == i {
            return Err(("a step cannot read its own output".to_owned(), "read a step that runs before it".to_owned()));
        }
        if !self.dominators[i][j] {
            return Err((
                format!(
                    "step `{id}` does not run before `{}` on every path from the first step `{}`, so its output \
                     may not exist",
                    this.id, self.steps[0].def.id
                ),
                "read a step that always runs before this one".to_owned(),
            ));
        }
        match (wants_outputs, self.steps[j].def.for_each.is_some()) {
            (false, true) => {
                Err((format!("`{id}` is a for_each step"), format!("read its outputs as `$.steps.{id}.outputs`")))
            }
            (true, false) => Err((format!("`{id}` is not a for_each step"), format!("read `$.steps.{id}.output`"))),
            _ => Ok(()),
        }
    }
}
