//! The per-capture evidence manifest (`manifest.json` beside the artifacts): everything an auditor needs to
//! check the evidence later without trusting the controller or the cluster. Pure: built from the resource.

use kube::ResourceExt;
use serde_json::{Value, json};

use crate::api::{ArtifactType, ForensicCapture, ForensicCaptureStatus, Step};

/// Annotation a requester (or the GitOps pipeline) can set to name who asked for the capture.
pub const REQUESTED_BY_ANNOTATION: &str = "forensic-capture.dev/requested-by";
pub const FORMAT: &str = "forensic-capture-manifest/1";

/// Who asked: the annotation when present, otherwise the field managers that wrote the spec (the user
/// itself is in the Kubernetes audit log, keyed by the capture's UID).
fn requested_by(capture: &ForensicCapture) -> Value {
    let managers: Vec<Value> = capture
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| f.subresource.is_none())
        .map(|f| json!({"manager": f.manager, "operation": f.operation, "time": f.time.as_ref().map(|t| t.0.to_string())}))
        .collect();
    json!({
        "annotation": capture.annotations().get(REQUESTED_BY_ANNOTATION),
        "fieldManagers": managers,
    })
}

/// The finding a CapturePolicy created the capture from, with the finding itself as JSON (as the event carried
/// it; a finding cut to fit the resource stays the text it was). None for a capture made by hand.
fn trigger(capture: &ForensicCapture) -> Value {
    let Some(trigger) = &capture.spec.trigger else { return Value::Null };
    let mut recorded = serde_json::to_value(trigger).unwrap_or_default();
    if let Ok(finding) = serde_json::from_str::<Value>(&trigger.finding) {
        recorded["finding"] = finding;
    }
    recorded
}

/// Who asked, in one word, for a target-account session's SourceIdentity: the requested-by annotation, else
/// the first field manager that wrote the object's spec (kubectl, argocd-controller, helm, ...).
pub fn requester(meta: &kube::api::ObjectMeta) -> String {
    if let Some(who) = meta.annotations.as_ref().and_then(|a| a.get(REQUESTED_BY_ANNOTATION)).filter(|w| !w.trim().is_empty()) {
        return who.clone();
    }
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|f| f.subresource.is_none())
        .find_map(|f| f.manager.clone())
        .unwrap_or_else(|| "unknown".into())
}

/// Every snapshot with the facts an auditor checks against EC2: ID, volume, size, times, lock and the tags the
/// controller put on it.
fn snapshots(status: &ForensicCaptureStatus, tags: &[(String, String)]) -> Vec<Value> {
    let tags: serde_json::Map<String, Value> = tags.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    status
        .artifacts
        .iter()
        .filter(|a| a.kind == ArtifactType::EbsSnapshot)
        .map(|a| {
            json!({
                "snapshotId": a.uri.rsplit('/').next(),
                "arn": a.uri,
                "volumeId": a.source_volume_id,
                "sizeBytes": a.size_bytes,
                "startedAt": a.started_at.as_ref().map(|t| t.0.to_string()),
                "completedAt": a.created_at.as_ref().map(|t| t.0.to_string()),
                "state": a.state,
                "lock": a.lock,
                "tags": tags,
            })
        })
        .collect()
}

/// The manifest of a finished capture. `snapshot_tags` are the tags the controller set on every snapshot.
pub fn build(capture: &ForensicCapture, status: &ForensicCaptureStatus, controller_version: &str, snapshot_tags: &[(String, String)]) -> Value {
    let timeline: Vec<Value> = Step::ALL
        .into_iter()
        .filter_map(|step| {
            let r = step.record(status)?;
            Some(json!({
                "step": step.name(),
                "state": r.state,
                "reason": r.reason,
                "message": r.message,
                "commandId": r.command_id,
                "startedAt": r.started_at.as_ref().map(|t| t.0.to_string()),
                "completedAt": r.completed_at.as_ref().map(|t| t.0.to_string()),
            }))
        })
        .collect();
    json!({
        "format": FORMAT,
        "capture": {
            "uid": capture.uid(),
            "namespace": capture.namespace(),
            "name": capture.name_any(),
            "generation": capture.metadata.generation,
            "createdAt": capture.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
            "spec": capture.spec,
        },
        "caseId": capture.spec.case_id,
        "requestedBy": requested_by(capture),
        "trigger": trigger(capture),
        "approval": status.approval,
        "target": status.target,
        "artifacts": status.artifacts,
        "snapshots": snapshots(status, snapshot_tags),
        "containment": status.isolation,
        // A pod target's container checkpoints: when each was asked of the kubelet, where it was on the node, the
        // artifact it became and when it was removed from the node.
        "checkpoints": status.checkpoints,
        "timeline": timeline,
        "startedAt": status.started_at.as_ref().map(|t| t.0.to_string()),
        "controllerVersion": controller_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{StepRecord, StepState};

    #[test]
    fn the_requester_is_the_annotation_else_the_first_spec_writer() {
        let meta = |value: Value| -> kube::api::ObjectMeta { serde_json::from_value(value).unwrap() };
        assert_eq!(requester(&meta(json!({"annotations": {REQUESTED_BY_ANNOTATION: "alice@example.com"}}))), "alice@example.com");
        let written = meta(json!({"managedFields": [
            {"manager": "forensic-capture", "operation": "Update", "subresource": "status"},
            {"manager": "argocd-controller", "operation": "Apply"},
            {"manager": "kubectl-edit", "operation": "Update"}
        ]}));
        assert_eq!(requester(&written), "argocd-controller", "the status writer is not who asked");
        assert_eq!(requester(&meta(json!({}))), "unknown");
    }

    #[test]
    fn manifest_names_the_capture_the_requester_and_every_step() {
        let mut capture: ForensicCapture = serde_json::from_value(json!({
            "apiVersion": "forensic-capture.dev/v1alpha1",
            "kind": "ForensicCapture",
            "metadata": {"name": "c", "namespace": "ir", "uid": "u-1", "generation": 1,
                         "annotations": {REQUESTED_BY_ANNOTATION: "alice@example.com"}},
            "spec": {"caseId": "INC-1", "target": {"instanceId": "i-0123456789abcdef0"}}
        }))
        .unwrap();
        let mut status = ForensicCaptureStatus::default();
        status.steps.volatile = Some(StepRecord { state: StepState::Succeeded, command_id: Some("cmd-1".into()), ..Default::default() });
        capture.status = Some(status.clone());
        status.artifacts.push(crate::api::Artifact {
            name: "snapshot-vol-1".into(),
            kind: ArtifactType::EbsSnapshot,
            uri: "arn:aws:ec2:eu-west-1::snapshot/snap-1".into(),
            sha256: None,
            size_bytes: Some(8 << 30),
            started_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())),
            created_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())),
            state: "Available".into(),
            source_volume_id: Some("vol-1".into()),
            lock: None,
            key_id: None,
            image: None,
            copy: None,
            container: None,
        });
        capture.status = Some(status.clone());
        let manifest = build(&capture, &status, "0.1.0", &[("forensic-capture.dev/capture-uid".into(), "u-1".into())]);
        assert_eq!(manifest["format"], FORMAT);
        assert_eq!(manifest["capture"]["uid"], "u-1");
        assert_eq!(manifest["caseId"], "INC-1");
        assert_eq!(manifest["requestedBy"]["annotation"], "alice@example.com");
        assert_eq!(manifest["timeline"][0]["step"], "volatile");
        assert_eq!(manifest["timeline"][0]["commandId"], "cmd-1");
        assert_eq!(manifest["controllerVersion"], "0.1.0");
        let snapshot = &manifest["snapshots"][0];
        assert_eq!(snapshot["snapshotId"], "snap-1");
        assert_eq!(snapshot["volumeId"], "vol-1");
        assert_eq!(snapshot["tags"]["forensic-capture.dev/capture-uid"], "u-1");
        assert!(snapshot["startedAt"].is_string() && snapshot["completedAt"].is_string());
    }
}
