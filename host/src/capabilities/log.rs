//! `keel:plugin/log`: guest log lines into the host's `tracing` output,
//! tagged with the plugin's name.

use wasmtime::component::{HasData, Linker};

use crate::bindings::keel::plugin::log::{self, Level};
use crate::runtime::HostState;

/// Longest log line (message and fields) kept from one call.
pub const MAX_LOG_LINE_BYTES: usize = 64 * 1024;

pub struct LogView<'a> {
    plugin: &'a str,
}

struct LogCapability;

impl HasData for LogCapability {
    type Data<'a> = LogView<'a>;
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    log::add_to_linker::<HostState, LogCapability>(linker, |s| LogView { plugin: &s.caller.plugin })
}

impl log::Host for LogView<'_> {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) -> wasmtime::Result<()> {
        let mut line = message;
        for (k, v) in &fields {
            line.push_str(&format!(" {k}={v}"));
        }
        let line = truncate(line);
        let plugin = self.plugin;
        match level {
            Level::Trace => tracing::trace!(target: "keel::guest", plugin, "{line}"),
            Level::Debug => tracing::debug!(target: "keel::guest", plugin, "{line}"),
            Level::Info => tracing::info!(target: "keel::guest", plugin, "{line}"),
            Level::Warn => tracing::warn!(target: "keel::guest", plugin, "{line}"),
            Level::Error => tracing::error!(target: "keel::guest", plugin, "{line}"),
        }
        Ok(())
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_LOG_LINE_BYTES {
        let mut cut = MAX_LOG_LINE_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" …[truncated]");
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let cut = super::truncate("é".repeat(super::MAX_LOG_LINE_BYTES));
        assert!(cut.ends_with("[truncated]"));
        assert!(cut.len() < super::MAX_LOG_LINE_BYTES + 20);
    }
}
