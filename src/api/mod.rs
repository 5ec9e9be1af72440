//! The `ForensicCapture` API (group `forensic-capture.dev`, version `v1alpha1`).

mod capture;
pub mod conditions;

pub use capture::*;
