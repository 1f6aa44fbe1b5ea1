//! Write keel connectors in Rust: components of the
//! `keel:plugin/connector@0.1.0` world that execute the actions agents
//! propose, once the kernel has allowed them.
//!
//! ```no_run
//! use keel_sdk::connector::{Action, ActionKind, Connector, receipt};
//! use keel_sdk::{Error, config, connector, http};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Post {
//!     body: serde_json::Value,
//! }
//!
//! struct Webhook;
//!
//! impl Connector for Webhook {
//!     fn describe() -> Vec<ActionKind> {
//!         let schema = serde_json::json!({"type": "object", "required": ["body"]});
//!         vec![ActionKind::new("webhook.post", &schema, false)]
//!     }
//!
//!     fn perform(action: Action, idempotency_key: String) -> Result<String, Error> {
//!         let post: Post = action.payload_json()?;
//!         let url = config::require_setting("url")?;
//!         let response = http::Request::post(&url)
//!             .header("idempotency-key", &idempotency_key)
//!             .json(&post.body)?
//!             .send()?;
//!         receipt(&serde_json::json!({"status": response.status}))
//!     }
//! }
//!
//! connector!(Webhook);
//! ```

/// The raw bindings of the connector world. The interfaces it shares with
/// agents (types, log, config, actions) are the agent bindings' types.
#[allow(unsafe_code, reason = "wit-bindgen glue; unsafe only on wasm32")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "keel:plugin/connector@0.1.0",
        pub_export_macro: true,
        default_bindings_module: "keel_sdk::connector::bindings",
        with: {
            "keel:plugin/types@0.1.0": crate::bindings::keel::plugin::types,
            "keel:plugin/log@0.1.0": crate::bindings::keel::plugin::log,
            "keel:plugin/config@0.1.0": crate::bindings::keel::plugin::config,
            "keel:plugin/actions@0.1.0": crate::bindings::keel::plugin::actions,
        },
    });
}

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::bindings::keel::plugin::actions::Action;
pub use bindings::exports::keel::plugin::connector_api::ActionKind;

use crate::Error;

/// What a connector does. [`connector!`](crate::connector!) exports it.
pub trait Connector {
    /// The action kinds served, with their payload JSON Schemas. Called
    /// once, at install.
    fn describe() -> Vec<ActionKind>;

    /// Executes `action`. The same `idempotency_key` means the same intent:
    /// an idempotent kind must not repeat the effect. Return an error only
    /// if the effect did not happen; `unavailable` says a retry may succeed.
    /// Returns a JSON receipt, which [`Connector::compensate`] gets back.
    fn perform(action: Action, idempotency_key: String) -> Result<String, Error>;

    /// Undoes an earlier `perform`, given its receipt. The default says the
    /// connector has no compensation.
    fn compensate(receipt: String, idempotency_key: String) -> Result<String, Error> {
        let _ = (receipt, idempotency_key);
        Err(Error::InvalidInput("this connector declares no compensation".into()))
    }
}

impl ActionKind {
    /// An action kind with its payload schema; `idempotent` says whether a
    /// `perform` with the same key may safely be retried.
    pub fn new(kind: &str, payload_schema: &serde_json::Value, idempotent: bool) -> ActionKind {
        ActionKind { kind: kind.to_owned(), payload_schema: payload_schema.to_string(), compensation: None, idempotent }
    }

    /// Names the kind that undoes this one (served by `compensate`).
    pub fn compensated_by(mut self, kind: &str) -> ActionKind {
        self.compensation = Some(kind.to_owned());
        self
    }
}

impl Action {
    /// Parses the payload into `T`, or fails with `invalid-input` naming
    /// what did not match.
    pub fn payload_json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.payload).map_err(|e| Error::InvalidInput(format!("{} payload: {e}", self.kind)))
    }
}

/// `value` as a JSON receipt.
pub fn receipt<T: Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::InvalidInput(format!("receipt is not serializable: {e}")))
}

#[doc(hidden)]
pub mod __private {
    pub use super::bindings::exports::keel::plugin::connector_api::Guest;
}

/// Exports `$ty` (a type implementing [`connector::Connector`](crate::connector::Connector))
/// as the component's `connector-api`. Use it once per connector crate.
#[macro_export]
macro_rules! connector {
    ($ty:ty) => {
        struct KeelConnectorExport;

        impl $crate::connector::__private::Guest for KeelConnectorExport {
            fn describe() -> ::std::vec::Vec<$crate::connector::ActionKind> {
                <$ty as $crate::connector::Connector>::describe()
            }

            fn perform(
                action: $crate::connector::Action,
                idempotency_key: ::std::string::String,
            ) -> ::core::result::Result<::std::string::String, $crate::Error> {
                <$ty as $crate::connector::Connector>::perform(action, idempotency_key)
            }

            fn compensate(
                receipt: ::std::string::String,
                idempotency_key: ::std::string::String,
            ) -> ::core::result::Result<::std::string::String, $crate::Error> {
                <$ty as $crate::connector::Connector>::compensate(receipt, idempotency_key)
            }
        }

        $crate::connector::bindings::export!(KeelConnectorExport with_types_in $crate::connector::bindings);
    };
}
