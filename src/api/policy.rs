//! `CapturePolicy`: which security findings lead to captures, and what those captures do.
//!
//! Findings arrive from an SQS queue that EventBridge rules feed (docs/findings.md). A policy selects findings
//! (GuardDuty types and severity, Security Hub custom actions, Security Hub findings), narrows them by account,
//! Region and instance tags, and creates one ForensicCapture per finding and instance from its template, in its
//! own namespace: at once (`Automatic`) or waiting for a CaptureApproval (`Approval`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{EvidenceLocation, StepSpecs};

/// Create ForensicCaptures from GuardDuty and Security Hub findings delivered through SQS.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "forensic-capture.dev",
    version = "v1alpha1",
    kind = "CapturePolicy",
    namespaced,
    shortname = "fcp",
    status = "CapturePolicyStatus",
    doc = "Which GuardDuty and Security Hub findings lead to ForensicCaptures (created in this namespace), and what those captures do.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode", description = "Automatic or Approval"),
    printcolumn(name = "Matched", type_ = "integer", json_path = ".status.findingsMatched", description = "Findings that matched"),
    printcolumn(name = "Created", type_ = "integer", json_path = ".status.capturesCreated", description = "Captures created"),
    printcolumn(name = "Last", type_ = "string", json_path = ".status.lastCapture", description = "The last capture created"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct CapturePolicySpec {
    /// Which findings match: a finding matches when any one source selects it.
    pub sources: FindingSources,

    /// Only findings from these AWS accounts (12 digits); any account when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,

    /// Only findings from these Regions; any Region when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,

    /// Only instances carrying every one of these tags with these values, as the finding reports the
    /// instance's tags (GuardDuty's instanceDetails.tags, Security Hub's Resources[].Tags). A finding that
    /// reports no tags does not match a policy that asks for some.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instance_tags: BTreeMap<String, String>,

    /// Automatic: capture at once. Approval: create the capture with spec.requiresApproval, so that it waits
    /// (phase Pending, reason AwaitingApproval) and does nothing in AWS until a CaptureApproval names it.
    pub mode: PolicyMode,

    /// The captures' spec, without the target (the finding names the instance).
    pub template: CaptureTemplate,

    /// At most this many captures per hour from this policy, counted from the captures that exist (so a
    /// restart does not reset it). A finding over the limit creates nothing and is counted in
    /// status.suppressedByRateLimit.
    #[serde(default = "default_rate")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_captures_per_hour: u32,

    /// A second finding for an instance that a capture from a policy in this namespace was created for within
    /// this many minutes creates nothing (status.suppressedAsDuplicate): one incident, one capture. 0 turns it
    /// off; the same finding delivered again never creates a second capture whatever this says.
    #[serde(default = "default_window")]
    #[schemars(range(max = 10080))]
    pub deduplication_window_minutes: u32,
}

fn default_rate() -> u32 {
    10
}

fn default_window() -> u32 {
    60
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum PolicyMode {
    Automatic,
    Approval,
}

/// Finding sources; at least one must be set.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.guardDuty) || size(self.securityHubCustomActions) > 0 || has(self.securityHubFindings)").message("set at least one source: guardDuty, securityHubCustomActions or securityHubFindings"))]
#[serde(rename_all = "camelCase")]
pub struct FindingSources {
    /// GuardDuty findings about an EC2 instance, or about an EKS node (Runtime Monitoring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard_duty: Option<GuardDutySource>,

    /// Security Hub custom action ARNs (arn:aws:securityhub:REGION:ACCOUNT:action/custom/ID): a responder who
    /// sends a finding to one of these actions asks for its instance to be captured. Any severity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_hub_custom_actions: Vec<String>,

    /// Security Hub findings imported into Security Hub (from any product), by type and severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_hub_findings: Option<SecurityHubFindingSource>,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GuardDutySource {
    /// Finding types, with `*` matching any run of characters (`Backdoor:EC2/*`, `*:Runtime/*`); all types
    /// when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finding_types: Vec<String>,

    /// The least GuardDuty severity (1.0 to 10.0; 7.0 and above is High).
    #[serde(default = "default_guardduty_severity")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub min_severity: f64,
}

fn default_guardduty_severity() -> f64 {
    7.0
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecurityHubFindingSource {
    /// ASFF finding types, with `*` matching any run of characters (`TTPs/Command and Control/*`); all types
    /// when empty. A finding matches when any of its Types matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,

    /// The least severity label.
    #[serde(default = "default_label")]
    pub min_severity_label: SeverityLabel,
}

fn default_label() -> SeverityLabel {
    SeverityLabel::High
}

/// Security Hub's severity labels, in order.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum SeverityLabel {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

/// The ForensicCapture spec a policy creates, minus the target.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CaptureTemplate {
    /// Start of each capture's caseId, followed by `-` and the finding's ID (cut to fit 64 characters).
    #[serde(default = "default_case_prefix")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,23}$"))]
    pub case_id_prefix: String,

    /// The steps and their settings, as in a ForensicCapture.
    #[serde(flatten)]
    pub steps: StepSpecs,

    /// Where evidence is stored; the controller's defaults apply to fields left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidenceLocation>,

    /// Create dry runs (status.plan) instead of captures.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

fn default_case_prefix() -> String {
    "finding".into()
}

/// What the policy has done, counted since it was created.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CapturePolicyStatus {
    /// Findings (per instance) that this policy's sources and filters selected.
    #[serde(default)]
    pub findings_matched: u64,
    /// Captures this policy created.
    #[serde(default)]
    pub captures_created: u64,
    /// Matched findings whose capture already existed (the same finding delivered again).
    #[serde(default)]
    pub already_captured: u64,
    /// Matched findings that created nothing because maxCapturesPerHour was reached.
    #[serde(default)]
    pub suppressed_by_rate_limit: u64,
    /// Matched findings that created nothing because the instance was captured within the de-duplication
    /// window.
    #[serde(default)]
    pub suppressed_as_duplicate: u64,
    /// The last capture created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_capture: Option<String>,
    /// The last finding that matched, with what became of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_finding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_finding_at: Option<Time>,
}
