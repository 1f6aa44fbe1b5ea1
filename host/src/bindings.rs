//! The one `bindgen!` of the host: Rust types and traits for `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "keel:plugin/agent@0.1.0",
    imports: {
        // Model calls wait on the network: they must not block a tokio worker.
        "keel:plugin/model.complete": async | trappable,
        "keel:plugin/model.complete-streaming": async | trappable,
        "keel:plugin/model.[method]completion-stream.next": async | trappable,
        "keel:plugin/model.[method]completion-stream.finish": async | trappable,
        "keel:plugin/model.embed": async | trappable,
        "keel:plugin/model.embed-background": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    with: { "keel:plugin/model.completion-stream": crate::capabilities::model_stream::CompletionStream },
    // Workflow journals record host calls' requests and results as JSON.
    additional_derives: [serde::Serialize, serde::Deserialize],
});

pub use keel::plugin::types::Error as GuestError;
