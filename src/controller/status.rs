//! Writing the status: conditions and phase derived by the planner, patched only when something changed,
//! with an Event for each phase change and each step that ends.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder},
};
use serde_json::json;

use super::Context;
use crate::{
    api::{ForensicCapture, ForensicCaptureStatus, StepState, conditions},
    planner::{self, Step, Waiting},
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

/// Patches the status when it differs from `written` (what the API server last had), then remembers it.
pub async fn publish(
    ctx: &Context,
    capture: &ForensicCapture,
    written: &mut ForensicCaptureStatus,
    status: &mut ForensicCaptureStatus,
    waiting: Option<&Waiting>,
) -> Result<(), kube::Error> {
    refresh(capture, status, waiting);
    if status == written {
        return Ok(());
    }
    let api: Api<ForensicCapture> = Api::namespaced(ctx.client.clone(), &capture.namespace().unwrap_or_default());
    api.patch_status(&capture.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
        .await?;
    emit_events(ctx, capture, written, status).await;
    if let Some(phase) = status.phase.filter(|p| written.phase != Some(*p)) {
        ctx.metrics.phase_reached(capture, phase);
    }
    *written = status.clone();
    Ok(())
}

async fn emit_events(ctx: &Context, capture: &ForensicCapture, before: &ForensicCaptureStatus, after: &ForensicCaptureStatus) {
    let mut events = Vec::new();
    for step in Step::ALL {
        let (old, new) = (step.record(before), step.record(after));
        let Some(new) = new else { continue };
        if old.map(|o| o.state) == Some(new.state) {
            continue;
        }
        let (type_, reason) = match new.state {
            StepState::Running => (EventType::Normal, format!("{}Started", title(step))),
            StepState::Succeeded => (EventType::Normal, format!("{}Succeeded", title(step))),
            StepState::Failed => (EventType::Warning, new.reason.clone().unwrap_or_else(|| format!("{}Failed", title(step)))),
            StepState::Skipped => (EventType::Warning, new.reason.clone().unwrap_or_else(|| format!("{}Skipped", title(step)))),
        };
        let note = new.message.clone().unwrap_or_else(|| format!("{} step {:?}", step.name(), new.state));
        events.push(Event { type_, reason, note: Some(note), action: title(step).into(), secondary: None });
    }
    if before.phase != after.phase {
        if let Some(phase) = after.phase {
            events.push(Event {
                type_: if phase == crate::api::Phase::Failed { EventType::Warning } else { EventType::Normal },
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

fn title(step: Step) -> &'static str {
    match step {
        Step::Volatile => "Volatile",
        Step::Memory => "Memory",
        Step::Disk => "Disk",
        Step::Isolation => "Isolation",
    }
}

/// Events notes are limited to 1 kB.
fn truncate(s: &str) -> String {
    s.chars().take(1000).collect()
}
