//! The `ForensicCapture` API (group `forensic-capture.dev`, version `v1alpha1`).

mod approval;
mod capture;
mod plan;
mod policy;
mod readiness;
pub mod conditions;
mod reason;
mod release;
mod step;

pub use approval::*;
pub use capture::*;
pub use plan::*;
pub use policy::*;
pub use readiness::*;
pub use reason::{Reason, UnknownReason};
pub use release::*;
pub use step::*;
