//! Which installed connector serves which action kind, with the payload
//! schema each declared in `describe()`. Stored at install, loaded by the
//! kernel at start; proposals are validated against it before the gate
//! decides anything else.

use std::collections::BTreeMap;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::memory::committer::{CustomMutation, Mutation};
use crate::memory::{Store, StoreError};

/// Action kind -> JSON [`ServedKind`].
const KINDS: TableDefinition<&str, &str> = TableDefinition::new("kernel_action_kinds");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(KINDS)?;
    Ok(())
}

/// One action kind as its connector describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindSpec {
    pub kind: String,
    pub payload_schema: Value,
    /// The kind that undoes this one, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<String>,
    /// Safe to retry with the same idempotency key.
    pub idempotent: bool,
}

/// A kind and the connector that serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServedKind {
    pub connector: String,
    pub spec: KindSpec,
}

/// A served kind with its schema compiled.
pub struct RegisteredKind {
    pub served: ServedKind,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for RegisteredKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.served.fmt(f)
    }
}

impl RegisteredKind {
    fn compile(served: ServedKind) -> Result<RegisteredKind, String> {
        // Offline: a schema never makes the host fetch a remote `$ref`.
        let options = jsonschema::options().should_validate_formats(true).offline();
        let validator = options.build(&served.spec.payload_schema).map_err(|e| {
            format!(
                "connector `{}` declares an invalid payload schema for `{}`: {e}",
                served.connector, served.spec.kind
            )
        })?;
        Ok(RegisteredKind { served, validator })
    }

    /// Checks `payload`; the error lists what is wrong, for the agent.
    pub fn validate(&self, payload: &Value) -> Result<(), String> {
        let problems: Vec<String> = self
            .validator
            .iter_errors(payload)
            .take(5)
            .map(|e| format!("{} at `{}`", e, e.instance_path().as_str()))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("payload for `{}` does not match its schema: {}", self.served.spec.kind, problems.join("; ")))
        }
    }
}

/// Every served kind.
#[derive(Debug, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Arc<RegisteredKind>>,
}

impl Registry {
    pub fn load(store: &Store) -> Result<Registry, StoreError> {
        let txn = store.db().begin_read()?;
        let table = txn.open_table(KINDS)?;
        let mut kinds = BTreeMap::new();
        for item in table.iter()? {
            let (k, v) = item?;
            let corrupt = |detail: String| StoreError::Corrupt { what: format!("action kind `{}`", k.value()), detail };
            let served: ServedKind = serde_json::from_str(v.value()).map_err(|e| corrupt(e.to_string()))?;
            kinds.insert(k.value().to_owned(), Arc::new(RegisteredKind::compile(served).map_err(corrupt)?));
        }
        Ok(Registry { kinds })
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<RegisteredKind>> {
        self.kinds.get(kind)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ServedKind> {
        self.kinds.values().map(|k| &k.served)
    }

    /// Checks that `connector` may serve `specs`: valid schemas, and no kind
    /// another installed connector serves. Errors say what to do.
    pub fn check_new(&self, connector: &str, specs: &[KindSpec]) -> Result<(), String> {
        if specs.is_empty() {
            return Err(format!("connector `{connector}` describes no action kinds: it would serve nothing"));
        }
        for spec in specs {
            if let Some(other) = self.kinds.get(&spec.kind).filter(|k| k.served.connector != connector) {
                return Err(format!(
                    "`{}` is already served by connector `{}`: remove it first (`keel remove {}`)",
                    spec.kind, other.served.connector, other.served.connector
                ));
            }
            RegisteredKind::compile(ServedKind { connector: connector.to_owned(), spec: spec.clone() })?;
        }
        Ok(())
    }
}

/// Records that `connector` serves `specs` (after [`Registry::check_new`]),
/// replacing what it served before.
pub fn register(connector: &str, specs: Vec<KindSpec>) -> Mutation {
    let connector = connector.to_owned();
    let apply = Arc::new(move |txn: &WriteTransaction| {
        remove_in(txn, &connector)?;
        let mut table = txn.open_table(KINDS)?;
        for spec in &specs {
            let served = ServedKind { connector: connector.clone(), spec: spec.clone() };
            table.insert(spec.kind.as_str(), serde_json::to_string(&served).expect("serializes").as_str())?;
        }
        Ok(())
    });
    Mutation::Custom(CustomMutation { label: "kernel.register_kinds", apply })
}

/// Forgets the kinds `connector` served.
pub fn unregister(connector: &str) -> Mutation {
    let connector = connector.to_owned();
    let apply = Arc::new(move |txn: &WriteTransaction| remove_in(txn, &connector));
    Mutation::Custom(CustomMutation { label: "kernel.unregister_kinds", apply })
}

fn remove_in(txn: &WriteTransaction, connector: &str) -> Result<(), StoreError> {
    let mut table = txn.open_table(KINDS)?;
    let mut theirs = Vec::new();
    for item in table.iter()? {
        let (k, v) = item?;
        let served: Result<ServedKind, _> = serde_json::from_str(v.value());
        if served.is_ok_and(|s| s.connector == connector) {
            theirs.push(k.value().to_owned());
        }
    }
    for kind in theirs {
        table.remove(kind.as_str())?;
    }
    Ok(())
}
