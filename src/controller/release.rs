//! Reconciles ContainmentRelease: restores, in reverse containment order, the prior state a capture
//! recorded. Every restore is idempotent (setting groups, registering targets, setting attributes), so a
//! restart or a second release is harmless; each one is recorded before the next starts.

use std::{sync::Arc, time::Duration};

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action as Requeue,
};
use serde_json::json;

use super::{Context, reconcile::Error, status::now};
use crate::{
    api::{ContainmentAction, ContainmentRelease, ContainmentReleaseStatus, ForensicCapture, IsolationRecord},
    aws::{
        AwsError,
        autoscaling::AutoScalingApi,
        ec2::{Ec2Api, TerminationSettings},
        elb_classic::ClassicLoadBalancingApi,
        elbv2::LoadBalancingApi,
    },
    controller::steps::isolation::CONTAINMENT_TAG,
};

const WAIT: Duration = Duration::from_secs(10);

pub async fn reconcile(release: Arc<ContainmentRelease>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let namespace = release.namespace().unwrap_or_default();
    let api: Api<ContainmentRelease> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut status = release.status.clone().unwrap_or_default();
    if status.released_at.is_some() || status.phase.as_deref() == Some("Failed") {
        return Ok(Requeue::await_change());
    }
    let captures: Api<ForensicCapture> = Api::namespaced(ctx.client.clone(), &namespace);
    let pending = |status: &mut ContainmentReleaseStatus, phase: &str, reason: &str, message: String| {
        status.phase = Some(phase.into());
        status.reason = Some(reason.into());
        status.message = Some(message);
    };
    let Some(capture) = captures.get_opt(&release.spec.capture_name).await? else {
        pending(&mut status, "Failed", "CaptureNotFound", format!("ForensicCapture {namespace}/{} does not exist", release.spec.capture_name));
        save(&api, &release, &status).await?;
        return Ok(Requeue::await_change());
    };
    let capture_status = capture.status.clone().unwrap_or_default();
    let (Some(record), Some(target)) = (capture_status.isolation.clone(), capture_status.target.clone()) else {
        pending(&mut status, "Failed", "NothingToRelease", format!("ForensicCapture {} applied no containment", capture.name_any()));
        save(&api, &release, &status).await?;
        return Ok(Requeue::await_change());
    };
    if capture_status.completed_at.is_none() {
        pending(&mut status, "Pending", "CaptureInProgress", format!("ForensicCapture {} is still running; release waits for it", capture.name_any()));
        save(&api, &release, &status).await?;
        return Ok(Requeue::requeue(WAIT));
    }
    status.capture_uid = capture.uid();
    status.instance_id = Some(target.instance_id.clone());
    let aws = ctx.aws(&target.region);
    let instance_id = target.instance_id.as_str();
    for name in ["Credentials", "SecurityGroups", "ElasticIps", "LoadBalancers", "AutoScaling", "TerminationSafeguards", "InstanceTags"] {
        if status.restored.iter().any(|r| r.name == name) {
            continue;
        }
        // A Failed action may have changed part of what it covers before the call that failed (scale-in protection
        // before a denied standby, some target groups before a denied deregistration): its prior state is on record,
        // and restoring from it is idempotent, so it is restored like an applied one.
        let applied = record.actions.iter().any(|a| a.name == name && (a.state == "Applied" || a.state == "Failed"));
        let result = if applied { restore(name, &record, instance_id, &aws).await } else { Ok("nothing was applied".into()) };
        match result {
            Ok(message) => status.restored.push(ContainmentAction {
                name: name.into(),
                state: if applied { "Restored" } else { "NotNeeded" }.into(),
                reason: None,
                message: Some(message),
                at: Some(now()),
            }),
            Err(e) if e.is_retryable() => {
                save(&api, &release, &status).await?;
                return Err(Error::Retry(format!("instance {instance_id}: {e}")));
            }
            Err(e) => {
                let reason = if e.class() == crate::aws::ErrorClass::AccessDenied { "AccessDenied".to_string() } else { e.code.clone() };
                let restored: Vec<String> = status.restored.iter().map(|r| r.name.clone()).collect();
                pending(&mut status, "Failed", &reason, format!("instance {instance_id}: restoring {name} failed: {e}; restored so far: {restored:?}"));
                save(&api, &release, &status).await?;
                return Ok(Requeue::await_change());
            }
        }
        save(&api, &release, &status).await?;
    }
    status.phase = Some("Released".into());
    status.reason = None;
    status.message = Some(format!("containment of {instance_id} released: {}", release.spec.reason));
    status.released_at = Some(now());
    save(&api, &release, &status).await?;
    Ok(Requeue::await_change())
}

async fn restore(name: &str, record: &IsolationRecord, instance_id: &str, aws: &super::RegionClients) -> Result<String, AwsError> {
    match name {
        "SecurityGroups" => {
            for interface in &record.previous {
                aws.ec2.set_interface_groups(&interface.network_interface_id, &interface.security_group_ids).await?;
            }
            Ok(format!("{} interface(s) back on their previous groups", record.previous.len()))
        }
        "Credentials" => {
            let Some(previous) = record.credentials.as_ref().and_then(|c| c.previous_instance_profile_arn.clone()) else {
                return Ok("no instance profile recorded".into());
            };
            if let Some((association_id, current)) = aws.ec2.instance_profile(instance_id).await? {
                if current != previous {
                    aws.ec2.replace_instance_profile(&association_id, &previous).await?;
                }
            }
            // The session revocation stays: new sessions work, and credentials taken before containment stay dead.
            Ok(format!("instance profile {previous} restored; revocation of older sessions kept"))
        }
        "ElasticIps" => {
            for association in &record.elastic_ips {
                aws.ec2.associate_address(association).await?;
            }
            Ok(format!("{} Elastic IP(s) associated again", record.elastic_ips.len()))
        }
        "LoadBalancers" => {
            for registration in &record.target_groups {
                aws.elbv2.register(registration, instance_id).await?;
            }
            for name in &record.classic_load_balancers {
                aws.elb_classic.register(name, instance_id).await?;
            }
            Ok(format!(
                "registered again in {} target group(s) and {} Classic Load Balancer(s)",
                record.target_groups.len(),
                record.classic_load_balancers.len()
            ))
        }
        "AutoScaling" => {
            let Some(previous) = &record.auto_scaling else { return Ok("not in an Auto Scaling group".into()) };
            let current = aws.autoscaling.membership(instance_id).await?;
            if current.is_none() && previous.exit == Some(crate::api::AutoScalingExit::Detach) {
                aws.autoscaling.attach(&previous.group_name, instance_id).await?;
            }
            let current = aws.autoscaling.membership(instance_id).await?;
            let in_standby = current.as_ref().is_some_and(|m| m.lifecycle_state == "Standby");
            aws.autoscaling
                .restore(&previous.group_name, instance_id, in_standby && previous.lifecycle_state == "InService", previous.protected_from_scale_in)
                .await?;
            Ok(format!("{} back to {} with scale-in protection {}", previous.group_name, previous.lifecycle_state, previous.protected_from_scale_in))
        }
        "TerminationSafeguards" => {
            let Some(previous) = &record.termination else { return Ok("no termination settings recorded".into()) };
            let settings = TerminationSettings {
                disable_api_termination: previous.disable_api_termination,
                shutdown_behavior: previous.shutdown_behavior.clone(),
                volumes: previous.volumes.iter().map(|v| (v.device_name.clone(), v.volume_id.clone(), v.delete_on_termination)).collect(),
            };
            aws.ec2.set_termination_settings(instance_id, &settings).await?;
            Ok(format!(
                "DisableApiTermination {}, shutdown behaviour {}, DeleteOnTermination restored on {} volume(s)",
                previous.disable_api_termination,
                previous.shutdown_behavior,
                previous.volumes.len()
            ))
        }
        _ => {
            aws.ec2.tag(instance_id, &[(CONTAINMENT_TAG.to_string(), "released".to_string())]).await?;
            Ok(format!("tagged {CONTAINMENT_TAG}=released"))
        }
    }
}

async fn save(api: &Api<ContainmentRelease>, release: &ContainmentRelease, status: &ContainmentReleaseStatus) -> Result<(), kube::Error> {
    if release.status.as_ref() == Some(status) {
        return Ok(());
    }
    api.patch_status(&release.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await?;
    Ok(())
}
