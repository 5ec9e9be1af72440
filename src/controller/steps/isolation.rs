//! Baseline isolation: one tagged security group for this capture in the instance's VPC (no egress, ingress
//! only from allowIngressCidrs), applied to every network interface after the prior groups are recorded.

use super::{Progress, StepContext, StepError, Writer};
use crate::{
    api::{ForensicCaptureStatus, InterfaceGroups, IsolationRecord, StepState},
    aws::ec2::{Ec2Api, tags},
    controller::status::now,
    planner::Step,
};

const STEP: Step = Step::Isolation;

pub async fn run(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'_>) -> Result<Progress, StepError> {
    if super::start(STEP, status) {
        writer.save(status).await?;
    }
    let instance_id = sc.instance_id().to_string();
    let ec2 = &sc.aws.ec2;
    let vpc_id = sc
        .target
        .vpc_id
        .clone()
        .ok_or_else(|| StepError::failed("NoVpc", format!("instance {instance_id} is not in a VPC; security groups cannot isolate it")))?;
    let aws_err = |e| StepError::aws(e, &instance_id, "IsolationFailed");

    let group_id = match status.isolation.as_ref().and_then(|i| i.security_group_id.clone()) {
        Some(id) => id,
        None => {
            let id = match ec2.isolation_group(&vpc_id, &sc.uid).await.map_err(aws_err)? {
                Some(id) => id,
                None => {
                    let mut group_tags = sc.tags();
                    group_tags.push((tags::ROLE.into(), "isolation".into()));
                    group_tags.push(("Name".into(), format!("forensic-capture isolation {}", sc.capture.spec.case_id)));
                    ec2.create_isolation_group(&vpc_id, &format!("forensic-capture-isolation-{}", sc.uid), &group_tags)
                        .await
                        .map_err(aws_err)?
                }
            };
            status.isolation.get_or_insert_with(IsolationRecord::default).security_group_id = Some(id.clone());
            writer.save(status).await?;
            id
        }
    };
    ec2.ensure_isolation_rules(&group_id, &sc.capture.spec.isolation.allow_ingress_cidrs).await.map_err(aws_err)?;

    let info = ec2.describe_instance(&instance_id).await.map_err(aws_err)?.ok_or_else(|| StepError::Abort {
        reason: "InstanceNotFound".into(),
        message: format!("instance {instance_id} disappeared before isolation"),
    })?;
    // The prior groups are recorded once, before the first change, so release can restore them.
    let record = status.isolation.get_or_insert_with(IsolationRecord::default);
    if record.previous.is_empty() {
        record.previous = info
            .interfaces
            .iter()
            .map(|i| InterfaceGroups { network_interface_id: i.network_interface_id.clone(), security_group_ids: i.security_group_ids.clone() })
            .collect();
        writer.save(status).await?;
    }
    for interface in &info.interfaces {
        if interface.security_group_ids != [group_id.clone()] {
            ec2.set_interface_groups(&interface.network_interface_id, std::slice::from_ref(&group_id)).await.map_err(aws_err)?;
        }
    }
    status.isolation.get_or_insert_with(IsolationRecord::default).applied_at = Some(now());
    super::end(STEP, status, StepState::Succeeded, None, None);
    Ok(Progress::Continue)
}
