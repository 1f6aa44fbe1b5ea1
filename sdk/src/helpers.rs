//! Typed conveniences on the generated WIT types.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Outcome, Task};

impl Task {
    /// Parses the task's JSON input into `T`, or fails with `invalid-input`
    /// naming what did not match.
    pub fn input_json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.input).map_err(|e| Error::InvalidInput(format!("task input: {e}")))
    }
}

impl Outcome {
    /// Builds an outcome whose output is `value` serialized as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Outcome, Error> {
        let output = serde_json::to_string(value)
            .map_err(|e| Error::InvalidInput(format!("outcome is not serializable: {e}")))?;
        Ok(Outcome { output })
    }
}

impl Error {
    /// The WIT case name (`denied`, `invalid-input`, `budget-exceeded`,
    /// `pending-approval`, `unavailable`) and its detail: for agents that
    /// report what the host said instead of failing.
    pub fn case(&self) -> (&'static str, &str) {
        match self {
            Error::Denied(d) => ("denied", d),
            Error::InvalidInput(d) => ("invalid-input", d),
            Error::BudgetExceeded(d) => ("budget-exceeded", d),
            Error::PendingApproval(d) => ("pending-approval", d),
            Error::Unavailable(d) => ("unavailable", d),
        }
    }
}
