//! Writing the status: conditions and phase derived by the planner, patched only when something changed and
//! only over the status this reconcile read (a resourceVersion precondition), with an Event for each phase
//! change and each step that ends.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder},
};
use serde_json::json;

use super::{Context, failure::StepError};
use crate::{
    api::{ForensicCapture, ForensicCaptureStatus, Phase, Reason, Step, StepState, conditions},
    planner::{self, Waiting},
};

pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Derives conditions and phase into `status`.
pub fn refresh(capture: &ForensicCapture, status: &mut ForensicCaptureStatus, waiting: Option<&Waiting>) {
    let (desired, phase) = planner::derive(&capture.spec, status, waiting);
    status.conditions = conditions::merge(&status.conditions, &desired, capture.metadata.generation, &now());
    status.phase = Some(phase);
    status.observed_generation = capture.metadata.generation;
}

/// Saves a capture's status, mid-step too, so intent is recorded before the next side effect.
///
/// Every patch carries the resourceVersion of the object this writer last read or wrote. A reconcile that
/// started from a stale cached object (its own previous write not yet seen by the watch) therefore cannot
/// overwrite newer recorded prior state: the API server answers Conflict, and the writer re-reads the object.
/// When only metadata changed meanwhile (a label, say), the status is the one it knows and the patch is
/// sent again; when the status changed, the reconcile stops and starts over from the newer status.
pub struct Writer<'a> {
    pub ctx: &'a Context,
    pub capture: &'a ForensicCapture,
    /// The status as the API server last had it.
    pub written: ForensicCaptureStatus,
    resource_version: Option<String>,
}

impl<'a> Writer<'a> {
    pub fn new(ctx: &'a Context, capture: &'a ForensicCapture) -> Self {
        Writer { ctx, capture, written: capture.status.clone().unwrap_or_default(), resource_version: capture.resource_version() }
    }

    pub async fn save(&mut self, status: &mut ForensicCaptureStatus) -> Result<(), StepError> {
        self.publish(status, None).await
    }

    /// Saves with the Ready condition saying what the capture waits for.
    pub async fn publish(&mut self, status: &mut ForensicCaptureStatus, waiting: Option<&Waiting>) -> Result<(), StepError> {
        refresh(self.capture, status, waiting);
        if *status == self.written {
            return Ok(());
        }
        let api: Api<ForensicCapture> = Api::namespaced(self.ctx.client.clone(), &self.capture.namespace().unwrap_or_default());
        let name = self.capture.name_any();
        for _ in 0..2 {
            let body = json!({ "metadata": { "resourceVersion": self.resource_version }, "status": status });
            self.ctx.metrics.status_patched();
            match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(body)).await {
                Ok(patched) => {
                    self.resource_version = patched.resource_version();
                    emit_events(self.ctx, self.capture, &self.written, status).await;
                    if let Some(phase) = status.phase.filter(|p| self.written.phase != Some(*p)) {
                        self.ctx.metrics.phase_reached(self.capture, phase);
                    }
                    self.written = status.clone();
                    return Ok(());
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    let current = api.get(&name).await?;
                    if current.status.clone().unwrap_or_default() != self.written {
                        return Err(StepError::retry(format!(
                            "the status of {}/{name} changed since this reconcile read it; starting over from the newer one",
                            self.capture.namespace().unwrap_or_default()
                        )));
                    }
                    self.resource_version = current.resource_version();
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StepError::retry(format!("the status of {name} kept changing under the controller")))
    }
}

async fn emit_events(ctx: &Context, capture: &ForensicCapture, before: &ForensicCaptureStatus, after: &ForensicCaptureStatus) {
    let mut events = Vec::new();
    for &step in Step::ALL {
        let (old, new) = (step.record(before), step.record(after));
        let Some(new) = new else { continue };
        if old.map(|o| o.state) == Some(new.state) {
            continue;
        }
        let title = step.title();
        let (type_, reason) = match new.state {
            StepState::Running => (EventType::Normal, format!("{title}Started")),
            StepState::Succeeded => (EventType::Normal, format!("{title}Succeeded")),
            StepState::Failed => (EventType::Warning, new.reason.clone().unwrap_or_else(|| format!("{title}Failed"))),
            StepState::Skipped => (EventType::Warning, new.reason.clone().unwrap_or_else(|| format!("{title}Skipped"))),
        };
        ctx.metrics.step_ended(step, new.state, new.reason.as_deref().and_then(|r| r.parse::<Reason>().ok()));
        let note = new.message.clone().unwrap_or_else(|| format!("{} step {:?}", step.name(), new.state));
        events.push(Event { type_, reason, note: Some(note), action: title.into(), secondary: None });
    }
    if before.phase != after.phase {
        if let Some(phase) = after.phase {
            events.push(Event {
                type_: if phase == Phase::Failed { EventType::Warning } else { EventType::Normal },
                reason: format!("{phase:?}"),
                note: Some(format!("phase is now {phase:?}")),
                action: "Reconcile".into(),
                secondary: None,
            });
        }
    }
    publish_events(ctx, capture, events).await;
}

/// Publishes events on the capture, notes cut to the API's limit. Events are a convenience; the status is the
/// record, so a failure to publish is only logged.
pub async fn publish_events(ctx: &Context, capture: &ForensicCapture, events: Vec<Event>) {
    if events.is_empty() {
        return;
    }
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    let reference = capture.object_ref(&());
    for mut event in events {
        event.note = event.note.as_deref().map(truncate);
        if let Err(error) = recorder.publish(&event, &reference).await {
            tracing::debug!(%error, "could not publish event");
        }
    }
}

/// A Warning Event with a stable reason, for a derived object the capture completes without.
pub async fn warn(ctx: &Context, capture: &ForensicCapture, action: &str, reason: Reason, message: String) {
    let event = Event { type_: EventType::Warning, reason: reason.into(), note: Some(message), action: action.into(), secondary: None };
    publish_events(ctx, capture, vec![event]).await;
}

/// Events notes are limited to 1 kB.
fn truncate(s: &str) -> String {
    s.chars().take(1000).collect()
}
