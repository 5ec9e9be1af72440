//! Small edits of the status record: a step started or ended, an artifact added.

use super::status::now;
use crate::api::{Artifact, ForensicCaptureStatus, Reason, Step, StepRecord, StepState};

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
