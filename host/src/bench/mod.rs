//! `keel bench`: keel measured against a floor in the same run, so the
//! numbers are ratios on this machine rather than absolute claims.

pub mod audit;
pub mod bare;
#[cfg(feature = "local-embedder")]
pub mod embedder;
pub mod model;
pub mod records;
pub mod runtime;
pub mod semantic;
pub mod workflows;

use std::time::Duration;

/// Paths of the guest components built with keel (`host/build.rs`),
/// included once: the file exports a macro.
pub(crate) mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// p50 and p99 of one series.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub p50: Duration,
    pub p99: Duration,
}

/// Sorts `samples` and reads p50 and p99 off them.
pub fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Percentiles { p50: at(0.50), p99: at(0.99) }
}
