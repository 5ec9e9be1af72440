//! Containment as a list of actions, in the AWS incident response playbook order. Each action is one module
//! with its `apply` (which records the prior state in the status before it changes anything, so it is
//! idempotent across restarts) and its `restore` (which puts that prior state back). Isolation applies the
//! list in order; a ContainmentRelease restores it in reverse, by construction. A new action is one module
//! and one line in `PLAYBOOK`.
//!
//! An action that fails for good (AccessDenied, say) is recorded as Failed and the others still run; the step
//! then fails with a message naming what was applied and what was not.

mod auto_scaling;
mod credentials;
mod elastic_ips;
mod instance_tags;
mod load_balancers;
mod node_cordon;
mod pod_quarantine;
mod security_groups;
mod termination_safeguards;

use futures::future::BoxFuture;

pub use crate::planner::{ContainmentScope as Scope, containment_applies as applies};

use super::{
    failure::{OnError, StepError},
    status::Writer,
    step_context::StepContext,
};
use crate::{
    api::{ForensicCaptureStatus, IsolationRecord},
    aws::{
        AwsError, CaptureClients,
        ec2::{Ec2Api, InstanceInfo},
    },
};

/// The playbook, in order. For a pod target the pod's own containment comes first (it is what the capture is
/// about, and takes a second); the instance's applies only when spec.pod.isolateNode asks.
pub const PLAYBOOK: &[&dyn Action] = &[
    &pod_quarantine::PodQuarantine,
    &node_cordon::NodeCordon,
    &termination_safeguards::TerminationSafeguards,
    &instance_tags::InstanceTags,
    &auto_scaling::AutoScaling,
    &load_balancers::LoadBalancers,
    &elastic_ips::ElasticIps,
    &security_groups::SecurityGroups,
    &credentials::Credentials,
];

/// How an action ended, when it did not fail.
pub enum Applied {
    /// Changed, with what was done.
    Changed(String),
    /// Nothing to change, and why.
    NotNeeded(String),
}

/// What `apply` works with: the capture, and its status to record prior state in before each change.
pub struct Apply<'s, 'a> {
    pub sc: &'s StepContext<'a>,
    pub status: &'s mut ForensicCaptureStatus,
    pub writer: &'s mut Writer<'a>,
    /// The instance as described once per isolation run, for every action that needs it.
    pub instance: &'s mut Option<InstanceInfo>,
}

impl Apply<'_, '_> {
    /// The instance as EC2 described it when this isolation run first asked: described once, not per action.
    /// No action changes what another reads from it (interfaces' groups, volumes), and each reads it before
    /// its own change.
    pub async fn instance(&mut self) -> Result<&InstanceInfo, StepError> {
        if self.instance.is_none() {
            let instance_id = self.sc.instance_id();
            let info = self.sc.aws.ec2.describe_instance(instance_id).await.map_err(|e| self.error(e))?.ok_or_else(|| {
                StepError::failed(crate::api::Reason::InstanceNotFound, format!("instance {instance_id} disappeared before isolation"))
            })?;
            *self.instance = Some(info);
        }
        Ok(self.instance.as_ref().expect("described above"))
    }

    pub fn record(&mut self) -> &mut IsolationRecord {
        self.status.isolation.get_or_insert_with(IsolationRecord::default)
    }

    /// Saves the status: prior state is on record before the change that follows.
    pub async fn save(&mut self) -> Result<(), StepError> {
        self.writer.save(self.status).await
    }

    pub fn instance_id(&self) -> &str {
        self.sc.instance_id()
    }

    /// An AWS error of this action: transient ones are retried, the rest fail the action alone.
    pub fn error(&self, error: AwsError) -> StepError {
        StepError::aws(error, &self.sc.subject(), OnError::ACTION)
    }
}

/// What `restore` works with: the record the capture kept, the instance's AWS clients and the cluster.
pub struct Restore<'a> {
    pub record: &'a IsolationRecord,
    pub instance_id: &'a str,
    pub aws: &'a CaptureClients,
    pub client: &'a kube::Client,
}

impl Restore<'_> {
    pub fn error(&self, error: AwsError) -> StepError {
        StepError::aws(error, &format!("instance {}", self.instance_id), OnError::ACTION)
    }
}

/// A Kubernetes API error of a containment action: refusals and missing objects fail the action (naming what
/// was refused); the rest is retried.
pub fn kube_error(subject: &str, not_found: crate::api::Reason, error: kube::Error) -> StepError {
    use crate::api::Reason;
    match &error {
        kube::Error::Api(e) if e.code == 403 => StepError::failed(Reason::AccessDenied, format!("{subject}: the Kubernetes API refused the controller: {}", e.message)),
        kube::Error::Api(e) if e.code == 404 => StepError::failed(not_found, format!("{subject}: not found: {}", e.message)),
        kube::Error::Api(e) if e.code == 422 || e.code == 400 || e.code == 409 => {
            StepError::failed(Reason::ContainmentIncomplete, format!("{subject}: the Kubernetes API rejected the change: {}", e.message))
        }
        _ => StepError::retry(format!("{subject}: Kubernetes API: {error}")),
    }
}

/// One containment action and its undoing.
pub trait Action: Sync {
    /// The stable name in status.isolation.actions and the release's restored list.
    fn name(&self) -> &'static str;

    /// What it contains (most actions: the instance).
    fn scope(&self) -> Scope {
        Scope::Instance
    }

    /// Applies the action, recording the prior state first.
    fn apply<'x>(&'x self, cx: &'x mut Apply<'_, '_>) -> BoxFuture<'x, Result<Applied, StepError>>;

    /// Puts the recorded prior state back; returns what was done. Idempotent, and safe after an action that
    /// failed part-way (its prior state is on record before its first change).
    fn restore<'x>(&'x self, cx: &'x Restore<'_>) -> BoxFuture<'x, Result<String, StepError>>;
}

/// "applied A, B; not needed: C; not applied: D (why)", in playbook order: what a responder reads first.
pub fn summary(actions: &[crate::api::ContainmentAction]) -> String {
    use crate::api::ActionState;
    let names = |state: ActionState| actions.iter().filter(|a| a.state == state).map(|a| a.name.as_str()).collect::<Vec<_>>();
    let mut parts = Vec::new();
    let applied = names(ActionState::Applied);
    if !applied.is_empty() {
        parts.push(format!("applied {}", applied.join(", ")));
    }
    let not_needed = names(ActionState::NotNeeded);
    if !not_needed.is_empty() {
        parts.push(format!("not needed: {}", not_needed.join(", ")));
    }
    let failed: Vec<String> = actions
        .iter()
        .filter(|a| a.state == ActionState::Failed)
        .map(|a| format!("{} ({})", a.name, a.message.as_deref().unwrap_or_default()))
        .collect();
    parts.push(format!("not applied: {}", failed.join("; ")));
    parts.join("; ")
}

/// Notes what an action had changed before it failed for good, so the record stays exact.
pub fn already(error: StepError, done: &[String]) -> StepError {
    match error {
        StepError::Retry { .. } => error,
        _ if done.is_empty() => error,
        _ => error.note(|m| format!("{m} (already applied: {})", done.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ActionState, ContainmentAction, Reason};

    fn action(name: &str, state: ActionState, message: &str) -> ContainmentAction {
        ContainmentAction { name: name.into(), state, reason: None, message: Some(message.into()), at: None }
    }

    #[test]
    fn every_action_has_its_own_name() {
        let mut names: Vec<&str> = PLAYBOOK.iter().map(|a| a.name()).collect();
        assert_eq!(names, ["PodQuarantine", "NodeCordon", "TerminationSafeguards", "InstanceTags", "AutoScaling", "LoadBalancers", "ElasticIps", "SecurityGroups", "Credentials"]);
        names.sort();
        names.dedup();
        assert_eq!(names.len(), PLAYBOOK.len());
    }

    #[test]
    fn summary_separates_applied_not_needed_and_not_applied() {
        let actions = [
            action("TerminationSafeguards", ActionState::Applied, "on"),
            action("LoadBalancers", ActionState::Failed, "elasticloadbalancing:DeregisterTargets: AccessDenied: no"),
            action("ElasticIps", ActionState::NotNeeded, "not requested"),
            action("SecurityGroups", ActionState::Applied, "moved"),
        ];
        assert_eq!(
            summary(&actions),
            "applied TerminationSafeguards, SecurityGroups; not needed: ElasticIps; not applied: LoadBalancers (elasticloadbalancing:DeregisterTargets: AccessDenied: no)"
        );
    }

    #[test]
    fn a_failure_after_partial_changes_names_them() {
        let failed = StepError::failed(Reason::AccessDenied, "autoscaling:EnterStandby: AccessDenied");
        let StepError::Failed { message, .. } = already(failed, &["scale-in protection in web".into()]) else { panic!("still failed") };
        assert_eq!(message, "autoscaling:EnterStandby: AccessDenied (already applied: scale-in protection in web)");
    }
}
