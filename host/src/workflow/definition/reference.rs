//! References (`$.trigger.lead.email`, `$.steps.plan.output.leads.0`) and
//! the input templates that hold them: parsing, and resolving against the
//! values a run has produced so far.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A reference to a value a run knows: the trigger's input, a step's
/// output, the current `for_each` element or the run id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub root: RefRoot,
    /// Keys and indexes followed from the root; empty for the root itself.
    pub path: Vec<PathSegment>,
}

/// Where a reference starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefRoot {
    /// `$.trigger`: the run's input.
    Trigger,
    /// `$.steps.ID.output`: the output of step ID (not a `for_each` step).
    StepOutput(String),
    /// `$.steps.ID.outputs`: the outputs of `for_each` step ID, in order.
    StepOutputs(String),
    /// `$.item`: the element a `for_each` step runs for.
    Item,
    /// `$.run.id`: the run's id, a string.
    RunId,
}

/// One step of a path: a key of an object, or an index into an array.
/// Serialized as a JSON string or number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PathSegment {
    /// A key of an object.
    Key(String),
    /// An index into an array (or, on an object, the key written in decimal).
    Index(usize),
}

impl Reference {
    /// Parses a reference such as `$.steps.plan.output.leads.0.email`.
    ///
    /// The grammar: `$.trigger[.PATH]`, `$.steps.ID.output[.PATH]`,
    /// `$.steps.ID.outputs[.PATH]`, `$.item[.PATH]` or `$.run.id`, where PATH
    /// is dot-separated segments; a segment of digits without a leading zero
    /// is an index, any other non-empty segment a key.
    pub fn parse(text: &str) -> Result<Reference, String> {
        const FORMS: &str = "use `$.trigger`, `$.steps.ID.output`, `$.steps.ID.outputs`, `$.item` or `$.run.id`, \
                             optionally followed by `.key` or `.index` segments";
        let Some(rest) = text.strip_prefix("$.") else {
            return Err(format!("`{text}` is not a reference: a reference starts with `$.`; {FORMS}"));
        };
        let parts: Vec<&str> = rest.split('.').collect();
        if let Some(empty) = parts.iter().position(|part| part.is_empty()) {
            let after = if empty == 0 { "$." } else { parts[empty - 1] };
            return Err(format!("`{text}` has an empty segment after `{after}`: remove the extra `.`"));
        }
        let mut segments = parts.into_iter();
        let root = match segments.next() {
            Some("trigger") => RefRoot::Trigger,
            Some("item") => RefRoot::Item,
            Some("run") => {
                return match (segments.next(), segments.next()) {
                    (Some("id"), None) => Ok(Reference { root: RefRoot::RunId, path: Vec::new() }),
                    _ => Err(format!("`{text}` is not a reference: the run offers only `$.run.id`")),
                };
            }
            Some("steps") => {
                let id = segments.next().ok_or_else(|| format!("`{text}` names no step: write `$.steps.ID.output`"))?;
                super::check_step_id(id).map_err(|e| format!("`{text}`: {e}"))?;
                match segments.next() {
                    Some("output") => RefRoot::StepOutput(id.to_owned()),
                    Some("outputs") => RefRoot::StepOutputs(id.to_owned()),
                    other => {
                        let found = other.map_or("nothing".to_owned(), |s| format!("`{s}`"));
                        return Err(format!(
                            "`{text}`: expected `output` or `outputs` after the step id, found {found}: \
                             write `$.steps.{id}.output` (or `.outputs` for a for_each step)"
                        ));
                    }
                }
            }
            Some(other) => return Err(format!("`{text}` starts at unknown root `{other}`: {FORMS}")),
            None => return Err(format!("`{text}` is incomplete: {FORMS}")),
        };
        Ok(Reference { root, path: segments.map(segment).collect() })
    }
}

/// Parses a path (`items.0.name`); the empty string is the empty path.
pub(super) fn parse_path(text: &str) -> Result<Vec<PathSegment>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    if text.split('.').any(str::is_empty) {
        return Err(format!("path `{text}` has an empty segment: separate keys and indexes with single dots"));
    }
    Ok(text.split('.').map(segment).collect())
}

fn segment(text: &str) -> PathSegment {
    let canonical_number = text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    match text.parse::<usize>() {
        Ok(index) if canonical_number => PathSegment::Index(index),
        _ => PathSegment::Key(text.to_owned()),
    }
}

impl fmt::Display for PathSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathSegment::Key(key) => f.write_str(key),
            PathSegment::Index(index) => write!(f, "{index}"),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.root {
            RefRoot::Trigger => f.write_str("$.trigger")?,
            RefRoot::StepOutput(id) => write!(f, "$.steps.{id}.output")?,
            RefRoot::StepOutputs(id) => write!(f, "$.steps.{id}.outputs")?,
            RefRoot::Item => f.write_str("$.item")?,
            RefRoot::RunId => f.write_str("$.run.id")?,
        }
        self.path.iter().try_for_each(|segment| write!(f, ".{segment}"))
    }
}

/// Serialized as its text, `$.steps.plan.output.leads`.
impl Serialize for Reference {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Reference::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// What a template string means: a literal, or a reference to resolve.
pub(super) enum TemplateString<'a> {
    Literal(&'a str),
    Reference(Result<Reference, String>),
}

/// Strings starting with `$$` stand for themselves minus the first `$`;
/// other strings starting with `$` are references; the rest are literal.
pub(super) fn classify(text: &str) -> TemplateString<'_> {
    if text.starts_with("$$") {
        TemplateString::Literal(&text[1..])
    } else if text.starts_with('$') {
        TemplateString::Reference(Reference::parse(text))
    } else {
        TemplateString::Literal(text)
    }
}

/// Every reference in `template`, with the path to the string that holds
/// it (empty when the template is itself a reference).
pub(super) fn references(template: &Value) -> Vec<(Vec<PathSegment>, Result<Reference, String>)> {
    fn walk(value: &Value, at: &mut Vec<PathSegment>, found: &mut Vec<(Vec<PathSegment>, Result<Reference, String>)>) {
        match value {
            Value::String(text) => {
                if let TemplateString::Reference(reference) = classify(text) {
                    found.push((at.clone(), reference));
                }
            }
            Value::Array(items) => items.iter().enumerate().for_each(|(i, item)| {
                at.push(PathSegment::Index(i));
                walk(item, at, found);
                at.pop();
            }),
            Value::Object(map) => map.iter().for_each(|(key, item)| {
                at.push(PathSegment::Key(key.clone()));
                walk(item, at, found);
                at.pop();
            }),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    let mut found = Vec::new();
    walk(template, &mut Vec::new(), &mut found);
    found
}

/// The values a reference may name while a step's input is built.
#[derive(Debug, Clone, Copy)]
pub struct RefContext<'a> {
    /// The run's input.
    pub trigger: &'a Value,
    /// Step id -> output; for a `for_each` step, the array of its outputs.
    pub outputs: &'a BTreeMap<String, Value>,
    /// The element the current `for_each` step runs for.
    pub item: Option<&'a Value>,
    pub run_id: &'a str,
}

/// Builds a value from `template`: every string that is a reference is
/// replaced by the value it names (see the module docs for `$$`); objects
/// and arrays are resolved element by element, keys are kept as written.
/// A reference to a value that does not exist is an error naming it.
pub fn resolve(template: &Value, ctx: &RefContext<'_>) -> Result<Value, String> {
    Ok(match template {
        Value::String(text) => match classify(text) {
            TemplateString::Literal(literal) => Value::String(literal.to_owned()),
            TemplateString::Reference(reference) => resolve_reference(&reference?, ctx)?,
        },
        Value::Array(items) => Value::Array(items.iter().map(|item| resolve(item, ctx)).collect::<Result<_, _>>()?),
        Value::Object(map) => Value::Object(
            map.iter().map(|(key, item)| Ok((key.clone(), resolve(item, ctx)?))).collect::<Result<_, String>>()?,
        ),
        Value::Null | Value::Bool(_) | Value::Number(_) => template.clone(),
    })
}

/// The value `reference` names in `ctx`; a missing value is an error
/// naming the reference and the part of it that exists.
pub fn resolve_reference(reference: &Reference, ctx: &RefContext<'_>) -> Result<Value, String> {
    let run_id;
    let mut value = match &reference.root {
        RefRoot::Trigger => ctx.trigger,
        RefRoot::StepOutput(id) | RefRoot::StepOutputs(id) => ctx
            .outputs
            .get(id)
            .ok_or_else(|| format!("`{reference}`: step `{id}` has not produced an output in this run"))?,
        RefRoot::Item => ctx.item.ok_or_else(|| format!("`{reference}`: `$.item` is bound only in a for_each step"))?,
        RefRoot::RunId => {
            run_id = Value::String(ctx.run_id.to_owned());
            &run_id
        }
    };
    for (depth, segment) in reference.path.iter().enumerate() {
        let at = Reference { root: reference.root.clone(), path: reference.path[..depth].to_vec() };
        value = child(value, segment).ok_or_else(|| match (value, segment) {
            (Value::Array(_), PathSegment::Key(key)) => {
                format!("`{reference}`: `{at}` is an array, so `{key}` must be an index")
            }
            (Value::Array(items), _) => {
                format!("`{reference}`: `{at}` has {} elements, no index {segment}", items.len())
            }
            (Value::Object(_), _) => format!("`{reference}`: `{at}` has no key `{segment}`"),
            (other, _) => format!("`{reference}`: `{at}` is {}, which has no `{segment}`", kind(other)),
        })?;
    }
    Ok(value.clone())
}

/// The value at `path` inside `value`, if there is one (how a branch finds
/// the value it switches on).
pub fn lookup<'v>(value: &'v Value, path: &[PathSegment]) -> Option<&'v Value> {
    path.iter().try_fold(value, child)
}

/// One step down: a key of an object, an index of an array, or an index
/// used as a key of an object (`items.1` on `{"1": ...}`).
fn child<'v>(value: &'v Value, segment: &PathSegment) -> Option<&'v Value> {
    match (segment, value) {
        (PathSegment::Key(key), Value::Object(map)) => map.get(key),
        (PathSegment::Index(index), Value::Object(map)) => map.get(&index.to_string()),
        (PathSegment::Index(index), Value::Array(items)) => items.get(*index),
        _ => None,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The text a branch compares with its cases: a string without quotes,
/// `true`/`false`, a number as JSON writes it, `null`, and arrays and
/// objects as compact JSON.
pub fn render_branch_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_each_form_and_round_trips() {
        for text in ["$.trigger", "$.trigger.a.0", "$.steps.a-b.output.items.0.name", "$.steps.x.outputs", "$.item.k"] {
            let reference = Reference::parse(text).unwrap();
            assert_eq!(reference.to_string(), text);
            let json = serde_json::to_value(&reference).unwrap();
            assert_eq!(serde_json::from_value::<Reference>(json).unwrap(), reference);
        }
        let reference = Reference::parse("$.steps.plan.output.leads.10.01").unwrap();
        assert_eq!(reference.root, RefRoot::StepOutput("plan".into()));
        assert_eq!(
            reference.path,
            [PathSegment::Key("leads".into()), PathSegment::Index(10), PathSegment::Key("01".into())]
        );
        assert_eq!(Reference::parse("$.run.id").unwrap().root, RefRoot::RunId);
    }

    #[test]
    fn malformed_references_say_why() {
        for (text, expected) in [
            ("trigger", "starts with `$.`"),
            ("$.trigger..a", "empty segment"),
            ("$.trigger.", "empty segment"),
            ("$.run.name", "only `$.run.id`"),
            ("$.steps.x", "expected `output` or `outputs`"),
            ("$.steps.x.result", "found `result`"),
            ("$.steps.X.output", "X"),
            ("$.input", "unknown root `input`"),
        ] {
            let err = Reference::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn resolve_replaces_references_in_nested_templates() {
        let trigger = json!({"lead": {"email": "a@example.com", "tags": ["x", "y"]}});
        let outputs = BTreeMap::from([
            ("plan".to_owned(), json!({"leads": [{"name": "Ada"}], "1": "one"})),
            ("fan".to_owned(), json!([1, 2])),
        ]);
        let item = json!({"n": 3});
        let ctx = RefContext { trigger: &trigger, outputs: &outputs, item: Some(&item), run_id: "r1" };
        let template = json!({
            "to": "$.trigger.lead.email",
            "names": ["$.steps.plan.output.leads.0.name", "$.item.n", {"run": "$.run.id"}],
            "all": "$.steps.fan.outputs",
            "digits": "$.steps.plan.output.1",
            "literal": "plain",
            "escaped": "$$.trigger",
            "n": 5,
        });
        assert_eq!(
            resolve(&template, &ctx).unwrap(),
            json!({
                "to": "a@example.com",
                "names": ["Ada", 3, {"run": "r1"}],
                "all": [1, 2],
                "digits": "one",
                "literal": "plain",
                "escaped": "$.trigger",
                "n": 5,
            })
        );
    }

    #[test]
    fn resolve_names_the_missing_reference() {
        let trigger = json!({"lead": {"tags": ["x"]}, "s": "text"});
        let outputs = BTreeMap::new();
        let ctx = RefContext { trigger: &trigger, outputs: &outputs, item: None, run_id: "r1" };
        for (template, expected) in [
            (json!({"a": ["$.trigger.lead.email"]}), "`$.trigger.lead.email`: `$.trigger.lead` has no key `email`"),
            (json!("$.trigger.lead.tags.3"), "`$.trigger.lead.tags` has 1 elements, no index 3"),
            (json!("$.trigger.lead.tags.x"), "is an array, so `x` must be an index"),
            (json!("$.trigger.s.len"), "`$.trigger.s` is a string, which has no `len`"),
            (json!("$.steps.plan.output"), "step `plan` has not produced an output"),
            (json!("$.item"), "bound only in a for_each step"),
            (json!("$trigger"), "starts with `$.`"),
        ] {
            let err = resolve(&template, &ctx).unwrap_err();
            assert!(err.contains(expected), "{template}: {err}");
        }
    }

    #[test]
    fn branch_values_render_as_text() {
        assert_eq!(render_branch_value(&json!("yes")), "yes");
        assert_eq!(render_branch_value(&json!(true)), "true");
        assert_eq!(render_branch_value(&json!(42)), "42");
        assert_eq!(render_branch_value(&json!(0.5)), "0.5");
        assert_eq!(render_branch_value(&json!(null)), "null");
        assert_eq!(render_branch_value(&json!({"a": [1]})), r#"{"a":[1]}"#);
    }

    #[test]
    fn references_lists_each_reference_with_its_location() {
        let template = json!({"a": ["x", "$.item"], "b": "$$.lit", "c": "$.bad"});
        let found = references(&template);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].0, [PathSegment::Key("a".into()), PathSegment::Index(1)]);
        assert!(found[1].1.is_err());
    }
}
