//! Structured logging into the host's trace output.

use crate::bindings::keel::plugin::log::{Level, log};

pub use crate::bindings::keel::plugin::log::Level as LogLevel;

/// Logs `message` at `level` with key/value `fields`.
pub fn with_fields(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    log(level, message, &fields);
}

/// Logs `message` at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message, &[]);
}

/// Logs `message` at info level.
pub fn info(message: &str) {
    log(Level::Info, message, &[]);
}

/// Logs `message` at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message, &[]);
}

/// Logs `message` at error level.
pub fn error(message: &str) {
    log(Level::Error, message, &[]);
}
