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

/// The resourceVersions of each capture's recent status writes by this process.
///
/// The watch brings every write back as an event, and an event starts a reconcile at once, whatever backoff
/// the capture is in: a capture whose failed attempts each write its status (an intent cleared, a condition
/// set) would retry in a loop. The controller's own writes are therefore not triggers (mod.rs filters them
/// out); the reconcile that made them has already requeued itself for when it needs to look again. Changes by
/// anyone else (a spec edit, a deletion, a label, another controller) still trigger at once.
#[derive(Debug, Default)]
pub struct OwnWrites(std::sync::Mutex<std::collections::HashMap<String, std::collections::VecDeque<String>>>);

/// One reconcile can write several times (an intent, then its result) before the watch brings the first write
/// back, so the last few versions each count as this process's own.
const OWN_VERSIONS_KEPT: usize = 16;

impl OwnWrites {
    pub fn record(&self, uid: &str, resource_version: &str) {
        let mut writes = self.0.lock().expect("own writes lock");
        let versions = writes.entry(uid.to_string()).or_default();
        if versions.len() == OWN_VERSIONS_KEPT {
            versions.pop_front();
        }
        versions.push_back(resource_version.to_string());
    }

    /// Whether this version of the object is one this process wrote.
    pub fn is_own(&self, uid: &str, resource_version: &str) -> bool {
        self.0.lock().expect("own writes lock").get(uid).is_some_and(|versions| versions.iter().any(|rv| rv == resource_version))
    }

    /// The version this process last wrote, if any.
    pub fn last(&self, uid: &str) -> Option<String> {
        self.0.lock().expect("own writes lock").get(uid).and_then(|versions| versions.back().cloned())
    }

    pub fn forget(&self, uid: &str) {
        self.0.lock().expect("own writes lock").remove(uid);
    }
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
            // Only what changed, with removed fields as null: a merge patch leaves a field it does not mention
            // as it was, so a cleared field (an intent withdrawn) must be sent as null to be cleared.
            let old = serde_json::to_value(&self.written).unwrap_or_default();
            let new = serde_json::to_value(&*status).unwrap_or_default();
            let body = json!({ "metadata": { "resourceVersion": self.resource_version }, "status": merge_diff(&old, &new) });
            self.ctx.metrics.status_patched();
            match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(body)).await {
                Ok(patched) => {
                    self.resource_version = patched.resource_version();
                    if let (Some(uid), Some(rv)) = (self.capture.uid(), &self.resource_version) {
                        self.ctx.own_writes.record(&uid, rv);
                    }
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
    // A capture that starts waiting on persistent trouble says so once, when its Ready condition turns to it.
    let ready_reason = |s: &ForensicCaptureStatus| s.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.reason.clone());
    if ready_reason(after).as_deref() == Some(Reason::RetryingAfterError.as_str()) && ready_reason(before) != ready_reason(after) {
        let message = after.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.message.clone()).unwrap_or_default();
        events.push(Event { type_: EventType::Warning, reason: Reason::RetryingAfterError.into(), note: Some(message), action: "Reconcile".into(), secondary: None });
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

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: changed and added members, removed members as
/// null; objects are compared member by member, anything else (arrays included) is replaced whole.
pub fn merge_diff(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::{Map, Value};
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = Map::new();
            for (key, value) in new {
                match old.get(key) {
                    Some(previous) if previous == value => {}
                    Some(previous @ Value::Object(_)) if value.is_object() => {
                        patch.insert(key.clone(), merge_diff(previous, value));
                    }
                    _ => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{OwnWrites, merge_diff};

    #[test]
    fn each_recent_own_write_is_recognised_and_the_last_is_the_newest() {
        let own = OwnWrites::default();
        own.record("u", "10");
        own.record("u", "11");
        assert!(own.is_own("u", "10"), "an earlier write of the same reconcile is still this process's own");
        assert!(own.is_own("u", "11"));
        assert!(!own.is_own("u", "12"), "someone else's change");
        assert!(!own.is_own("other", "11"));
        assert_eq!(own.last("u").as_deref(), Some("11"));
        for rv in 12..40 {
            own.record("u", &rv.to_string());
        }
        assert!(!own.is_own("u", "10"), "only the last few are kept");
        own.forget("u");
        assert_eq!(own.last("u"), None);
    }

    /// RFC 7386's own merge, to check that the diff applied to the old value gives the new one.
    fn apply(target: &serde_json::Value, patch: &serde_json::Value) -> serde_json::Value {
        match patch {
            serde_json::Value::Object(members) => {
                let mut result = target.as_object().cloned().unwrap_or_default();
                for (key, value) in members {
                    if value.is_null() {
                        result.remove(key);
                    } else {
                        let merged = apply(result.get(key).unwrap_or(&serde_json::Value::Null), value);
                        result.insert(key.clone(), merged);
                    }
                }
                serde_json::Value::Object(result)
            }
            other => other.clone(),
        }
    }

    #[test]
    fn a_cleared_field_is_sent_as_null_and_unchanged_ones_not_at_all() {
        let old = json!({"phase": "Acquiring", "steps": {"disk": {"state": "Running", "createRequestedAt": "t"}, "memory": {"state": "Succeeded"}}});
        let new = json!({"phase": "Acquiring", "steps": {"disk": {"state": "Running"}, "memory": {"state": "Succeeded"}}});
        let patch = merge_diff(&old, &new);
        assert_eq!(patch, json!({"steps": {"disk": {"createRequestedAt": null}}}));
        assert_eq!(apply(&old, &patch), new);
    }

    #[test]
    fn arrays_are_replaced_whole_and_new_members_added() {
        let old = json!({"artifacts": [{"name": "a"}], "conditions": [{"type": "Ready"}]});
        let new = json!({"artifacts": [{"name": "a"}, {"name": "b"}], "conditions": [{"type": "Ready"}], "completedAt": "t"});
        let patch = merge_diff(&old, &new);
        assert_eq!(patch, json!({"artifacts": [{"name": "a"}, {"name": "b"}], "completedAt": "t"}));
        assert_eq!(apply(&old, &patch), new);
        assert_eq!(merge_diff(&json!({}), &new), new, "from nothing, everything");
    }
}
