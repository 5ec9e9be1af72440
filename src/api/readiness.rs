//! `ForensicReadiness`: whether selected instances, and the accounts and Regions they are in, could be captured
//! right now, checked on an interval with reads only, so that a missing agent, AVML or role is found before an
//! incident rather than during one. `forensic-capture readiness` runs the same check once, from a terminal.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Check, on an interval and without changing anything, that selected EC2 instances could be captured.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "forensic-capture.dev",
    version = "v1alpha1",
    kind = "ForensicReadiness",
    namespaced,
    shortname = "fcready",
    status = "ForensicReadinessStatus",
    doc = "Check, on an interval and with reads only, that selected EC2 instances and their accounts could be captured now.",
    printcolumn(name = "Instances", type_ = "integer", json_path = ".status.instances", description = "Instances selected"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.ready", description = "Instances that could be captured"),
    printcolumn(name = "NotReady", type_ = "integer", json_path = ".status.notReady", description = "Instances that could not"),
    printcolumn(name = "Checked", type_ = "date", json_path = ".status.checkedAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("size(self.instanceIds) > 0 || size(self.instanceTags) > 0").message("select instances: set instanceIds or instanceTags"))]
#[serde(rename_all = "camelCase")]
pub struct ForensicReadinessSpec {
    /// Instances by ID (in every account and Region listed).
    #[serde(default)]
    pub instance_ids: Vec<String>,

    /// Instances carrying every one of these tags with these values.
    #[serde(default)]
    pub instance_tags: BTreeMap<String, String>,

    /// Accounts to look in (12 digits); empty: the controller's own. Another account is reached through its
    /// target role, as a capture there would be.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,

    /// Regions to look in; empty: the controller's default Region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,

    /// Minutes between checks.
    #[serde(default = "default_interval")]
    #[schemars(range(min = 1, max = 10080))]
    pub interval_minutes: u32,
}

fn default_interval() -> u32 {
    60
}

/// The last check.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ForensicReadinessStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Time>,
    /// Instances selected, and how many could and could not be captured now.
    #[serde(default)]
    pub instances: u32,
    #[serde(default)]
    pub ready: u32,
    #[serde(default)]
    pub not_ready: u32,
    /// Not-ready instances by reason (an instance with two reasons counts under both).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reasons: BTreeMap<String, u32>,
    /// What containment would have to handle, by kind (AutoScalingGroup, LoadBalancers, InstanceProfile):
    /// not a problem, but what a responder wants to know beforehand.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub containment_needs: BTreeMap<String, u32>,
    /// Every instance that is not ready, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready_instances: Vec<InstanceReadiness>,
    /// The checks of each account and Region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<AccountReadiness>,
    /// Ready: every selected instance and every account check is ready.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// One instance's verdict.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceReadiness {
    pub instance_id: String,
    pub account_id: String,
    pub region: String,
    pub ready: bool,
    /// Why it could not be captured (empty when ready).
    #[serde(default)]
    pub problems: Vec<ReadinessProblem>,
    /// What containment would have to handle.
    #[serde(default)]
    pub containment_needs: Vec<String>,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessProblem {
    /// A stable reason (docs/reference.md#reasons).
    pub reason: String,
    pub message: String,
}

/// One account and Region's checks.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccountReadiness {
    pub account_id: String,
    pub region: String,
    pub checks: Vec<ReadinessCheck>,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheck {
    /// EvidenceBucket, ObjectLock, SigningKey, PresignRole, TargetRole, Permissions.
    pub name: String,
    pub ok: bool,
    /// Set when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What was checked and how (the call made), or what went wrong.
    pub message: String,
}
