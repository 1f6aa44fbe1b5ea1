//! The file as written: serde types that keep the span of every field a
//! later check may complain about. Validation turns them into a
//! [`WorkflowDef`](super::WorkflowDef).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use super::reference::PathSegment;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub description: Option<String>,
    pub trigger: Option<Spanned<RawTrigger>>,
    pub limits: Option<RawLimits>,
    pub steps: Option<Spanned<Vec<Spanned<RawStep>>>>,
}

/// All trigger fields; which ones a kind accepts is checked afterwards, so
/// a misplaced field is reported with the kind that does not use it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrigger {
    pub kind: Spanned<String>,
    pub cron: Option<Spanned<String>>,
    pub timezone: Option<Spanned<String>>,
    pub input: Option<Spanned<toml::Value>>,
    pub path: Option<Spanned<String>>,
    pub folder: Option<Spanned<String>>,
    pub pattern: Option<Spanned<String>>,
    pub collection: Option<Spanned<String>>,
}

impl RawTrigger {
    /// The fields that are set, by name, with the start of their span.
    pub fn present(&self) -> Vec<(&'static str, usize)> {
        let strings = [
            ("cron", &self.cron),
            ("timezone", &self.timezone),
            ("path", &self.path),
            ("folder", &self.folder),
            ("pattern", &self.pattern),
            ("collection", &self.collection),
        ];
        let mut present: Vec<_> =
            strings.into_iter().filter_map(|(name, field)| Some((name, field.as_ref()?.span().start))).collect();
        present.extend(self.input.as_ref().map(|input| ("input", input.span().start)));
        present
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub concurrency: Option<Spanned<u32>>,
    pub run_timeout_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub id: Spanned<String>,
    pub agent: Spanned<String>,
    pub input: Option<Spanned<toml::Value>>,
    pub timeout_ms: Option<Spanned<u64>>,
    pub retry: Option<Spanned<RawRetry>>,
    pub next: Option<Spanned<String>>,
    pub branch: Option<Spanned<RawBranch>>,
    pub for_each: Option<Spanned<String>>,
    pub max_parallel: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub attempts: Option<Spanned<u32>>,
    pub backoff_ms: Option<Spanned<u64>>,
    pub max_backoff_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBranch {
    pub on: Spanned<String>,
    pub cases: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    pub default: Option<Spanned<String>>,
}

/// Converts a TOML value to JSON: datetimes become their RFC 3339 text;
/// a float JSON cannot hold (nan, inf) is an error at its path.
pub(super) fn to_json(value: &toml::Value) -> Result<Value, (Vec<PathSegment>, String)> {
    fn convert(value: &toml::Value, at: &mut Vec<PathSegment>) -> Result<Value, (Vec<PathSegment>, String)> {
        Ok(match value {
            toml::Value::String(text) => Value::String(text.clone()),
            toml::Value::Integer(n) => Value::from(*n),
            toml::Value::Float(x) => match serde_json::Number::from_f64(*x) {
                Some(number) => Value::Number(number),
                None => return Err((at.clone(), format!("{x} cannot be represented in JSON: use a finite number"))),
            },
            toml::Value::Boolean(b) => Value::Bool(*b),
            toml::Value::Datetime(datetime) => Value::String(datetime.to_string()),
            toml::Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    at.push(PathSegment::Index(index));
                    out.push(convert(item, at)?);
                    at.pop();
                }
                Value::Array(out)
            }
            toml::Value::Table(table) => {
                let mut out = serde_json::Map::new();
                for (key, item) in table {
                    at.push(PathSegment::Key(key.clone()));
                    out.insert(key.clone(), convert(item, at)?);
                    at.pop();
                }
                Value::Object(out)
            }
        })
    }
    convert(value, &mut Vec::new())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn toml_values_convert_to_json() {
        let value: toml::Value =
            toml::from_str("a = 1\nb = [true, 1.5]\nc = 1979-05-27T07:32:00Z\nd = { e = 'x' }").unwrap();
        assert_eq!(
            to_json(&value).unwrap(),
            json!({"a": 1, "b": [true, 1.5], "c": "1979-05-27T07:32:00Z", "d": {"e": "x"}})
        );
        let value: toml::Value = toml::from_str("a = [1, nan]").unwrap();
        let (at, message) = to_json(&value).unwrap_err();
        assert_eq!(at, [PathSegment::Key("a".into()), PathSegment::Index(1)]);
        assert!(message.contains("JSON"), "{message}");
    }
}
