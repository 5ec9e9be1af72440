//! Finding intake, the pure part: reading EventBridge events into findings (finding.rs), and deciding which
//! CapturePolicies select them and what capture each creates (policy.rs). The SQS loop that feeds it and does
//! the writes is controller/intake.rs.

pub mod finding;
pub mod policy;
