//! Write keel agents and connectors in Rust.
//!
//! An agent is a plain function from a [`Task`] to an [`Outcome`]; the
//! [`agent!`] macro exports it as a `keel:plugin/agent@0.1.0` component.
//! Build it for `wasm32-wasip2` and install it with `keel install`.
//!
//! ```no_run
//! use keel_sdk::{agent, memory, Error, Outcome, Task};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Greet {
//!     name: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Greeting {
//!     message: String,
//!     times_seen: u64,
//! }
//!
//! fn handle(task: Task) -> Result<Outcome, Error> {
//!     let input: Greet = task.input_json()?;
//!     let seen: u64 = memory::get_json("hello", &input.name)?.unwrap_or(0) + 1;
//!     memory::put_json("hello", &input.name, &seen)?;
//!     keel_sdk::log::info(&format!("greeted {}", input.name));
//!     Outcome::json(&Greeting {
//!         message: format!("Hello, {}!", input.name),
//!         times_seen: seen,
//!     })
//! }
//!
//! agent!(handle);
//! ```
//!
//! Connectors implement [`connector::Connector`] and are exported with
//! [`connector!`]; [`config`] reads their settings and secrets and [`http`]
//! makes outgoing requests (see the [`connector`] module).

/// The raw bindings generated from `wit/` (one `generate!` for the crate).
#[allow(unsafe_code, reason = "wit-bindgen glue; unsafe only on wasm32")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "keel:plugin/agent@0.1.0",
        pub_export_macro: true,
        default_bindings_module: "keel_sdk::bindings",
        generate_all,
    });
}

pub mod config;
pub mod connector;
pub mod encoding;
mod helpers;
pub mod http;
pub mod log;
pub mod memory;
pub mod time;

pub use bindings::keel::plugin::actions;
pub use bindings::keel::plugin::model;
pub use bindings::keel::plugin::types::{Error, Outcome, Task};

#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::Guest;
}

/// Exports `handler` (a `fn(Task) -> Result<Outcome, Error>`) as the agent's
/// `handle` function. Use it once per agent crate.
#[macro_export]
macro_rules! agent {
    ($handler:path) => {
        struct KeelAgentExport;

        impl $crate::__private::Guest for KeelAgentExport {
            fn handle(task: $crate::Task) -> ::core::result::Result<$crate::Outcome, $crate::Error> {
                $handler(task)
            }
        }

        $crate::bindings::export!(KeelAgentExport with_types_in $crate::bindings);
    };
}
