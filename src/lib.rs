//! forensic-capture: a Kubernetes controller that turns a `ForensicCapture` into preserved evidence from an
//! EC2 instance (volatile data and memory through SSM Run Command, EBS snapshots) and then isolates it.

pub mod api;
pub mod crd;
pub mod aws;
pub mod planner;
pub mod intake;
pub mod acquisition;
pub mod lime;
pub mod controller;
pub mod custody;
pub mod manifest;
pub mod readiness;
pub mod verify;
