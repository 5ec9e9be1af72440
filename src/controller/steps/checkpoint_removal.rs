//! Removes a pod target's checkpoint archives from its node, once each upload has been verified (the
//! checkpoint step's artifacts): the archives hold the containers' memory, and with it their secrets, so they
//! must not stay on a compromised node. An archive whose upload was not verified is left in place (it may be
//! the only copy of that evidence) and the step fails with CheckpointLeftOnNode, naming it.

use super::{POLL, Progress};
use crate::{
    acquisition,
    api::{ForensicCaptureStatus, Reason, Step, StepState},
    controller::{
        failure::StepError,
        records,
        ssm_command,
        status::{Writer, now},
        step_context::StepContext,
    },
};

const STEP: Step = Step::CheckpointRemoval;

pub async fn run(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'_>) -> Result<Progress, StepError> {
    let node = sc.target.node_name.clone().unwrap_or_default();
    let verified: Vec<(String, String)> =
        status.checkpoints.iter().filter(|c| c.artifact.is_some() && c.removed_at.is_none()).filter_map(|c| c.node_path.clone().map(|p| (c.container.clone(), p))).collect();
    let unverified: Vec<String> = status.checkpoints.iter().filter(|c| c.artifact.is_none()).filter_map(|c| c.node_path.clone()).collect();
    let mut removed = Vec::new();
    if !verified.is_empty() {
        let paths: Vec<&str> = verified.iter().map(|(_, p)| p.as_str()).collect();
        let prepare = || async {
            let inputs = [("FC_CHECKPOINT_MODE", "remove".to_string()), ("FC_CHECKPOINT_PATHS", paths.join(" "))];
            let inputs: Vec<(&str, &str)> = inputs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            acquisition::command_lines(acquisition::CHECKPOINT_SCRIPT, &inputs).map_err(|e| StepError::failed(Reason::InvalidCommand, e.to_string()))
        };
        let Some(stdout) = ssm_command::ensure_output(sc, STEP, status, writer, sc.ctx.config.volatile_timeout_seconds, prepare).await? else {
            return Ok(Progress::Wait(POLL));
        };
        for (i, (container, path)) in verified.iter().enumerate() {
            if acquisition::result(&stdout, &format!("removed-{i}")).is_some_and(|r| r.get("path") == Some(path)) {
                if let Some(record) = status.checkpoints.iter_mut().find(|c| &c.container == container) {
                    record.removed_at = Some(now());
                }
                removed.push(path.clone());
            }
        }
    }
    let still_there: Vec<String> = status.checkpoints.iter().filter(|c| c.removed_at.is_none()).filter_map(|c| c.node_path.clone()).collect();
    if !still_there.is_empty() {
        let why = if unverified.is_empty() { "the removal did not confirm them" } else { "their uploads were not verified, so they may be the only copy" };
        return Err(StepError::failed(
            Reason::CheckpointLeftOnNode,
            format!("Node {node} (instance {}): {} left on the node ({why}); they hold the containers' memory: {}", sc.instance_id(), still_there.len(), still_there.join(", ")),
        ));
    }
    let message = if removed.is_empty() { "no checkpoint archive on the node".to_string() } else { format!("removed from Node {node} once verified: {}", removed.join(", ")) };
    records::end(STEP, status, StepState::Succeeded, None, Some(message));
    Ok(Progress::Continue)
}
