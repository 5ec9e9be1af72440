//! `CaptureApproval`, and what a finding-driven capture records about its origin and its approval.
//!
//! Why approval is its own resource (like ContainmentRelease): the capture's spec is the immutable record of
//! what was asked, by a policy; the approval is a person's decision, later. As its own object it has its own
//! author in Git and the audit log and its own reason, and the capture records which approval let it start.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Approve a ForensicCapture that waits for approval (created by a CapturePolicy in Approval mode).
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "forensic-capture.dev",
    version = "v1alpha1",
    kind = "CaptureApproval",
    namespaced,
    shortname = "fca",
    status = "CaptureApprovalStatus",
    doc = "Approve a ForensicCapture that waits for approval (created by a CapturePolicy in Approval mode).",
    printcolumn(name = "Capture", type_ = "string", json_path = ".spec.captureName", description = "The ForensicCapture approved"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Approved, Pending, NotFound or NotWaiting"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: an approval is a record"))]
#[serde(rename_all = "camelCase")]
pub struct CaptureApprovalSpec {
    /// Name of the ForensicCapture, in this namespace, that may start.
    #[schemars(length(min = 1, max = 253))]
    pub capture_name: String,
    /// Why the capture is approved; kept in the capture's record and its manifest.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CaptureApprovalStatus {
    /// Approved (the capture took this approval and started), Pending (the capture has not looked yet),
    /// NotFound (no such capture) or NotWaiting (the capture does not wait for approval, or another approval
    /// already let it start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// UID of the capture approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_uid: Option<String>,
    /// Stable reason for NotFound and NotWaiting (CaptureNotFound, ApprovalNotRequired, AlreadyApproved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Which approval let a capture start (status.approval).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRecord {
    /// The CaptureApproval's name and UID.
    pub name: String,
    pub uid: String,
    pub reason: String,
    /// Who approved: its requested-by annotation, else the field manager that wrote it (the user is in the
    /// Kubernetes audit log under the approval's UID).
    pub approved_by: String,
    pub approved_at: Time,
}

/// The finding a CapturePolicy created a capture from (spec.trigger).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FindingTrigger {
    /// The CapturePolicy (in the capture's namespace).
    pub policy: String,
    pub source: FindingSourceKind,
    /// The finding's ID (GuardDuty's id, Security Hub's Id).
    pub finding_id: String,
    /// GuardDuty's type, or Security Hub's first Types entry.
    pub finding_type: String,
    /// GuardDuty's numeric severity, or Security Hub's severity label.
    pub severity: String,
    pub account_id: String,
    pub region: String,
    /// The custom action's ARN, for a Security Hub custom action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_arn: Option<String>,
    /// The ID of the EventBridge event and of the SQS message that carried it.
    pub event_id: String,
    pub message_id: String,
    /// The finding itself as JSON, as the event carried it (cut at 32 KiB, which `findingTruncated` says).
    pub finding: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finding_truncated: bool,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum FindingSourceKind {
    GuardDuty,
    SecurityHubCustomAction,
    SecurityHubFinding,
}

impl FindingSourceKind {
    pub fn name(self) -> &'static str {
        match self {
            FindingSourceKind::GuardDuty => "GuardDuty",
            FindingSourceKind::SecurityHubCustomAction => "SecurityHubCustomAction",
            FindingSourceKind::SecurityHubFinding => "SecurityHubFinding",
        }
    }
}
