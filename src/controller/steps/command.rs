//! The SSM command of an acquisition step: sent once (found again by its comment after a restart), then
//! followed until it ends.

use std::future::Future;

use super::{StepContext, StepError, Writer, invocation_failure};
use crate::{
    api::ForensicCaptureStatus,
    aws::ssm::{Invocation, ShellCommand, SsmApi},
    planner::Step,
};

/// The step's command ID: the recorded one, one found in SSM's history by comment, or a new command whose
/// lines `prepare` builds (presigning happens only when a command is really sent).
pub async fn ensure<F, Fut>(
    sc: &StepContext<'_>,
    step: Step,
    status: &mut ForensicCaptureStatus,
    writer: &mut Writer<'_>,
    execution_timeout_seconds: u64,
    prepare: F,
) -> Result<String, StepError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Vec<String>, StepError>>,
{
    if let Some(id) = super::record(step, status).command_id.clone() {
        return Ok(id);
    }
    let instance_id = sc.instance_id();
    let comment = sc.command_comment(step);
    let found = sc.aws.ssm.find_command(instance_id, &comment).await.map_err(|e| StepError::aws(e, instance_id, "CommandFailed"))?;
    let id = match found {
        Some(id) => id,
        None => {
            let lines = prepare().await?;
            sc.aws
                .ssm
                .send_shell(ShellCommand {
                    instance_id,
                    comment: &comment,
                    lines,
                    execution_timeout_seconds,
                    delivery_timeout_seconds: sc.ctx.config.command_delivery_timeout_seconds,
                })
                .await
                .map_err(|e| send_error(e, instance_id))?
        }
    };
    super::record(step, status).command_id = Some(id.clone());
    writer.save(status).await?;
    Ok(id)
}

/// The command's stdout once it succeeded; None while it runs; the step's failure otherwise.
pub async fn output(sc: &StepContext<'_>, step: Step, command_id: &str) -> Result<Option<String>, StepError> {
    let instance_id = sc.instance_id();
    let invocation = sc.aws.ssm.invocation(command_id, instance_id).await.map_err(|e| StepError::aws(e, instance_id, "CommandFailed"))?;
    match invocation {
        Invocation::Running => Ok(None),
        Invocation::Succeeded { stdout } => Ok(Some(stdout)),
        other => Err(invocation_failure(step, instance_id, command_id, &other)),
    }
}

/// SendCommand refused: an instance that is not a managed node is a step failure with its own reason.
fn send_error(error: crate::aws::AwsError, instance_id: &str) -> StepError {
    if error.code == "InvalidInstanceId" {
        return StepError::failed("NotSsmManaged", format!("instance {instance_id}: {error}"));
    }
    StepError::aws(error, instance_id, "CommandFailed")
}
