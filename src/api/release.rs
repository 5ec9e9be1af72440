//! `ContainmentRelease`: undoing a capture's containment, as its own auditable record.
//!
//! Why a separate resource rather than a field on the capture: the capture's spec is the immutable record of
//! what was asked, and a release is a different decision, usually by a different person, later. As its own
//! object it has its own author in Git and in the audit log, its own reason, and its own status recording
//! exactly what was restored; deleting it does not re-contain anything.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::ContainmentAction;

/// Release the containment a ForensicCapture applied: restore security groups, target group registrations,
/// Auto Scaling state, termination settings and tags from the prior state the capture recorded.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "forensic-capture.dev",
    version = "v1alpha1",
    kind = "ContainmentRelease",
    namespaced,
    shortname = "fcr",
    status = "ContainmentReleaseStatus",
    doc = "Release the containment applied by a ForensicCapture, restoring the prior state it recorded.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Pending, Released or Failed"),
    printcolumn(name = "Capture", type_ = "string", json_path = ".spec.captureName", description = "The ForensicCapture released"),
    printcolumn(name = "Instance", type_ = "string", json_path = ".status.instanceId", description = "EC2 instance"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: a release is a record"))]
#[serde(rename_all = "camelCase")]
pub struct ContainmentReleaseSpec {
    /// Name of the ForensicCapture, in this namespace, whose containment is released.
    #[schemars(length(min = 1, max = 253))]
    pub capture_name: String,
    /// Why containment is released; kept in the record.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
}

/// What the release restored.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainmentReleaseStatus {
    /// Pending, Released or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// UID of the capture released (guards against a later capture with the same name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_uid: Option<String>,
    /// The instance released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// Each restore, in reverse containment order.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub restored: Vec<ContainmentAction>,
    /// Stable reason when Pending or Failed (CaptureNotFound, CaptureInProgress, NothingToRelease, AccessDenied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Detail, naming the instance and the AWS error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When everything was restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<Time>,
}
