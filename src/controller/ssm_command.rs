//! The SSM command of an acquisition step: sent once (found again by its comment after a restart), then
//! followed until it ends; a failed invocation becomes a step failure that names the instance, the command
//! and what the script said.

use std::future::Future;

use super::{failure::StepError, records, status::Writer, step_context::StepContext};
use crate::{
    acquisition,
    api::{ForensicCaptureStatus, Reason, Step},
    aws::ssm::{Invocation, ShellCommand, SsmApi},
};

/// Where the step's command stands.
pub enum Command {
    /// Recorded in the status, or found in SSM's history by its comment.
    Known(String),
    /// Sent by this call.
    SentNow(String),
    /// Sent shortly before a restart and not listed by SSM yet: look again before sending another.
    Unconfirmed,
}

/// The step's command: the recorded one, one found in SSM's history by comment, or a new command whose lines
/// `prepare` builds (presigning happens only when a command is really sent). The intent to send is saved
/// first, with its time, so a restart looks for the command before sending another; the command's ID is
/// recorded in `status` and saved with whatever the step records next.
pub async fn ensure<F, Fut>(
    sc: &StepContext<'_>,
    step: Step,
    status: &mut ForensicCaptureStatus,
    writer: &mut Writer<'_>,
    execution_timeout_seconds: u64,
    prepare: F,
) -> Result<Command, StepError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Vec<String>, StepError>>,
{
    if let Some(id) = records::record(step, status).command_id.clone() {
        return Ok(Command::Known(id));
    }
    let instance_id = sc.instance_id();
    let comment = sc.command_comment(step);
    // The intent is saved before every send, over the status this reconcile read: with no intent on record, no
    // command was ever sent for this step, and SSM's history need not be asked.
    if records::create_requested(step, status) {
        let found = sc.aws.ssm.find_command(instance_id, &comment).await.map_err(|e| StepError::on_instance(e, instance_id, Reason::CommandFailed))?;
        if let Some(id) = found {
            // Saved with the step's next record: until then a restart finds it again the same way.
            records::record(step, status).command_id = Some(id.clone());
            return Ok(Command::Known(id));
        }
        if records::create_requested_recently(step, status, sc.ctx.config.create_lookup_window()) {
            return Ok(Command::Unconfirmed);
        }
    }
    let lines = prepare().await?;
    records::request_create(step, status);
    writer.save(status).await?;
    let sent = sc
        .aws
        .ssm
        .send_shell(ShellCommand {
            instance_id,
            comment: &comment,
            lines,
            execution_timeout_seconds,
            delivery_timeout_seconds: sc.ctx.config.command_delivery_timeout_seconds,
        })
        .await;
    let id = match sent {
        Ok(id) => id,
        Err(e) => {
            // A refusal means nothing was sent: the next attempt need not wait for a lookup. After a 5xx
            // or a transport error (a response cut short included) the command may exist, so the intent stays.
            if e.refused_before_acting() {
                records::forget_create_request(step, status);
            }
            return Err(send_error(e, instance_id));
        }
    };
    // Saved with the step's next record (its first wait, at the latest): the intent is on record, so a restart
    // before then finds the command by its comment.
    records::record(step, status).command_id = Some(id.clone());
    Ok(Command::SentNow(id))
}

/// The command's stdout once it succeeded; None while it runs; the step's failure otherwise.
/// The step's command (as `ensure` finds or sends it) until it has ended: its output once it succeeded, None
/// while it is being sent or still runs; a failed invocation is the step's failure.
pub async fn ensure_output<F, Fut>(
    sc: &StepContext<'_>,
    step: Step,
    status: &mut ForensicCaptureStatus,
    writer: &mut Writer<'_>,
    execution_timeout_seconds: u64,
    prepare: F,
) -> Result<Option<String>, StepError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Vec<String>, StepError>>,
{
    match ensure(sc, step, status, writer, execution_timeout_seconds, prepare).await? {
        Command::Known(id) | Command::SentNow(id) => output(sc, step, &id).await,
        Command::Unconfirmed => Ok(None),
    }
}

pub async fn output(sc: &StepContext<'_>, step: Step, command_id: &str) -> Result<Option<String>, StepError> {
    let instance_id = sc.instance_id();
    let invocation = sc.aws.ssm.invocation(command_id, instance_id).await.map_err(|e| StepError::on_instance(e, instance_id, Reason::CommandFailed))?;
    match invocation {
        Invocation::Running => Ok(None),
        Invocation::Succeeded { stdout } => Ok(Some(stdout)),
        other => Err(invocation_failure(step, instance_id, command_id, &other)),
    }
}

/// SendCommand refused: an instance that is not a managed node is a step failure with its own reason.
fn send_error(error: crate::aws::AwsError, instance_id: &str) -> StepError {
    if error.code == "InvalidInstanceId" {
        return StepError::aws(error, &format!("instance {instance_id}"), super::failure::OnError::only(Reason::NotSsmManaged));
    }
    StepError::on_instance(error, instance_id, Reason::CommandFailed)
}

/// Turns a finished (non-successful) SSM invocation into a step failure that names the instance, the command
/// and what the script said.
pub fn invocation_failure(step: Step, instance_id: &str, command_id: &str, invocation: &Invocation) -> StepError {
    let what = format!("{} command {command_id} on instance {instance_id}", step.name());
    match invocation {
        Invocation::Failed { response_code, stdout, stderr } => match acquisition::script_error(stdout) {
            Some((reason, detail)) => {
                let known = acquisition::script_reason(&reason);
                let detail = if known == Reason::CommandFailed { format!("{reason}: {detail}") } else { detail };
                StepError::failed(known, format!("{what} failed: {detail}"))
            }
            None => StepError::failed(Reason::CommandFailed, format!("{what} exited {response_code}: {}", tail(stderr, 400))),
        },
        Invocation::TimedOut { stderr, .. } => {
            StepError::failed(Reason::CommandTimedOut, format!("{what} exceeded its execution timeout: {}", tail(stderr, 300)))
        }
        Invocation::DeliveryTimedOut => {
            StepError::failed(Reason::CommandDeliveryTimedOut, format!("{what} was never delivered: the SSM agent is offline"))
        }
        Invocation::Cancelled => StepError::failed(Reason::CommandCancelled, format!("{what} was cancelled")),
        Invocation::Running | Invocation::Succeeded { .. } => StepError::retry(format!("{what} has not failed")),
    }
}

fn tail(s: &str, chars: usize) -> String {
    let count = s.chars().count();
    s.chars().skip(count.saturating_sub(chars)).collect::<String>().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_reasons_become_stable_reasons_and_unknown_ones_keep_their_word() {
        let failed = |stdout: &str| {
            let invocation = Invocation::Failed { response_code: 1, stdout: stdout.into(), stderr: String::new() };
            invocation_failure(Step::Memory, "i-1", "c-1", &invocation)
        };
        let e = failed("FC-ERROR ToolChecksumMismatch AVML SHA-256 is 1, expected 2\n");
        assert!(matches!(&e, StepError::Failed { reason: Reason::AvmlChecksumMismatch, .. }), "{e}");
        let e = failed("FC-ERROR KernelLockdown closed\n");
        assert!(matches!(&e, StepError::Failed { reason: Reason::KernelLockdown, .. }), "{e}");
        let e = failed("FC-ERROR SomethingNew detail\n");
        assert!(matches!(&e, StepError::Failed { reason: Reason::CommandFailed, message, .. } if message.contains("SomethingNew: detail")), "{e}");
    }
}
