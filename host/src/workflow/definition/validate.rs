//! Turns the file as written into a [`WorkflowDef`]: the top level, the
//! trigger and the limits here, the steps in [`steps`](super::steps).

use std::fmt::Display;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;
use toml::Spanned;

use super::locate::{column_of, field_at, field_name, line_of, span_at};
use super::raw::{RawFile, RawLimits, RawTrigger, to_json};
use super::reference::PathSegment;
use super::{AgentCheck, DEFAULT_CONCURRENCY, DefinitionError, MAX_CONCURRENCY, Trigger, WorkflowDef, WorkflowLimits};
use crate::memory::records::validate_collection_name;

/// toml's own error, placed at its line and column, naming the field when
/// the file parses far enough to tell.
pub(super) fn toml_error(path: &Path, text: &str, error: &toml::de::Error) -> DefinitionError {
    let offset = error.span().map_or(0, |span| span.start);
    let mut field = error.span().and_then(|_| field_at(text, offset)).map(|at| field_name(&at));
    let mut message = error.message().trim_end().to_owned();
    // serde reports a missing field at its table: name the field instead.
    if let Some(missing) = message.strip_prefix("missing field `").and_then(|rest| rest.strip_suffix('`')) {
        let missing = missing.to_owned();
        field = Some(match field {
            Some(table) => format!("{table}.{missing}"),
            None => missing,
        });
        message = "missing: this field is required".to_owned();
    }
    // Syntax errors name no field: quote what the span covers instead
    // (toml says "duplicate key" without the key).
    if field.is_none()
        && let Some(snippet) = error.span().and_then(|span| text.get(span))
        && !snippet.is_empty()
        && snippet.len() <= 60
        && !snippet.contains('\n')
    {
        message = format!("{message}: `{snippet}`");
    }
    DefinitionError::Toml {
        path: path.to_owned(),
        line: line_of(text, offset),
        column: column_of(text, offset),
        field,
        message,
    }
}

/// Builds errors that point into one file.
pub(super) struct Checker<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Checker<'_> {
    pub fn error(&self, offset: usize, field: impl Into<String>, message: impl Into<String>) -> DefinitionError {
        DefinitionError::Invalid {
            path: self.path.to_owned(),
            line: line_of(self.text, offset),
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn at<T>(&self, value: &Spanned<T>, field: impl Into<String>, message: impl Into<String>) -> DefinitionError {
        self.error(value.span().start, field, message)
    }

    /// The value, if it lies in `min..=max`.
    pub fn range<T: PartialOrd + Copy + Display>(
        &self,
        value: &Spanned<T>,
        field: &str,
        min: T,
        max: T,
    ) -> Result<T, DefinitionError> {
        let v = *value.get_ref();
        if v < min || v > max {
            return Err(self.at(value, field, format!("{v} is out of range: use {min} to {max}")));
        }
        Ok(v)
    }

    /// The value at `at` converted to JSON; an error names the exact place.
    pub fn json(&self, value: &Spanned<toml::Value>, at: &[PathSegment]) -> Result<Value, DefinitionError> {
        to_json(value.get_ref()).map_err(|(inner, message)| {
            let full: Vec<PathSegment> = at.iter().cloned().chain(inner).collect();
            self.error(self.offset_of(&full, value.span().start), field_name(&full), message)
        })
    }

    /// Where the value at `at` starts, or `fallback` if it cannot be found.
    pub fn offset_of(&self, at: &[PathSegment], fallback: usize) -> usize {
        span_at(self.text, at).map_or(fallback, |span| span.start)
    }
}

pub(super) fn key(name: &str) -> PathSegment {
    PathSegment::Key(name.to_owned())
}

pub(super) fn build(
    path: &Path,
    text: &str,
    name: String,
    raw: RawFile,
    agents: &dyn Fn(&str) -> AgentCheck,
) -> Result<WorkflowDef, DefinitionError> {
    let checker = Checker { path, text };
    let trigger = trigger(&checker, raw.trigger)?;
    let limits = limits(&checker, raw.limits.unwrap_or_default())?;
    let steps = super::steps::build(&checker, raw.steps, agents)?;
    Ok(WorkflowDef { name, description: raw.description, trigger, limits, steps, source: path.to_owned() })
}

fn limits(c: &Checker<'_>, raw: RawLimits) -> Result<WorkflowLimits, DefinitionError> {
    let concurrency = match &raw.concurrency {
        Some(value) => c.range(value, "limits.concurrency", 1, MAX_CONCURRENCY)?,
        None => DEFAULT_CONCURRENCY,
    };
    let run_timeout_ms = match &raw.run_timeout_ms {
        Some(value) if *value.get_ref() == 0 => {
            return Err(c.at(value, "limits.run_timeout_ms", "0 is out of range: use at least 1, or remove it"));
        }
        other => other.as_ref().map(|value| *value.get_ref()),
    };
    Ok(WorkflowLimits { concurrency, run_timeout_ms })
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Manual,
    Schedule,
    Webhook,
    Inbox,
    Record,
}

impl Kind {
    const ALL: [(&'static str, Kind); 5] = [
        ("manual", Kind::Manual),
        ("schedule", Kind::Schedule),
        ("webhook", Kind::Webhook),
        ("inbox", Kind::Inbox),
        ("record", Kind::Record),
    ];

    fn name(self) -> &'static str {
        Kind::ALL.iter().find(|(_, kind)| *kind == self).map_or("", |(name, _)| name)
    }

    /// The kind a trigger field belongs to.
    fn of_field(field: &str) -> Kind {
        match field {
            "cron" | "timezone" | "input" => Kind::Schedule,
            "path" => Kind::Webhook,
            "folder" | "pattern" => Kind::Inbox,
            _ => Kind::Record,
        }
    }
}

fn trigger(c: &Checker<'_>, raw: Option<Spanned<RawTrigger>>) -> Result<Trigger, DefinitionError> {
    let Some(raw) = raw else { return Ok(Trigger::Manual) };
    let header = raw.span().start;
    let t = raw.into_inner();
    let Some(kind) = Kind::ALL.iter().find(|(name, _)| name == t.kind.get_ref()).map(|(_, kind)| *kind) else {
        let message = format!(
            "unknown trigger kind `{}`: use \"manual\", \"schedule\", \"webhook\", \"inbox\" or \"record\"",
            t.kind.get_ref()
        );
        return Err(c.at(&t.kind, "trigger.kind", message));
    };
    for (field, offset) in t.present() {
        let owner = Kind::of_field(field);
        if owner != kind {
            let message = format!(
                "not used by kind = \"{}\" (it belongs to kind = \"{}\"): remove it",
                kind.name(),
                owner.name()
            );
            return Err(c.error(offset, format!("trigger.{field}"), message));
        }
    }
    let required = |value: Option<Spanned<String>>, field: &str, example: &str| {
        let value = value.ok_or_else(|| {
            let message = format!("missing: kind = \"{}\" needs it, e.g. {field} = {example}", kind.name());
            c.error(header, format!("trigger.{field}"), message)
        })?;
        non_empty(c, &value, &format!("trigger.{field}"))?;
        Ok::<_, DefinitionError>(value)
    };
    Ok(match kind {
        Kind::Manual => Trigger::Manual,
        Kind::Schedule => {
            let cron = required(t.cron, "cron", r#""0 9 * * MON-FRI""#)?.into_inner();
            let timezone = match t.timezone {
                Some(timezone) => {
                    non_empty(c, &timezone, "trigger.timezone")?;
                    timezone.into_inner()
                }
                None => "UTC".to_owned(),
            };
            let input = match &t.input {
                Some(input) => c.json(input, &[key("trigger"), key("input")])?,
                None => Value::Object(serde_json::Map::new()),
            };
            Trigger::Schedule { cron, timezone, input }
        }
        Kind::Webhook => {
            let path = required(t.path, "path", r#""leads""#)?;
            check_webhook_path(path.get_ref()).map_err(|e| c.at(&path, "trigger.path", e))?;
            Trigger::Webhook { path: path.into_inner() }
        }
        Kind::Inbox => {
            let folder = required(t.folder, "folder", r#""inbox/leads""#)?;
            let folder = inbox_folder(folder.get_ref()).map_err(|e| c.at(&folder, "trigger.folder", e))?;
            let pattern = match t.pattern {
                Some(pattern) => {
                    non_empty(c, &pattern, "trigger.pattern")?;
                    if pattern.get_ref().contains(['/', '\\']) {
                        let message = "the pattern matches file names, not paths: move the folder part into `folder`";
                        return Err(c.at(&pattern, "trigger.pattern", message));
                    }
                    pattern.into_inner()
                }
                None => "*".to_owned(),
            };
            Trigger::Inbox { folder, pattern }
        }
        Kind::Record => {
            let collection = required(t.collection, "collection", r#""leads""#)?;
            validate_collection_name(collection.get_ref())
                .map_err(|e| c.at(&collection, "trigger.collection", e.to_string()))?;
            Trigger::Record { collection: collection.into_inner() }
        }
    })
}

fn non_empty(c: &Checker<'_>, value: &Spanned<String>, field: &str) -> Result<(), DefinitionError> {
    if value.get_ref().trim().is_empty() {
        return Err(c.at(value, field, "empty: give it a value, or remove it where it is optional"));
    }
    Ok(())
}

fn check_webhook_path(path: &str) -> Result<(), String> {
    let segment_ok =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !path.split('/').all(segment_ok) {
        return Err(format!(
            "`{path}` is not a valid webhook path: use lowercase letters, digits and '-', \
             in segments separated by single '/' (e.g. \"leads\" or \"crm/leads\")"
        ));
    }
    Ok(())
}

/// The folder relative to the workspace, without `.` segments, or why it
/// would leave the workspace.
fn inbox_folder(text: &str) -> Result<PathBuf, String> {
    const EXAMPLE: &str = "name a folder inside the workspace, relative to it, e.g. \"inbox/leads\"";
    if text.contains('\\') {
        return Err(format!("`{text}` contains '\\': separate folders with '/'"));
    }
    let mut folder = PathBuf::new();
    for component in Path::new(text).components() {
        match component {
            Component::Normal(part) => folder.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("`{text}` uses `..`, which may leave the workspace: {EXAMPLE}"));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("`{text}` is absolute, outside the workspace: {EXAMPLE}"));
            }
        }
    }
    if folder.as_os_str().is_empty() {
        return Err(format!("`{text}` is the workspace itself: {EXAMPLE}"));
    }
    Ok(folder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_paths() {
        for ok in ["leads", "crm/leads", "a-1/b2"] {
            assert!(check_webhook_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/leads", "leads/", "a//b", "Leads", "a_b", "a b"] {
            assert!(check_webhook_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn inbox_folders_stay_inside_the_workspace() {
        assert_eq!(inbox_folder("./inbox/leads/").unwrap(), PathBuf::from("inbox/leads"));
        for (bad, why) in [("../x", "`..`"), ("a/../../x", "`..`"), ("/etc", "absolute"), (".", "workspace itself")] {
            let err = inbox_folder(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(inbox_folder("a\\..\\b").is_err());
    }
}
