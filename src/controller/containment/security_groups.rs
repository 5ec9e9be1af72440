//! Network isolation: per interface, an allow-all group first, then the isolation group (no egress, ingress
//! only from the responder CIDRs), so connections tracked under the old rules become untracked and are cut.

use futures::future::BoxFuture;

use super::{Action, Applied, Apply, Restore};
use crate::{
    api::{InterfaceGroups, Reason},
    aws::ec2::{Ec2Api, tags},
    controller::failure::StepError,
};

pub struct SecurityGroups;

impl Action for SecurityGroups {
    fn name(&self) -> &'static str {
        "SecurityGroups"
    }

    fn apply<'x>(&'x self, cx: &'x mut Apply<'_, '_>) -> BoxFuture<'x, Result<Applied, StepError>> {
        Box::pin(async move {
            let sc = cx.sc;
            let ec2 = &sc.aws.ec2;
            let instance_id = sc.instance_id().to_string();
            let vpc_id = sc.target.vpc_id.clone().ok_or_else(|| {
                StepError::failed(Reason::NoVpc, format!("instance {instance_id} is not in a VPC; security groups cannot isolate it"))
            })?;
            let mut group_tags = sc.tags();
            group_tags.push(("Name".into(), format!("forensic-capture {}", sc.capture.spec.case_id)));
            let role_tags = |role: &str| {
                let mut t = group_tags.clone();
                t.push((tags::ROLE.into(), role.into()));
                t
            };

            // The groups have deterministic names, so a create repeated after a restart is answered
            // InvalidGroup.Duplicate and the existing group is used: their IDs need not be saved before going on,
            // and are saved with the prior groups below (or the action's result).
            let isolation = match cx.record().security_group_id.clone() {
                Some(id) => id,
                None => {
                    let name = format!("forensic-capture-isolation-{}", sc.uid);
                    let id = ec2.create_isolation_group(&vpc_id, &name, &role_tags("isolation")).await.map_err(|e| cx.error(e))?;
                    cx.record().security_group_id = Some(id.clone());
                    id
                }
            };
            ec2.ensure_isolation_rules(&isolation, &sc.capture.spec.steps.isolation.allow_ingress_cidrs).await.map_err(|e| cx.error(e))?;
            let transition = match cx.record().transition_group_id.clone() {
                Some(id) => id,
                None => {
                    let name = format!("forensic-capture-transition-{}", sc.uid);
                    let id = ec2.transition_group(&vpc_id, &name, &role_tags("transition")).await.map_err(|e| cx.error(e))?;
                    cx.record().transition_group_id = Some(id.clone());
                    id
                }
            };

            let info = cx.instance().await?.clone();
            // The prior groups are recorded once, before the first change, so release can restore them.
            if cx.record().previous.is_empty() {
                cx.record().previous = info
                    .interfaces
                    .iter()
                    .map(|i| InterfaceGroups { network_interface_id: i.network_interface_id.clone(), security_group_ids: i.security_group_ids.clone() })
                    .collect();
                cx.save().await?;
            }
            for interface in &info.interfaces {
                if interface.security_group_ids == [isolation.clone()] {
                    continue;
                }
                let eni = &interface.network_interface_id;
                ec2.set_interface_groups(eni, std::slice::from_ref(&transition)).await.map_err(|e| cx.error(e))?;
                ec2.set_interface_groups(eni, std::slice::from_ref(&isolation)).await.map_err(|e| cx.error(e))?;
            }
            Ok(Applied::Changed(format!("{} interface(s) moved through {transition} to {isolation}", info.interfaces.len())))
        })
    }

    fn restore<'x>(&'x self, cx: &'x Restore<'_>) -> BoxFuture<'x, Result<String, StepError>> {
        Box::pin(async move {
            for interface in &cx.record.previous {
                cx.aws.ec2.set_interface_groups(&interface.network_interface_id, &interface.security_group_ids).await.map_err(|e| cx.error(e))?;
            }
            Ok(format!("{} interface(s) back on their previous groups", cx.record.previous.len()))
        })
    }
}
