//! Exit codes of the `keel` binary.

use crate::runtime::CallError;

/// Success.
pub const OK: u8 = 0;
/// Any error not listed below: bad input, missing workspace, invalid plugin.
pub const ERROR: u8 = 1;
/// Wrong command-line usage (clap's own code).
pub const USAGE: u8 = 2;
/// The plugin ran and returned an error value (`denied`, `invalid-input`...).
pub const PLUGIN_ERROR: u8 = 3;
/// The plugin was stopped: trap, timeout, memory or stack limit, output too large.
pub const PLUGIN_FAULT: u8 = 4;

/// The exit code for an error that ended a command.
pub fn code_for(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<CallError>() {
        Some(c) if c.is_fault() => PLUGIN_FAULT,
        Some(CallError::Guest { .. } | CallError::Refused { .. }) => PLUGIN_ERROR,
        _ => ERROR,
    }
}
