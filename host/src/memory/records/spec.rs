//! Collection declarations: the operator's schema and indexes per
//! collection, checked and compiled once when the workspace config loads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{MAX_FIELD_PATH_BYTES, MAX_INDEXES_PER_COLLECTION, RecordError, validate_collection_name};

/// What the operator declares for one collection in the workspace config.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionSpec {
    /// A JSON Schema every record must match; `None` accepts any object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Fields to index: top-level names or dotted paths (`contact.email`).
    #[serde(default)]
    pub indexes: Vec<String>,
    /// Records not updated for this long are deleted by the reclaimer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_hours: Option<f64>,
}

/// A field path, split once: `contact.email` -> [`contact`, `email`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FieldPath {
    text: String,
    segments: Vec<String>,
}

impl FieldPath {
    /// Parses `text`, or says what is wrong with it.
    pub(super) fn parse(text: &str) -> Result<FieldPath, String> {
        if text.is_empty() || text.len() > MAX_FIELD_PATH_BYTES {
            return Err(format!("field path `{text}` must be 1 to {MAX_FIELD_PATH_BYTES} bytes"));
        }
        if text.split('.').any(str::is_empty) {
            return Err(format!("field path `{text}` has an empty part: write names joined by single dots"));
        }
        Ok(FieldPath { text: text.to_owned(), segments: text.split('.').map(str::to_owned).collect() })
    }

    pub(super) fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this path in `data`, if every step is an object member.
    pub(super) fn lookup<'a>(&self, data: &'a Value) -> Option<&'a Value> {
        self.segments.iter().try_fold(data, |v, s| v.as_object()?.get(s))
    }
}

/// One declared collection, ready to use.
struct Collection {
    spec: CollectionSpec,
    validator: Option<jsonschema::Validator>,
    indexes: Vec<FieldPath>,
}

/// Every declared collection, with schemas compiled once. Collections that
/// are not declared may still be used, without a schema or indexes.
#[derive(Default)]
pub struct Collections {
    by_name: BTreeMap<String, Collection>,
}

impl std::fmt::Debug for Collections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.by_name.iter().map(|(k, c)| (k, &c.spec))).finish()
    }
}

impl Collections {
    /// Checks every declaration and compiles its schema; the first bad one
    /// is reported with its collection's name.
    pub fn new(specs: BTreeMap<String, CollectionSpec>) -> Result<Collections, RecordError> {
        let mut by_name = BTreeMap::new();
        for (name, spec) in specs {
            validate_collection_name(&name)?;
            let invalid = |reason: String| RecordError::InvalidCollection { collection: name.clone(), reason };
            if spec.indexes.len() > MAX_INDEXES_PER_COLLECTION {
                return Err(invalid(format!(
                    "{} indexes declared, at most {MAX_INDEXES_PER_COLLECTION} are allowed: drop the ones no query needs",
                    spec.indexes.len()
                )));
            }
            let mut indexes: Vec<FieldPath> = Vec::with_capacity(spec.indexes.len());
            for field in &spec.indexes {
                let path = FieldPath::parse(field).map_err(|e| invalid(format!("index {e}")))?;
                if indexes.contains(&path) {
                    return Err(invalid(format!("index `{field}` is declared twice: keep one")));
                }
                indexes.push(path);
            }
            let validator = match &spec.schema {
                None => None,
                Some(schema) => Some(compile(schema).map_err(|e| invalid(format!("its schema is not usable: {e}")))?),
            };
            by_name.insert(name, Collection { spec, validator, indexes });
        }
        Ok(Collections { by_name })
    }

    /// The declaration of `collection`, if there is one.
    pub fn spec(&self, collection: &str) -> Option<&CollectionSpec> {
        self.by_name.get(collection).map(|c| &c.spec)
    }

    /// Names of the declared collections, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Whether `field` is a declared index of `collection`.
    pub fn is_indexed(&self, collection: &str, field: &str) -> bool {
        self.indexes(collection).iter().any(|p| p.as_str() == field)
    }

    pub(super) fn indexes(&self, collection: &str) -> &[FieldPath] {
        self.by_name.get(collection).map_or(&[], |c| &c.indexes)
    }

    pub(super) fn validator(&self, collection: &str) -> Option<&jsonschema::Validator> {
        self.by_name.get(collection).and_then(|c| c.validator.as_ref())
    }

    /// Declared collections and their indexes, for index maintenance.
    pub(super) fn declared(&self) -> impl Iterator<Item = (&str, &[FieldPath])> {
        self.by_name.iter().map(|(name, c)| (name.as_str(), c.indexes.as_slice()))
    }
}

/// Compiles a schema. Formats (`email`, `date`...) are asserted, since an
/// operator who writes one expects it enforced; `$ref`s to other documents
/// are refused, so loading a config never touches the network or files.
fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options().should_validate_formats(true).offline().build(schema).map_err(|e| {
        let at = e.instance_path().as_str();
        if at.is_empty() { e.to_string() } else { format!("{e} (at `{at}` in the schema)") }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn one(name: &str, spec: CollectionSpec) -> Result<Collections, RecordError> {
        Collections::new(BTreeMap::from([(name.to_owned(), spec)]))
    }

    #[test]
    fn a_bad_schema_is_reported_with_its_collection() {
        let spec =
            CollectionSpec { schema: Some(json!({"type": "no-such-type"})), indexes: vec![], retention_hours: None };
        let err = one("leads", spec).unwrap_err();
        assert!(matches!(&err, RecordError::InvalidCollection { collection, .. } if collection == "leads"), "{err:?}");
        assert!(err.to_string().contains("`leads`") && err.to_string().contains("schema"), "{err}");
    }

    #[test]
    fn external_refs_are_refused_at_load() {
        let spec = CollectionSpec {
            schema: Some(json!({"$ref": "https://example.com/s.json"})),
            indexes: vec![],
            retention_hours: None,
        };
        assert!(matches!(one("leads", spec), Err(RecordError::InvalidCollection { .. })));
    }

    #[test]
    fn index_declarations_are_checked() {
        for (indexes, needle) in [
            (vec!["a..b".to_owned()], "empty part"),
            (vec!["".to_owned()], "1 to"),
            (vec!["a".to_owned(), "a".to_owned()], "twice"),
            ((0..=MAX_INDEXES_PER_COLLECTION).map(|i| format!("f{i}")).collect(), "at most"),
        ] {
            let err = one("c", CollectionSpec { schema: None, indexes, retention_hours: None }).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
        let err = one("bad name", CollectionSpec::default()).unwrap_err();
        assert!(matches!(err, RecordError::InvalidName { .. }), "{err:?}");
    }

    #[test]
    fn specs_deny_unknown_fields_and_default_indexes() {
        let spec: CollectionSpec = serde_json::from_value(json!({"schema": {"type": "object"}})).unwrap();
        assert!(spec.indexes.is_empty());
        assert!(serde_json::from_value::<CollectionSpec>(json!({"index": ["a"]})).is_err());
        let from_toml: BTreeMap<String, CollectionSpec> =
            toml::from_str("[customers]\nindexes = [\"contact.email\"]\nschema = { type = \"object\" }\n").unwrap();
        let reg = Collections::new(from_toml).unwrap();
        assert!(reg.is_indexed("customers", "contact.email"));
        assert!(reg.validator("customers").is_some());
        assert!(!reg.is_indexed("other", "contact.email"));
    }

    #[test]
    fn field_paths_reach_into_nested_objects_only() {
        let p = FieldPath::parse("contact.email").unwrap();
        assert_eq!(p.lookup(&json!({"contact": {"email": "a@b"}})), Some(&json!("a@b")));
        assert_eq!(p.lookup(&json!({"contact": [{"email": "a@b"}]})), None);
        assert_eq!(p.lookup(&json!({"contact.email": "x"})), None);
    }

    #[test]
    fn registries_can_be_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Collections>();
    }
}
