//! keel: a host that runs AI agents and connectors as sandboxed
//! WebAssembly components, with a governed memory and an audit log.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use keel_host::workspace::Workspace;
//!
//! let ws = Workspace::open(std::path::Path::new("my-workspace"))?;
//! let runtime = ws.runtime()?;
//! let outcome = runtime.call("hello", r#"{"name":"Ada"}"#.into()).await?;
//! println!("{}", outcome.output);
//! # Ok(()) }
//! ```

pub mod bench;
pub mod bindings;
pub mod capabilities;
pub mod cli;
pub mod connectors;
pub mod kernel;
pub mod memory;
pub mod model;
pub mod plugin;
pub mod runtime;
pub mod serve;
pub mod telemetry;
pub mod tls;
pub mod workflow;
pub mod workspace;
