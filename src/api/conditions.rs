//! Condition bookkeeping: `lastTransitionTime` moves only when a condition's status really changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const ACQUIRED: &str = "Acquired";
pub const SNAPSHOTTED: &str = "Snapshotted";
pub const ISOLATED: &str = "Isolated";
pub const FORENSIC_COPIED: &str = "ForensicCopied";
pub const READY: &str = "Ready";
pub const FAILED: &str = "Failed";

/// A condition as the planner wants it, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// Merges `desired` into `existing`: a condition whose status is unchanged keeps its lastTransitionTime.
pub fn merge(existing: &[Condition], desired: &[Desired], generation: Option<i64>, now: &Time) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = if d.status { "True" } else { "False" }.to_string();
            let previous = existing.iter().find(|c| c.type_ == d.type_);
            let last_transition_time = match previous {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: d.type_.to_string(),
                status,
                reason: d.reason.clone(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn want(status: bool, reason: &str) -> Desired {
        Desired { type_: READY, status, reason: reason.into(), message: "m".into() }
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let first = merge(&[], &[want(false, "InProgress")], Some(1), &at(100));
        assert_eq!(first[0].last_transition_time, at(100));
        let same_status_new_reason = merge(&first, &[want(false, "WaitingForInstanceLock")], Some(1), &at(200));
        assert_eq!(same_status_new_reason[0].last_transition_time, at(100));
        assert_eq!(same_status_new_reason[0].reason, "WaitingForInstanceLock");
        let flipped = merge(&same_status_new_reason, &[want(true, "Completed")], Some(1), &at(300));
        assert_eq!(flipped[0].last_transition_time, at(300));
    }
}
