//! A dry run's reads (spec.dryRun): everything a capture would change, read with Describe/List/Get calls
//! only, then handed to the pure planner (src/planner/dry_run.rs). Nothing here writes to AWS: no command,
//! snapshot, group, tag, lock or manifest. A refused read is not a failure of the dry run: it is shown as
//! Unknown in the plan, with the AWS error, which is what a responder preparing for an incident needs to see.

use super::{failure::StepError, status::now, step_context::StepContext};
use crate::{
    api::CapturePlan,
    aws::{autoscaling::AutoScalingApi, ec2::Ec2Api, elb_classic::ClassicLoadBalancingApi, elbv2::LoadBalancingApi, iam::IamApi},
    planner::dry_run::{Observed, Read, Settings, plan},
};

pub async fn make_plan(sc: &StepContext<'_>) -> Result<CapturePlan, StepError> {
    let spec = &sc.capture.spec;
    let isolation = &spec.steps.isolation;
    let instance_id = sc.instance_id();
    let aws = &sc.aws;
    let instance = aws
        .ec2
        .describe_instance(instance_id)
        .await
        .map_err(|e| StepError::on_instance(e, instance_id, crate::api::Reason::TargetLookupFailed))?
        .ok_or_else(|| StepError::abort(crate::api::Reason::InstanceNotFound, format!("instance {instance_id} disappeared during the dry run")))?;
    let containment = crate::api::Step::Isolation.enabled(spec);
    // Only what the plan shows is read: containment's state when isolation is requested, Elastic IPs and the
    // instance profile only when the spec would change them.
    let observed = Observed {
        interfaces: instance.interfaces.iter().map(|i| (i.network_interface_id.clone(), i.security_group_ids.clone())).collect(),
        volumes: instance.volumes.clone(),
        root_device: instance.root_device_name.clone(),
        termination: read_if(instance_id, containment, || async {
            aws.ec2.termination_settings(&instance).await.map(|t| (t.disable_api_termination, t.shutdown_behavior))
        })
        .await?,
        auto_scaling: read_if(instance_id, containment, || async {
            aws.autoscaling.membership(instance_id).await.map(|m| m.map(|m| (m.group_name, m.lifecycle_state, m.protected_from_scale_in, m.desired_capacity)))
        })
        .await?,
        target_groups: read_if(instance_id, containment, || aws.elbv2.registrations(instance_id)).await?,
        classic_load_balancers: read_if(instance_id, containment, || aws.elb_classic.load_balancers_of(instance_id)).await?,
        elastic_ips: read_if(instance_id, containment && isolation.disassociate_elastic_ips, || async {
            aws.ec2.elastic_ips(instance_id).await.map(|ips| ips.into_iter().map(|(_, a)| a).collect())
        })
        .await?,
        instance_profile: read_if(instance_id, containment && isolation.credentials.is_some(), || async {
            match aws.ec2.instance_profile(instance_id).await? {
                None => Ok(None),
                Some((_, arn)) => {
                    let role = aws.iam.instance_profile_role(&arn).await?;
                    Ok(Some((arn, role)))
                }
            }
        })
        .await?,
    };
    let settings = Settings {
        avml: sc.target.architecture.as_deref().and_then(|a| sc.ctx.config.avml_for(a)).map(|(uri, sha)| format!("{uri} (SHA-256 {sha})")),
        evidence: sc.evidence().map_err(|e| e.to_string()),
        forensic_destination: spec.steps.disk.forensic_copy.as_ref().map(|copy| {
            sc.ctx.config.accounts.forensic_destination(copy, &sc.target.region).map(|d| {
                format!("account {} region {} under key {} (through {})", d.account_id, d.region, d.kms_key_id, d.role_arn)
            })
        }),
        uid: sc.uid.clone(),
    };
    let mut planned = plan(spec, &sc.target, &observed, &settings);
    planned.planned_at = Some(now());
    Ok(planned)
}

/// `read()` when the plan needs it, else nothing (an empty answer that the plan does not show). A transient
/// error (throttling, 5xx) is retried like any capture's; any other refusal goes into the plan.
async fn read_if<T: Default, F, Fut>(instance_id: &str, needed: bool, read: F) -> Result<Read<T>, StepError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::aws::AwsError>>,
{
    if !needed {
        return Ok(Ok(T::default()));
    }
    match read().await {
        Ok(value) => Ok(Ok(value)),
        Err(e) if e.is_retryable() => Err(retry(e, instance_id)),
        Err(e) => Ok(Err(e.to_string())),
    }
}

fn retry(error: crate::aws::AwsError, instance_id: &str) -> StepError {
    StepError::on_instance(error, instance_id, crate::api::Reason::TargetLookupFailed)
}
