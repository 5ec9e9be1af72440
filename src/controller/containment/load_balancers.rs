//! Deregistered from every ELBv2 target group and Classic Load Balancer that holds the instance, so no
//! traffic is routed to it; both kinds are recorded before anything is deregistered.

use futures::future::BoxFuture;

use super::{Action, Applied, Apply, Restore, already};
use crate::{
    aws::{elb_classic::ClassicLoadBalancingApi, elbv2::LoadBalancingApi},
    controller::failure::StepError,
};

pub struct LoadBalancers;

impl Action for LoadBalancers {
    fn name(&self) -> &'static str {
        "LoadBalancers"
    }

    fn apply<'x>(&'x self, cx: &'x mut Apply<'_, '_>) -> BoxFuture<'x, Result<Applied, StepError>> {
        Box::pin(async move {
            let instance_id = cx.instance_id().to_string();
            let (elbv2, classic) = (&cx.sc.aws.elbv2, &cx.sc.aws.elb_classic);
            let current = elbv2.registrations(&instance_id).await.map_err(|e| cx.error(e))?;
            let current_classic = classic.load_balancers_of(&instance_id).await.map_err(|e| cx.error(e))?;
            let record = cx.record();
            let new: Vec<_> = current.iter().filter(|r| !record.target_groups.contains(r)).cloned().collect();
            let new_classic: Vec<_> = current_classic.iter().filter(|n| !record.classic_load_balancers.contains(n)).cloned().collect();
            if !new.is_empty() || !new_classic.is_empty() {
                record.target_groups.extend(new);
                record.classic_load_balancers.extend(new_classic);
                cx.save().await?;
            }
            let mut deregistered = Vec::new();
            for registration in &current {
                elbv2.deregister(registration, &instance_id).await.map_err(|e| already(cx.error(e), &deregistered))?;
                deregistered.push(format!("deregistered from {}", registration.target_group_arn));
            }
            for name in &current_classic {
                classic.deregister(name, &instance_id).await.map_err(|e| already(cx.error(e), &deregistered))?;
                deregistered.push(format!("deregistered from Classic Load Balancer {name}"));
            }
            let record = cx.record();
            let (groups, classic) = (record.target_groups.len(), record.classic_load_balancers.len());
            if groups == 0 && classic == 0 {
                return Ok(Applied::NotNeeded("not registered in any target group or Classic Load Balancer".into()));
            }
            Ok(Applied::Changed(format!("deregistered from {groups} target group(s) and {classic} Classic Load Balancer(s)")))
        })
    }

    fn restore<'x>(&'x self, cx: &'x Restore<'_>) -> BoxFuture<'x, Result<String, StepError>> {
        Box::pin(async move {
            for registration in &cx.record.target_groups {
                cx.aws.elbv2.register(registration, cx.instance_id).await.map_err(|e| cx.error(e))?;
            }
            for name in &cx.record.classic_load_balancers {
                cx.aws.elb_classic.register(name, cx.instance_id).await.map_err(|e| cx.error(e))?;
            }
            Ok(format!(
                "registered again in {} target group(s) and {} Classic Load Balancer(s)",
                cx.record.target_groups.len(),
                cx.record.classic_load_balancers.len()
            ))
        })
    }
}
