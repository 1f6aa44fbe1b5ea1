//! Where secrets come from: the operator names, per secret, an environment
//! variable or a file; `keel.toml` holds only those names, never a value,
//! and the database never holds one either.
//!
//! Threat: a secret (an API key, a password) leaking through the workspace
//! files, logs, the audit log, error messages or API output. Values are
//! read when a connector call needs them, handed only to plugins granted
//! that secret, and never formatted: [`SecretValue`]'s `Debug` and
//! `Display` print a placeholder. Not stopped: a granted connector sending
//! its own secret somewhere it may reach; grant outbound hosts with care.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[secrets.NAME]`: where the value of secret NAME is read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum SecretSource {
    /// An environment variable of the `keel` process.
    Env(String),
    /// A file (e.g. a mounted Docker or systemd credential); one trailing
    /// newline is dropped.
    File(PathBuf),
}

/// A secret's value. It never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl std::fmt::Display for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A secret that could not be read; names the secret and the source, never
/// a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret `{name}` is not declared: add [secrets.{name}] with env = \"VAR\" or file = \"PATH\" to keel.toml")]
    Undeclared { name: String },
    #[error("secret `{name}`: environment variable {var} is not set; set it for the keel process")]
    MissingEnv { name: String, var: String },
    #[error("secret `{name}`: cannot read {path}: {reason}")]
    File { name: String, path: PathBuf, reason: String },
}

/// Reads secret `name` as `sources` declare it.
pub fn read(sources: &BTreeMap<String, SecretSource>, name: &str) -> Result<SecretValue, SecretError> {
    match sources.get(name) {
        None => Err(SecretError::Undeclared { name: name.to_owned() }),
        Some(SecretSource::Env(var)) => std::env::var(var)
            .map(SecretValue)
            .map_err(|_| SecretError::MissingEnv { name: name.to_owned(), var: var.clone() }),
        Some(SecretSource::File(path)) => std::fs::read_to_string(path)
            .map(|s| SecretValue(s.strip_suffix('\n').unwrap_or(&s).to_owned()))
            .map_err(|e| SecretError::File { name: name.to_owned(), path: path.clone(), reason: e.kind().to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_never_print_and_errors_say_where_to_look() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cr3t-canary\n").unwrap();
        let sources = BTreeMap::from([
            ("TOKEN".to_owned(), SecretSource::File(file)),
            ("KEY".to_owned(), SecretSource::Env("KEEL_TEST_SURELY_UNSET_VAR".into())),
        ]);
        let value = read(&sources, "TOKEN").unwrap();
        assert_eq!(value.expose(), "s3cr3t-canary");
        assert!(!format!("{value:?} {value}").contains("canary"));
        let err = read(&sources, "KEY").unwrap_err().to_string();
        assert!(err.contains("KEEL_TEST_SURELY_UNSET_VAR is not set"), "{err}");
        assert!(read(&sources, "NOPE").unwrap_err().to_string().contains("[secrets.NOPE]"));
    }

    #[test]
    fn sources_parse_from_toml() {
        let s: BTreeMap<String, SecretSource> =
            toml::from_str("SMTP = { env = \"SMTP_PASSWORD\" }\nAPI = { file = \"/run/secrets/api\" }").unwrap();
        assert_eq!(s["SMTP"], SecretSource::Env("SMTP_PASSWORD".into()));
    }
}
