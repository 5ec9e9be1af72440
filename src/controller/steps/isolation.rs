//! Containment, in the AWS incident response playbook order. Each action records the prior state in the
//! status before it changes anything, so it is idempotent across restarts and can be released later:
//!   1. TerminationSafeguards: DisableApiTermination, shutdown behaviour stop, DeleteOnTermination=false;
//!   2. InstanceTags: the capture, the case and the containment state on the instance;
//!   3. AutoScaling: scale-in protection, then Standby (desired capacity lowered by one, on record);
//!   4. LoadBalancers: deregistered from every ELBv2 target group and Classic Load Balancer that holds it;
//!   4b. ElasticIps (when the spec asks): disassociated, recorded for release;
//!   5. SecurityGroups: per interface, an allow-all group first, then the isolation group, so connections
//!      tracked under the old rules become untracked and are cut;
//!   6. Credentials (when the spec asks): deny the role's sessions issued before now, swap in a deny-all
//!      instance profile.
//! An action that fails for good (AccessDenied, say) is recorded as Failed and the others still run; the
//! step then fails with a message naming what was applied and what was not.

use super::{Progress, StepContext, StepError, Writer};
use crate::{
    api::{
        AutoScalingRecord, ContainmentAction, CredentialRecord, ForensicCaptureStatus, InterfaceGroups, IsolationRecord, StepState, TerminationRecord,
        VolumeTermination,
    },
    aws::{
        AwsError, ErrorClass,
        autoscaling::AutoScalingApi,
        ec2::{Ec2Api, TerminationSettings, tags},
        elb_classic::ClassicLoadBalancingApi,
        elbv2::LoadBalancingApi,
        iam::IamApi,
    },
    controller::status::now,
    planner::Step,
};

const STEP: Step = Step::Isolation;
const ACTIONS: [&str; 7] =
    ["TerminationSafeguards", "InstanceTags", "AutoScaling", "LoadBalancers", "ElasticIps", "SecurityGroups", "Credentials"];
pub const CONTAINMENT_TAG: &str = "forensic-capture.dev/containment";

/// How an action ended, when it did not fail.
enum Outcome {
    Applied(String),
    NotNeeded(String),
}

pub async fn run(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'_>) -> Result<Progress, StepError> {
    if super::start(STEP, status) {
        writer.save(status).await?;
    }
    for name in ACTIONS {
        if action(status, name).is_some() {
            continue; // applied, not needed, or failed for good earlier
        }
        let result = match name {
            "TerminationSafeguards" => termination_safeguards(sc, status, writer).await,
            "InstanceTags" => instance_tags(sc).await,
            "AutoScaling" => auto_scaling(sc, status, writer).await,
            "LoadBalancers" => load_balancers(sc, status, writer).await,
            "ElasticIps" => elastic_ips(sc, status, writer).await,
            "SecurityGroups" => security_groups(sc, status, writer).await,
            _ => credentials(sc, status, writer).await,
        };
        let (state, reason, message) = match result {
            Ok(Outcome::Applied(m)) => ("Applied", None, m),
            Ok(Outcome::NotNeeded(m)) => ("NotNeeded", None, m),
            Err(ActionError::Retry(m)) => return Err(StepError::Retry(m)),
            Err(ActionError::Failed { reason, message }) => ("Failed", Some(reason), message),
        };
        record(status).actions.push(ContainmentAction { name: name.into(), state: state.into(), reason, message: Some(message), at: Some(now()) });
        writer.save(status).await?;
    }
    let actions = &record(status).actions;
    if actions.iter().any(|a| a.state == "Failed") {
        return Err(StepError::failed("ContainmentIncomplete", format!("instance {}: {}", sc.instance_id(), summary(actions))));
    }
    record(status).applied_at = Some(now());
    super::end(STEP, status, StepState::Succeeded, None, None);
    Ok(Progress::Continue)
}

/// "applied A, B; not needed: C; not applied: D (why)", in playbook order: what a responder reads first.
fn summary(actions: &[ContainmentAction]) -> String {
    let names = |state: &str| actions.iter().filter(|a| a.state == state).map(|a| a.name.as_str()).collect::<Vec<_>>();
    let mut parts = Vec::new();
    let applied = names("Applied");
    if !applied.is_empty() {
        parts.push(format!("applied {}", applied.join(", ")));
    }
    let not_needed = names("NotNeeded");
    if !not_needed.is_empty() {
        parts.push(format!("not needed: {}", not_needed.join(", ")));
    }
    let failed: Vec<String> = actions
        .iter()
        .filter(|a| a.state == "Failed")
        .map(|a| format!("{} ({})", a.name, a.message.as_deref().unwrap_or_default()))
        .collect();
    parts.push(format!("not applied: {}", failed.join("; ")));
    parts.join("; ")
}

fn record(status: &mut ForensicCaptureStatus) -> &mut IsolationRecord {
    status.isolation.get_or_insert_with(IsolationRecord::default)
}

fn action<'a>(status: &'a ForensicCaptureStatus, name: &str) -> Option<&'a ContainmentAction> {
    status.isolation.as_ref()?.actions.iter().find(|a| a.name == name)
}

enum ActionError {
    Retry(String),
    Failed { reason: String, message: String },
}

impl ActionError {
    fn aws(error: AwsError, instance_id: &str) -> Self {
        let message = format!("instance {instance_id}: {error}");
        match error.class() {
            ErrorClass::Retryable => ActionError::Retry(message),
            ErrorClass::AccessDenied => ActionError::Failed { reason: "AccessDenied".into(), message },
            _ => ActionError::Failed { reason: error.code.clone(), message },
        }
    }
}

impl ActionError {
    /// Notes what the action had changed before it failed for good, so the record stays exact.
    fn already(self, done: &[String]) -> Self {
        match self {
            ActionError::Failed { reason, message } if !done.is_empty() => {
                ActionError::Failed { reason, message: format!("{message} (already applied: {})", done.join(", ")) }
            }
            other => other,
        }
    }
}

impl From<StepError> for ActionError {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Retry(m) => ActionError::Retry(m),
            StepError::Failed { reason, message } | StepError::Abort { reason, message } => ActionError::Failed { reason, message },
        }
    }
}

async fn termination_safeguards(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'_>) -> Result<Outcome, ActionError> {
    let instance_id = sc.instance_id();
    let aws = |e| ActionError::aws(e, instance_id);
    if record(status).termination.is_none() {
        let settings = sc.aws.ec2.termination_settings(instance_id).await.map_err(aws)?;
        record(status).termination = Some(TerminationRecord {
            disable_api_termination: settings.disable_api_termination,
            shutdown_behavior: settings.shutdown_behavior,
            volumes: settings
                .volumes
                .into_iter()
                .map(|(device_name, volume_id, delete_on_termination)| VolumeTermination { device_name, volume_id, delete_on_termination })
                .collect(),
        });
        writer.save(status).await?;
    }
    let volumes: Vec<(String, String, bool)> = record(status)
        .termination
        .as_ref()
        .map(|t| t.volumes.iter().map(|v| (v.device_name.clone(), v.volume_id.clone(), false)).collect())
        .unwrap_or_default();
    let count = volumes.len();
    let safeguards = TerminationSettings { disable_api_termination: true, shutdown_behavior: "stop".into(), volumes };
    sc.aws.ec2.set_termination_settings(instance_id, &safeguards).await.map_err(aws)?;
    Ok(Outcome::Applied(format!("termination protection on, shutdown behaviour stop, DeleteOnTermination=false on {count} volume(s)")))
}

async fn instance_tags(sc: &StepContext<'_>) -> Result<Outcome, ActionError> {
    let mut instance_tags = sc.tags();
    instance_tags.retain(|(k, _)| k != tags::INSTANCE_ID);
    instance_tags.push((CONTAINMENT_TAG.into(), "isolated".into()));
    sc.aws.ec2.tag(sc.instance_id(), &instance_tags).await.map_err(|e| ActionError::aws(e, sc.instance_id()))?;
    Ok(Outcome::Applied(format!("tagged {CONTAINMENT_TAG}=isolated with the capture and case")))
}

async fn auto_scaling(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'_>) -> Result<Outcome, ActionError> {
    let instance_id = sc.instance_id();
    let aws = |e| ActionError::aws(e, instance_id);
    let exit = sc.capture.spec.isolation.auto_scaling;
    let Some(current) = sc.aws.autoscaling.membership(instance_id).await.map_err(aws)? else {
        // After a restart a detached instance is no longer a member: what was recorded says it was handled.
        return Ok(match &record(status).auto_scaling {
            Some(r) => Outcome::Applied(format!("detached from {} (desired capacity {} -> {})", r.group_name, r.desired_capacity, r.desired_capacity - 1)),
            None => Outcome::NotNeeded("not in an Auto Scaling group".into()),
        });
    };
    if record(status).auto_scaling.is_none() {
        record(status).auto_scaling = Some(AutoScalingRecord {
            group_name: current.group_name.clone(),
            lifecycle_state: current.lifecycle_state.clone(),
            protected_from_scale_in: current.protected_from_scale_in,
            desired_capacity: current.desired_capacity,
            exit: Some(exit),
        });
        writer.save(status).await?;
    }
    let in_service = current.lifecycle_state == "InService";
    sc.aws.autoscaling.protect_and_remove(&current.group_name, instance_id, in_service, exit).await.map_err(|e| {
        // Protection is the first call: when a later one fails, the instance is already protected.
        let protected = e.operation != "autoscaling:SetInstanceProtection";
        let done = if protected { vec![format!("scale-in protection in {}", current.group_name)] } else { Vec::new() };
        aws(e).already(&done)
    })?;
    Ok(Outcome::Applied(format!(
        "scale-in protection on and {exit:?} in {} (desired capacity {} -> {})",
        current.group_name,
        current.desired_capacity,
        if in_service { current.desired_capacity - 1 } else { current.desired_capacity }
    )))
}

async fn load_balancers(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'_>) -> Result<Outcome, ActionError> {
    let instance_id = sc.instance_id();
    let aws = |e| ActionError::aws(e, instance_id);
    // Both kinds are recorded before anything is deregistered, so release can restore all of it.
    let current = sc.aws.elbv2.registrations(instance_id).await.map_err(aws)?;
    let current_classic = sc.aws.elb_classic.load_balancers_of(instance_id).await.map_err(aws)?;
    let isolation = record(status);
    let new: Vec<_> = current.iter().filter(|r| !isolation.target_groups.contains(r)).cloned().collect();
    let new_classic: Vec<_> = current_classic.iter().filter(|n| !isolation.classic_load_balancers.contains(n)).cloned().collect();
    if !new.is_empty() || !new_classic.is_empty() {
        isolation.target_groups.extend(new);
        isolation.classic_load_balancers.extend(new_classic);
        writer.save(status).await?;
    }
    let mut deregistered = Vec::new();
    for registration in &current {
        sc.aws.elbv2.deregister(registration, instance_id).await.map_err(|e| aws(e).already(&deregistered))?;
        deregistered.push(format!("deregistered from {}", registration.target_group_arn));
    }
    for name in &current_classic {
        sc.aws.elb_classic.deregister(name, instance_id).await.map_err(|e| aws(e).already(&deregistered))?;
        deregistered.push(format!("deregistered from Classic Load Balancer {name}"));
    }
    let isolation = record(status);
    let (groups, classic) = (isolation.target_groups.len(), isolation.classic_load_balancers.len());
    if groups == 0 && classic == 0 {
        return Ok(Outcome::NotNeeded("not registered in any target group or Classic Load Balancer".into()));
    }
    Ok(Outcome::Applied(format!("deregistered from {groups} target group(s) and {classic} Classic Load Balancer(s)")))
}

async fn elastic_ips(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'_>) -> Result<Outcome, ActionError> {
    if !sc.capture.spec.isolation.disassociate_elastic_ips {
        return Ok(Outcome::NotNeeded("not requested (spec.isolation.disassociateElasticIps)".into()));
    }
    let instance_id = sc.instance_id();
    let aws = |e| ActionError::aws(e, instance_id);
    let current = sc.aws.ec2.elastic_ips(instance_id).await.map_err(aws)?;
    let recorded = &mut record(status).elastic_ips;
    let new: Vec<_> = current.iter().map(|(_, a)| a.clone()).filter(|a| !recorded.contains(a)).collect();
    if !new.is_empty() {
        recorded.extend(new);
        writer.save(status).await?;
    }
    for (association_id, _) in &current {
        sc.aws.ec2.disassociate_address(association_id).await.map_err(aws)?;
    }
    let all = &record(status).elastic_ips;
    if all.is_empty() {
        return Ok(Outcome::NotNeeded("no Elastic IP associated".into()));
    }
    let ips: Vec<&str> = all.iter().map(|a| a.public_ip.as_str()).collect();
    Ok(Outcome::Applied(format!("disassociated {}", ips.join(", "))))
}

async fn security_groups(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'_>) -> Result<Outcome, ActionError> {
    let instance_id = sc.instance_id().to_string();
    let ec2 = &sc.aws.ec2;
    let aws = |e| ActionError::aws(e, &instance_id);
    let vpc_id = sc.target.vpc_id.clone().ok_or_else(|| ActionError::Failed {
        reason: "NoVpc".into(),
        message: format!("instance {instance_id} is not in a VPC; security groups cannot isolate it"),
    })?;
    let mut group_tags = sc.tags();
    group_tags.push(("Name".into(), format!("forensic-capture {}", sc.capture.spec.case_id)));

    let isolation = match record(status).security_group_id.clone() {
        Some(id) => id,
        None => {
            let id = match ec2.isolation_group(&vpc_id, &sc.uid).await.map_err(aws)? {
                Some(id) => id,
                None => {
                    let mut t = group_tags.clone();
                    t.push((tags::ROLE.into(), "isolation".into()));
                    ec2.create_isolation_group(&vpc_id, &format!("forensic-capture-isolation-{}", sc.uid), &t).await.map_err(aws)?
                }
            };
            record(status).security_group_id = Some(id.clone());
            writer.save(status).await?;
            id
        }
    };
    ec2.ensure_isolation_rules(&isolation, &sc.capture.spec.isolation.allow_ingress_cidrs).await.map_err(aws)?;
    let transition = match record(status).transition_group_id.clone() {
        Some(id) => id,
        None => {
            let mut t = group_tags.clone();
            t.push((tags::ROLE.into(), "transition".into()));
            let id = ec2.transition_group(&vpc_id, &format!("forensic-capture-transition-{}", sc.uid), &t).await.map_err(aws)?;
            record(status).transition_group_id = Some(id.clone());
            writer.save(status).await?;
            id
        }
    };

    let info = ec2.describe_instance(&instance_id).await.map_err(aws)?.ok_or_else(|| ActionError::Failed {
        reason: "InstanceNotFound".into(),
        message: format!("instance {instance_id} disappeared before isolation"),
    })?;
    // The prior groups are recorded once, before the first change, so release can restore them.
    if record(status).previous.is_empty() {
        record(status).previous = info
            .interfaces
            .iter()
            .map(|i| InterfaceGroups { network_interface_id: i.network_interface_id.clone(), security_group_ids: i.security_group_ids.clone() })
            .collect();
        writer.save(status).await?;
    }
    for interface in &info.interfaces {
        if interface.security_group_ids == [isolation.clone()] {
            continue;
        }
        let eni = &interface.network_interface_id;
        ec2.set_interface_groups(eni, std::slice::from_ref(&transition)).await.map_err(aws)?;
        ec2.set_interface_groups(eni, std::slice::from_ref(&isolation)).await.map_err(aws)?;
    }
    Ok(Outcome::Applied(format!("{} interface(s) moved through {transition} to {isolation}", info.interfaces.len())))
}

async fn credentials(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'_>) -> Result<Outcome, ActionError> {
    let Some(wanted) = sc.capture.spec.isolation.credentials.clone() else {
        return Ok(Outcome::NotNeeded("not requested (spec.isolation.credentials)".into()));
    };
    let instance_id = sc.instance_id();
    let aws = |e| ActionError::aws(e, instance_id);
    let Some((association_id, current_arn)) = sc.aws.ec2.instance_profile(instance_id).await.map_err(aws)? else {
        return Ok(Outcome::NotNeeded("the instance has no instance profile".into()));
    };
    // Recorded once, before anything changes: after a restart the current profile may already be the deny-all one.
    if record(status).credentials.is_none() {
        let role_name = sc.aws.iam.instance_profile_role(&current_arn).await.map_err(aws)?;
        record(status).credentials = Some(CredentialRecord {
            previous_instance_profile_arn: Some(current_arn.clone()),
            role_name,
            revoke_policy_name: Some(format!("forensic-capture-revoke-{}", sc.uid)),
            revoked_before: Some(now()),
        });
        writer.save(status).await?;
    }
    let recorded = record(status).credentials.clone().unwrap_or_default();
    let mut done = Vec::new();
    if wanted.revoke_sessions {
        if let (Some(role), Some(policy), Some(before)) = (&recorded.role_name, &recorded.revoke_policy_name, &recorded.revoked_before) {
            // Whole seconds, rounded up, as IAM condition dates are usually written.
            let cut = before.0.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(1)).unwrap_or(before.0);
            let before = cut.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
            sc.aws.iam.deny_sessions_before(role, policy, &before).await.map_err(aws)?;
            done.push(format!("sessions of role {role} issued before {before} denied"));
        }
    }
    if let Some(replacement) = &wanted.replace_instance_profile {
        if &current_arn != replacement {
            sc.aws.ec2.replace_instance_profile(&association_id, replacement).await.map_err(aws)?;
        }
        done.push(format!("instance profile {current_arn} replaced by {replacement}"));
    }
    Ok(Outcome::Applied(done.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(name: &str, state: &str, message: &str) -> ContainmentAction {
        ContainmentAction { name: name.into(), state: state.into(), reason: None, message: Some(message.into()), at: None }
    }

    #[test]
    fn summary_separates_applied_not_needed_and_not_applied() {
        let actions = [
            action("TerminationSafeguards", "Applied", "on"),
            action("LoadBalancers", "Failed", "elasticloadbalancing:DeregisterTargets: AccessDenied: no"),
            action("ElasticIps", "NotNeeded", "not requested"),
            action("SecurityGroups", "Applied", "moved"),
        ];
        assert_eq!(
            summary(&actions),
            "applied TerminationSafeguards, SecurityGroups; not needed: ElasticIps; not applied: LoadBalancers (elasticloadbalancing:DeregisterTargets: AccessDenied: no)"
        );
    }

    #[test]
    fn a_failure_after_partial_changes_names_them() {
        let failed = ActionError::Failed { reason: "AccessDenied".into(), message: "autoscaling:EnterStandby: AccessDenied".into() };
        let ActionError::Failed { message, .. } = failed.already(&["scale-in protection in web".into()]) else { panic!("still failed") };
        assert_eq!(message, "autoscaling:EnterStandby: AccessDenied (already applied: scale-in protection in web)");
    }
}
