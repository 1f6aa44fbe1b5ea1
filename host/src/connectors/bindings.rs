//! Host bindings of the `connector` world. The shared interfaces (types,
//! log, config, actions) come from the agent bindings, so both worlds use
//! one set of Rust types and one `Host` trait per interface.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "keel:plugin/connector@0.1.0",
    imports: { default: trappable },
    exports: { default: async },
    with: {
        "keel:plugin/types": crate::bindings::keel::plugin::types,
        "keel:plugin/log": crate::bindings::keel::plugin::log,
        "keel:plugin/config": crate::bindings::keel::plugin::config,
        "keel:plugin/actions": crate::bindings::keel::plugin::actions,
    },
});

pub use exports::keel::plugin::connector_api::ActionKind;
