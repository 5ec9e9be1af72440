//! A dry run's plan (`spec.dryRun`): what a capture of this instance would do, read from AWS without
//! changing anything. Written once, by the controller, into `status.plan`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a capture would do to this instance, as found when the dry run looked. Nothing in it was changed.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CapturePlan {
    /// When the controller looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_at: Option<Time>,
    /// Every step in flow order (volatile, memory, disk, isolation, forensicCopy): whether it would run, and
    /// what it would do or why it would not.
    #[serde(default)]
    pub steps: Vec<PlannedStep>,
    /// Every containment action in playbook order, with the state it would change; empty when isolation is
    /// not requested.
    #[serde(default)]
    pub containment: Vec<PlannedAction>,
}

/// One step of the plan.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStep {
    /// The step's name, as in status.steps.
    pub name: String,
    /// Run; Skip or Fail (with the reason a capture would record); or NotRequested.
    pub would: StepVerdict,
    /// The stable reason a capture would record for a skip or a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the step would do (the command, the tool, the volumes) or why it would not run.
    pub message: String,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepVerdict {
    Run,
    Skip,
    Fail,
    NotRequested,
}

/// One containment action of the plan.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlannedAction {
    /// The action's name, as in status.isolation.actions.
    pub name: String,
    /// Change, NotNeeded, Fail (it could not be applied to this instance), or Unknown (the state could not
    /// be read; the message has the AWS error).
    pub would: ActionVerdict,
    /// What would be done, in a line.
    pub message: String,
    /// Each piece of state the action would change: what it is now and what it would become.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<PlannedChange>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionVerdict {
    Change,
    NotNeeded,
    Fail,
    Unknown,
}

/// One piece of state and how a capture would change it.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlannedChange {
    /// What changes: an interface's security groups, an Auto Scaling group's membership, a volume's
    /// DeleteOnTermination, ...
    pub resource: String,
    /// Its state now.
    pub from: String,
    /// Its state after containment.
    pub to: String,
}
