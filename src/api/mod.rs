//! The `ForensicCapture` API (group `forensic-capture.dev`, version `v1alpha1`).

mod capture;
pub mod conditions;
mod release;

pub use capture::*;
pub use release::*;
