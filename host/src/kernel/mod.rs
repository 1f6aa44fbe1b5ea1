//! The kernel: the only code that decides whether a plugin's request
//! happens. In the runtime core it checks grants and writes the audit log;
//! policies, approvals and the kill switch join it here.

pub mod gate;
pub mod grants;

pub use gate::{Caller, Gate, Request};
pub use grants::CapabilitySet;
