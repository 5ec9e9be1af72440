//! The `ForensicCapture` API (group `forensic-capture.dev`, version `v1alpha1`).

mod capture;
mod plan;
pub mod conditions;
mod reason;
mod release;
mod step;

pub use capture::*;
pub use plan::*;
pub use reason::{Reason, UnknownReason};
pub use release::*;
pub use step::*;
