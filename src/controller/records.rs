//! Small edits of the status record: a step started or ended, an artifact added, a create requested.

use std::time::Duration;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};

use super::status::now;
use crate::api::{Artifact, ForensicCaptureStatus, Reason, Step, StepRecord, StepState};

/// Records, before the call, that the step is asking AWS to create its result now.
pub fn request_create(step: Step, status: &mut ForensicCaptureStatus) {
    record(step, status).create_requested_at = Some(now());
}

/// The create was refused before AWS acted on it: nothing can show up in a lookup, so the next attempt creates
/// at once.
pub fn forget_create_request(step: Step, status: &mut ForensicCaptureStatus) {
    record(step, status).create_requested_at = None;
}

/// The step recorded an intent to create that it has not withdrawn: only then can something it created exist
/// without being on record.
pub fn create_requested(step: Step, status: &ForensicCaptureStatus) -> bool {
    step.record(status).is_some_and(|r| r.create_requested_at.is_some())
}

/// The step asked for a create less than `window` ago (--create-lookup-window-seconds): something it asked AWS
/// to create (an SSM command, a snapshot set) may not show in the eventually consistent lookup yet, so look
/// again rather than create a second one.
pub fn create_requested_recently(step: Step, status: &mut ForensicCaptureStatus, window: Duration) -> bool {
    within(record(step, status).create_requested_at.as_ref(), Timestamp::now(), window)
}

fn within(requested: Option<&Time>, now: Timestamp, window: Duration) -> bool {
    let window = SignedDuration::try_from(window).unwrap_or_default();
    requested.is_some_and(|at| now.duration_since(at.0) < window)
}

/// Adds an artifact to the status, or replaces the one of the same name.
pub fn upsert_artifact(status: &mut ForensicCaptureStatus, artifact: Artifact) {
    match status.artifacts.iter_mut().find(|a| a.name == artifact.name) {
        Some(existing) => *existing = artifact,
        None => status.artifacts.push(artifact),
    }
}

/// Marks a step started, once; true when it was not started before.
pub fn start(step: Step, status: &mut ForensicCaptureStatus) -> bool {
    let record = step.record_mut(status);
    if record.is_some() {
        return false;
    }
    *record = Some(StepRecord { state: StepState::Running, started_at: Some(now()), ..Default::default() });
    true
}

pub fn record(step: Step, status: &mut ForensicCaptureStatus) -> &mut StepRecord {
    step.record_mut(status).get_or_insert_with(Default::default)
}

pub fn succeed(step: Step, status: &mut ForensicCaptureStatus) {
    end(step, status, StepState::Succeeded, None, None);
}

pub fn end(step: Step, status: &mut ForensicCaptureStatus, state: StepState, reason: Option<Reason>, message: Option<String>) {
    let record = record(step, status);
    record.state = state;
    record.reason = reason.map(String::from);
    record.message = message;
    record.completed_at = Some(now());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_is_awaited_only_within_the_lookup_window() {
        let now = Timestamp::now();
        let ago = |secs: i64| Time(now - SignedDuration::from_secs(secs));
        let window = Duration::from_secs(120);
        assert!(!within(None, now, window), "nothing requested: create");
        assert!(within(Some(&ago(5)), now, window), "requested 5 s ago: look again first");
        assert!(!within(Some(&ago(121)), now, window), "long enough: it was never made");
        assert!(!within(Some(&ago(0)), now, Duration::ZERO), "a window of 0 never waits");
    }
}
