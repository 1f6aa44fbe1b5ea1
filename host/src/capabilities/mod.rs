//! One module per WIT interface: a borrowed view of the per-call state that
//! implements the bindgen `Host` trait, and `add_to_linker`. Each host
//! method opens a `keel.<capability>.<function>` span and asks the gate
//! before doing anything.

pub mod actions;
pub mod config;
pub mod log;
pub mod memory;
pub mod model;

use wasmtime::component::{HasSelf, Linker};

use crate::runtime::HostState;

impl crate::bindings::keel::plugin::types::Host for HostState {}

/// Links every keel interface and WASI p2 into `linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    crate::bindings::keel::plugin::types::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    log::add_to_linker(linker)?;
    memory::add_to_linker(linker)?;
    model::add_to_linker(linker)?;
    actions::add_to_linker(linker)?;
    config::add_to_linker(linker)?;
    Ok(())
}
