//! The isolation step: the containment playbook applied in order (containment/), each action's outcome
//! recorded as it ends and saved with the next record, so a restart continues with the first action not yet
//! saved.

use super::Progress;
use crate::{
    api::{ActionState, ContainmentAction, ForensicCaptureStatus, IsolationRecord, Reason, Step},
    controller::{
        containment::{self, Applied, Apply},
        failure::StepError,
        records,
        status::{Writer, now},
        step_context::StepContext,
    },
};

pub async fn run<'a>(sc: &StepContext<'a>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'a>) -> Result<Progress, StepError> {
    let mut instance = None;
    for action in containment::PLAYBOOK {
        let name = action.name();
        if status.isolation.as_ref().is_some_and(|r| r.actions.iter().any(|a| a.name == name)) {
            continue; // applied, not needed, or failed for good earlier
        }
        let result = match containment::applies(action.scope(), &sc.capture.spec) {
            Ok(false) => continue,
            Ok(true) => action.apply(&mut Apply { sc, status, writer, instance: &mut instance }).await,
            Err(why) => Ok(Applied::NotNeeded(why)),
        };
        let (state, reason, message) = match result {
            Ok(Applied::Changed(m)) => (ActionState::Applied, None, m),
            Ok(Applied::NotNeeded(m)) => (ActionState::NotNeeded, None, m),
            Err(e @ StepError::Retry { .. }) => return Err(e),
            Err(StepError::Failed { reason, message, .. } | StepError::Abort { reason, message, .. }) => (ActionState::Failed, Some(reason), message),
        };
        let record = status.isolation.get_or_insert_with(IsolationRecord::default);
        // Saved with the next action's prior state, or the step's end: every action records its prior state
        // before it changes anything and may run again (a restart before the save applies it again, idempotently).
        record.actions.push(ContainmentAction { name: name.into(), state, reason: reason.map(String::from), message: Some(message), at: Some(now()) });
    }
    let record = status.isolation.get_or_insert_with(IsolationRecord::default);
    if record.actions.iter().any(|a| a.state == ActionState::Failed) {
        return Err(StepError::failed(Reason::ContainmentIncomplete, format!("instance {}: {}", sc.instance_id(), containment::summary(&record.actions))));
    }
    record.applied_at = Some(now());
    records::succeed(Step::Isolation, status);
    Ok(Progress::Continue)
}
