//! The one `bindgen!` of the host: Rust types and traits for `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "keel:plugin/agent@0.1.0",
    imports: { default: trappable },
    exports: { default: async },
});

pub use keel::plugin::types::Error as GuestError;
