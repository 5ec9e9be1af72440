//! One reconcile: ask the planner for the next action, carry it out, record the result; repeat until the
//! capture has to wait for something.

use std::{sync::Arc, time::Duration};

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action as Requeue,
};
use serde_json::json;

use super::{
    Context, FINALIZER, lock,
    status::{self, now},
    steps::{self, Progress, StepContext, StepError, Writer},
};
use crate::{
    api::{ForensicCapture, StepState},
    planner::{self, Action, Situation, Step, Waiting},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("retrying: {0}")]
    Retry(String),
}

/// Bounds the work of one reconcile, so one capture cannot starve the others.
const MAX_ACTIONS_PER_RECONCILE: usize = 32;
const LOCK_RETRY: Duration = Duration::from_secs(10);

pub async fn reconcile(capture: Arc<ForensicCapture>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let api: Api<ForensicCapture> = Api::namespaced(ctx.client.clone(), &capture.namespace().unwrap_or_default());
    let deleting = capture.metadata.deletion_timestamp.is_some();
    if !deleting && !capture.finalizers().iter().any(|f| f == FINALIZER) {
        // The finalizer keeps a deletion from cutting a step in half; the watch brings the updated object back.
        let mut finalizers = capture.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        api.patch(&capture.name_any(), &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})))
            .await?;
        return Ok(Requeue::await_change());
    }

    let written = capture.status.clone().unwrap_or_default();
    let mut status = written.clone();
    if status.started_at.is_none() {
        status.started_at = Some(now());
    }
    let mut writer = Writer { ctx: &ctx, capture: &capture, written };

    for _ in 0..MAX_ACTIONS_PER_RECONCILE {
        if ctx.stopping() {
            // Shutting down: the status is saved, and whoever leads next continues from it.
            return Ok(Requeue::await_change());
        }
        let lock_held = match &status.target {
            Some(t) => lock::holds(&ctx, &capture, &t.instance_id).await?,
            None => false,
        };
        let action = planner::next_action(&capture.spec, &status, &Situation { lock_held, deleting });
        tracing::debug!(?action, "planned");
        let outcome: Result<Progress, StepError> = match action {
            Action::Nothing => {
                writer.save(&mut status).await.map_err(step_error)?;
                if deleting {
                    remove_finalizer(&api, &capture).await?;
                }
                return Ok(Requeue::await_change());
            }
            Action::ResolveTarget => match steps::resolve::resolve(&ctx, &capture).await {
                Ok(target) => {
                    status.target = Some(target);
                    Ok(Progress::Continue)
                }
                Err(e) => Err(e),
            },
            Action::AcquireLock => {
                let instance_id = status.target.as_ref().map(|t| t.instance_id.clone()).unwrap_or_default();
                match lock::acquire(&ctx, &capture, &instance_id).await? {
                    lock::LockState::Held => Ok(Progress::Continue),
                    lock::LockState::HeldBy(holder) => {
                        let waiting = Waiting {
                            reason: "WaitingForInstanceLock",
                            message: format!("instance {instance_id} is being captured by {holder}; this capture starts when that one ends"),
                        };
                        status::publish(&ctx, &capture, &mut writer.written, &mut status, Some(&waiting)).await?;
                        return Ok(Requeue::requeue(LOCK_RETRY));
                    }
                }
            }
            Action::Skip { step, reason, message } => {
                steps::end(step, &mut status, StepState::Skipped, Some(reason.into()), Some(message));
                Ok(Progress::Continue)
            }
            Action::Run(step) => {
                let target = status.target.clone().expect("the planner runs steps only after resolving the target");
                let sc = StepContext::new(&ctx, &capture, target);
                let result = match step {
                    Step::Volatile => steps::volatile::run(&sc, &mut status, &mut writer).await,
                    Step::Memory => steps::memory::run(&sc, &mut status, &mut writer).await,
                    Step::Disk => steps::disk::run(&sc, &mut status, &mut writer).await,
                    Step::Isolation => steps::isolation::run(&sc, &mut status, &mut writer).await,
                };
                match result {
                    // A step failure is recorded against that step; the planner decides what follows.
                    Err(StepError::Failed { reason, message }) => {
                        steps::end(step, &mut status, StepState::Failed, Some(reason), Some(message));
                        Ok(Progress::Continue)
                    }
                    other => other,
                }
            }
            Action::Finish => {
                let written = match status.target.clone() {
                    // The manifest describes the finished record, so it is written just before completion.
                    Some(target) => steps::manifest::write(&StepContext::new(&ctx, &capture, target), &mut status).await,
                    None => Ok(()),
                };
                match written {
                    Ok(()) => {
                        status.completed_at = Some(now());
                        if let Some(target) = &status.target {
                            lock::release(&ctx, &capture, &target.instance_id).await?;
                        }
                        Ok(Progress::Continue)
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match outcome {
            Ok(Progress::Continue) => writer.save(&mut status).await.map_err(step_error)?,
            Ok(Progress::Wait(after)) => {
                writer.save(&mut status).await.map_err(step_error)?;
                return Ok(Requeue::requeue(after));
            }
            Err(StepError::Abort { reason, message }) => {
                tracing::warn!(%reason, %message, "capture cannot continue");
                abort(&capture, &mut status, &reason, &message);
                writer.save(&mut status).await.map_err(step_error)?;
            }
            Err(StepError::Failed { reason, message }) => {
                // Only steps fail this way; anything else that does is a capture-level problem.
                abort(&capture, &mut status, &reason, &message);
                writer.save(&mut status).await.map_err(step_error)?;
            }
            Err(StepError::Retry(message)) => {
                writer.save(&mut status).await.map_err(step_error)?;
                return Err(Error::Retry(message));
            }
        }
    }
    Ok(Requeue::requeue(Duration::from_millis(100)))
}

/// Ends every unfinished requested step with `reason`: started ones Failed, the others Skipped.
fn abort(capture: &ForensicCapture, status: &mut crate::api::ForensicCaptureStatus, reason: &str, message: &str) {
    for step in Step::ALL.into_iter().filter(|s| s.enabled(&capture.spec)) {
        let state = match step.record(status).map(|r| r.state) {
            Some(s) if s.is_terminal() => continue,
            Some(_) => StepState::Failed,
            None => StepState::Skipped,
        };
        steps::end(step, status, state, Some(reason.into()), Some(message.into()));
    }
}

async fn remove_finalizer(api: &Api<ForensicCapture>, capture: &ForensicCapture) -> Result<(), kube::Error> {
    let finalizers: Vec<&String> = capture.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    api.patch(&capture.name_any(), &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})))
        .await?;
    Ok(())
}

fn step_error(e: StepError) -> Error {
    Error::Retry(e.to_string())
}
