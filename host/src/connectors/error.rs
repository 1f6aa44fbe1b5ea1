//! Why a connector call did not produce its result. Messages name the
//! connector and say what to do; none contains a secret value.

use super::egress::EgressRefusal;
use crate::bindings::GuestError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    #[error("connector `{connector}` has an invalid grant: {detail}")]
    InvalidGrant { connector: String, detail: String },
    #[error(
        "connector `{connector}` cannot be instantiated: {detail}; rebuild it against keel's wit/ (world `connector`) and reinstall it"
    )]
    Load { connector: String, detail: String },
    #[error("connector `{connector}` was refused network access: {refusal}{}", then_failed(.then))]
    EgressRefused { connector: String, refusal: EgressRefusal, then: Option<GuestError> },
    #[error("connector `{connector}` returned an error: {error}; {}", retry_advice(*.retry_safe))]
    Failed { connector: String, error: GuestError, retry_safe: bool },
    #[error(
        "connector `{connector}` timed out after {limit_ms} ms and was stopped: whether the effect happened is unknown, check the remote system before retrying; raise `limits.call_timeout_ms` in keel.toml if it is just slow"
    )]
    Timeout { connector: String, limit_ms: u128 },
    #[error(
        "connector `{connector}` exceeded its memory limit of {limit_mib} MiB and was stopped: whether the effect happened is unknown; raise `limits.memory_mib` in keel.toml or fix the connector"
    )]
    MemoryLimit { connector: String, limit_mib: usize },
    #[error("connector `{connector}` trapped: {detail}; whether the effect happened is unknown")]
    Trap { connector: String, detail: String },
    #[error("connector `{connector}` describes its actions wrongly: {detail}; fix its `describe()`")]
    InvalidDescribe { connector: String, detail: String },
    #[error(
        "connector `{connector}` finished but its receipt {detail}: the effect has probably happened; fix the connector to return a JSON receipt"
    )]
    InvalidReceipt { connector: String, detail: String },
}

fn then_failed(then: &Option<GuestError>) -> String {
    then.as_ref().map(|e| format!(" (the connector then returned: {e})")).unwrap_or_default()
}

fn retry_advice(retry_safe: bool) -> &'static str {
    if retry_safe {
        "the effect did not happen and retrying later with the same idempotency key may succeed"
    } else {
        "the effect did not happen and retrying will not help until the cause is fixed"
    }
}

impl ConnectorError {
    /// True when the effect may or may not have happened (the connector
    /// stopped mid-call, or finished with an unreadable receipt): reconcile
    /// before retrying, unless the action kind is idempotent.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ConnectorError::Timeout { .. }
                | ConnectorError::MemoryLimit { .. }
                | ConnectorError::Trap { .. }
                | ConnectorError::InvalidReceipt { .. }
        )
    }

    /// True when the connector reported a transient failure (`unavailable`,
    /// `budget-exceeded`): the effect did not happen and a later retry with
    /// the same key may succeed.
    pub fn retry_safe(&self) -> bool {
        matches!(self, ConnectorError::Failed { retry_safe: true, .. })
    }
}
