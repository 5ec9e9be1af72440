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
    Context, FINALIZER, approval, backoff, capacity, lock, records, resolve, seal,
    failure::StepError,
    status::{Writer, now},
    step_context::StepContext,
    steps::{self, Progress},
};
use crate::{
    api::{ForensicCapture, ForensicCaptureStatus, Reason, TargetFacts, Step, StepState},
    aws::AwsError,
    planner::{self, Action, Situation, Waiting},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("retrying: {message}")]
    Retry {
        message: String,
        #[source]
        source: Option<AwsError>,
    },
}

impl From<StepError> for Error {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Retry { message, source } => Error::Retry { message, source },
            other => Error::Retry { message: other.to_string(), source: None },
        }
    }
}

/// Bounds the work of one reconcile, so one capture cannot starve the others.
const MAX_ACTIONS_PER_RECONCILE: usize = 32;
const LOCK_RETRY: Duration = Duration::from_secs(10);
/// How soon a capture waiting for an acquisition place looks again.
const CAPACITY_RETRY: Duration = Duration::from_secs(2);

pub async fn reconcile(capture: Arc<ForensicCapture>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let api: Api<ForensicCapture> = Api::namespaced(ctx.client.clone(), &capture.namespace().unwrap_or_default());
    // The watch may not have brought this process's last write back yet: then the cached object is older than
    // what this process knows, and the capture is read again rather than worked on from a stale status.
    let uid = capture.uid().unwrap_or_default();
    let capture = match ctx.own_writes.last(&uid) {
        Some(last) if capture.resource_version().as_deref() != Some(last.as_str()) => Arc::new(api.get(&capture.name_any()).await?),
        _ => capture,
    };
    let deleting = capture.metadata.deletion_timestamp.is_some();
    if !deleting && !capture.finalizers().iter().any(|f| f == FINALIZER) {
        // The finalizer keeps a deletion from cutting a step in half; the watch brings the updated object back.
        let mut finalizers = capture.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        api.patch(&capture.name_any(), &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})))
            .await?;
        return Ok(Requeue::await_change());
    }

    let mut writer = Writer::new(&ctx, &capture);
    let mut status = writer.written.clone();
    if status.started_at.is_none() && !planner::awaiting_approval(&capture.spec, &status) {
        status.started_at = Some(now());
    }

    for _ in 0..MAX_ACTIONS_PER_RECONCILE {
        if ctx.stopping() {
            // Shutting down: the status is saved, and whoever leads next continues from it.
            let _ = writer.save(&mut status).await;
            return Ok(Requeue::await_change());
        }
        let lock_held = match &status.target {
            // A dry run never takes the instance's lock.
            Some(t) if !capture.spec.dry_run => lock::holds(&ctx, &capture, &t.instance_id).await?,
            _ => false,
        };
        let action = planner::next_action(&capture.spec, &status, &Situation { lock_held, deleting });
        tracing::debug!(?action, "planned");
        let outcome: Result<Progress, StepError> = match action {
            Action::Nothing => {
                writer.save(&mut status).await?;
                if deleting {
                    remove_finalizer(&api, &capture).await?;
                    ctx.own_writes.forget(&uid);
                    ctx.capacity.release(&uid);
                    ctx.forget_sessions(&uid);
                }
                return Ok(Requeue::await_change());
            }
            Action::AwaitApproval => match approval::find(&ctx, &capture).await? {
                Some(record) => {
                    tracing::info!(approval = %record.name, approved_by = %record.approved_by, "approved");
                    status.approval = Some(record);
                    status.started_at = Some(now());
                    Ok(Progress::Continue)
                }
                None => {
                    writer.publish(&mut status, Some(&approval::waiting(&capture))).await?;
                    // CaptureApprovals are watched (mod.rs): a new one starts a reconcile at once.
                    return Ok(Requeue::requeue(approval::LOOK_AGAIN));
                }
            },
            Action::ResolveTarget => resolve::resolve(&ctx, &capture).await.map(|target| {
                status.target = Some(target);
                Progress::Continue
            }),
            Action::AcquireLock => {
                let instance_id = status.target.as_ref().map(|t| t.instance_id.clone()).unwrap_or_default();
                match lock::acquire(&ctx, &capture, &instance_id).await? {
                    lock::LockState::Held => Ok(Progress::Continue),
                    lock::LockState::HeldBy(holder) => {
                        let waiting = Waiting {
                            reason: Reason::WaitingForInstanceLock,
                            message: format!("instance {instance_id} is being captured by {holder}; this capture starts when that one ends"),
                        };
                        writer.publish(&mut status, Some(&waiting)).await?;
                        return Ok(Requeue::requeue(LOCK_RETRY));
                    }
                }
            }
            Action::Skip { step, reason, message } => {
                records::end(step, &mut status, StepState::Skipped, Some(reason), Some(message));
                Ok(Progress::Continue)
            }
            Action::Run(step) => {
                let target = status.target.clone().expect("the planner runs steps only after resolving the target");
                if let Some(waiting) = wait_for_capacity(&ctx, &capture, &status, step, &target) {
                    writer.publish(&mut status, Some(&waiting)).await?;
                    return Ok(Requeue::requeue(CAPACITY_RETRY));
                }
                match run_step(&ctx, &capture, target, step, &mut status, &mut writer).await {
                    // A step failure is recorded against that step; the planner decides what follows.
                    Err(StepError::Failed { reason, message, .. }) => {
                        records::end(step, &mut status, StepState::Failed, Some(reason), Some(message));
                        Ok(Progress::Continue)
                    }
                    other => other,
                }
            }
            Action::Plan => {
                let target = status.target.clone().expect("the planner plans only after resolving the target");
                let planned = async { super::dry_run::make_plan(&StepContext::new(&ctx, &capture, target).await?).await }.await;
                planned.map(|plan| {
                    status.plan = Some(plan);
                    Progress::Continue
                })
            }
            Action::Finish if capture.spec.dry_run => {
                // A dry run took no lock, no place and wrote nothing to seal: it only ends.
                status.completed_at = Some(now());
                ctx.forget_sessions(&uid);
                Ok(Progress::Continue)
            }
            Action::Finish => finish(&ctx, &capture, &mut status).await,
        };
        match outcome {
            // Not saved yet: what the action recorded (facts, a skip, a step's result) is saved by the next
            // save, which comes before the next side effect (every step records its intent first), or before
            // this reconcile returns. One patch then carries several actions' records.
            Ok(Progress::Continue) => {}
            Ok(Progress::Wait(after)) => {
                writer.save(&mut status).await?;
                return Ok(Requeue::requeue(after));
            }
            Err(StepError::Abort { reason, message, .. } | StepError::Failed { reason, message, .. }) => {
                // Only steps fail one at a time; anything else that fails is a capture-level problem.
                tracing::warn!(%reason, %message, "capture cannot continue");
                abort(&capture, &mut status, reason, &message);
                writer.save(&mut status).await?;
            }
            Err(StepError::Retry { message, source }) => {
                // From the third failure in a row on, the Ready condition says what the capture waits for. It
                // keeps the first message of the episode: a condition rewritten on every attempt would be a status
                // patch, and so a watch event that starts the next attempt at once, defeating the backoff.
                let failures = ctx.backoff.failures(capture.uid().as_deref().unwrap_or_default()) + 1;
                let waiting = (failures >= backoff::SHOW_AFTER).then(|| {
                    shown_retrying(&writer.written)
                        .unwrap_or_else(|| Waiting { reason: Reason::RetryingAfterError, message: format!("{message} (retried with backoff)") })
                });
                // The retry is what matters; a status that cannot be saved now is saved next time.
                let _ = writer.publish(&mut status, waiting.as_ref()).await;
                return Err(Error::Retry { message, source });
            }
        }
    }
    writer.save(&mut status).await?;
    Ok(Requeue::requeue(Duration::from_millis(100)))
}

/// Runs `step` with the clients of the capture's account and region.
async fn run_step<'a>(ctx: &'a Context, capture: &'a ForensicCapture, target: TargetFacts, step: Step, status: &mut ForensicCaptureStatus, writer: &mut Writer<'a>) -> Result<Progress, StepError> {
    let sc = StepContext::new(ctx, capture, target).await?;
    steps::run(step, &sc, status, writer).await
}

/// None when `step` may run now; otherwise what the capture waits for. Evidence steps need one of the account
/// and region's places (capacity.rs); isolation, and the end of a capture, give the place back.
fn wait_for_capacity(ctx: &Context, capture: &ForensicCapture, status: &ForensicCaptureStatus, step: Step, target: &TargetFacts) -> Option<Waiting> {
    let uid = capture.uid().unwrap_or_default();
    if !step.info().group.is_evidence() {
        ctx.capacity.release(&uid);
        return None;
    }
    let account = target.account_id.clone().unwrap_or_default();
    let scope = (account, target.region.clone());
    let started = Step::ALL.iter().any(|s| s.info().group.is_evidence() && s.record(status).is_some_and(|r| r.started_at.is_some()));
    let limit = ctx.config.max_concurrent_acquisitions;
    match ctx.capacity.admit(&scope, &uid, started, limit, std::time::Instant::now()) {
        capacity::Admission::Admitted => None,
        // The message names no count: it must not change while the capture waits, or every look would be a
        // status patch (and a watch event that brings the next look forward).
        capacity::Admission::Full { .. } => Some(Waiting {
            reason: Reason::WaitingForCapacity,
            message: format!(
                "{limit} captures are already acquiring evidence in account {} region {} (--max-concurrent-acquisitions); this one starts when a place frees up",
                if scope.0.is_empty() { "(the controller's own)" } else { &scope.0 },
                scope.1
            ),
        }),
    }
}

/// The RetryingAfterError the Ready condition already shows, if it does.
fn shown_retrying(status: &ForensicCaptureStatus) -> Option<Waiting> {
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready" && c.reason == Reason::RetryingAfterError.as_str())?;
    Some(Waiting { reason: Reason::RetryingAfterError, message: ready.message.clone() })
}

/// Every requested step has ended: the manifest describes the finished record, so it is written just before
/// completion; then the lock is released.
async fn finish(ctx: &Context, capture: &ForensicCapture, status: &mut ForensicCaptureStatus) -> Result<Progress, StepError> {
    if let Some(target) = status.target.clone() {
        seal::write(&StepContext::new(ctx, capture, target).await?, status).await?;
    }
    status.completed_at = Some(now());
    ctx.capacity.release(&capture.uid().unwrap_or_default());
    ctx.forget_sessions(&capture.uid().unwrap_or_default());
    if let Some(target) = &status.target {
        lock::release(ctx, capture, &target.instance_id).await?;
    }
    Ok(Progress::Continue)
}

/// Ends every unfinished requested step with `reason`: started ones Failed, the others Skipped.
fn abort(capture: &ForensicCapture, status: &mut ForensicCaptureStatus, reason: Reason, message: &str) {
    for &step in Step::ALL.iter().filter(|s| s.enabled(&capture.spec)) {
        let state = match step.record(status).map(|r| r.state) {
            Some(s) if s.is_terminal() => continue,
            Some(_) => StepState::Failed,
            None => StepState::Skipped,
        };
        records::end(step, status, state, Some(reason), Some(message.into()));
    }
}

async fn remove_finalizer(api: &Api<ForensicCapture>, capture: &ForensicCapture) -> Result<(), kube::Error> {
    let finalizers: Vec<&String> = capture.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    api.patch(&capture.name_any(), &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})))
        .await?;
    Ok(())
}
