//! Out of its Auto Scaling group: scale-in protection first, then Standby (or Detach), with the desired
//! capacity lowered by one on record so the group launches no replacement.

use futures::future::BoxFuture;

use super::{Action, Applied, Apply, Restore, already};
use crate::{
    api::{AutoScalingExit, AutoScalingRecord},
    aws::autoscaling::AutoScalingApi,
    controller::failure::StepError,
};

pub struct AutoScaling;

impl Action for AutoScaling {
    fn name(&self) -> &'static str {
        "AutoScaling"
    }

    fn apply<'x>(&'x self, cx: &'x mut Apply<'_, '_>) -> BoxFuture<'x, Result<Applied, StepError>> {
        Box::pin(async move {
            let instance_id = cx.instance_id().to_string();
            let exit = cx.sc.capture.spec.steps.isolation.auto_scaling;
            let Some(current) = cx.sc.aws.autoscaling.membership(&instance_id).await.map_err(|e| cx.error(e))? else {
                // After a restart a detached instance is no longer a member: what was recorded says it was handled.
                return Ok(match &cx.record().auto_scaling {
                    Some(r) => Applied::Changed(format!("detached from {} (desired capacity {} -> {})", r.group_name, r.desired_capacity, r.desired_capacity - 1)),
                    None => Applied::NotNeeded("not in an Auto Scaling group".into()),
                });
            };
            if cx.record().auto_scaling.is_none() {
                cx.record().auto_scaling = Some(AutoScalingRecord {
                    group_name: current.group_name.clone(),
                    lifecycle_state: current.lifecycle_state.clone(),
                    protected_from_scale_in: current.protected_from_scale_in,
                    desired_capacity: current.desired_capacity,
                    exit: Some(exit),
                });
                cx.save().await?;
            }
            let in_service = current.lifecycle_state == "InService";
            cx.sc.aws.autoscaling.protect_and_remove(&current.group_name, &instance_id, in_service, exit).await.map_err(|e| {
                // Protection is the first call: when a later one fails, the instance is already protected.
                let protected = e.operation != "autoscaling:SetInstanceProtection";
                let done = if protected { vec![format!("scale-in protection in {}", current.group_name)] } else { Vec::new() };
                already(cx.error(e), &done)
            })?;
            Ok(Applied::Changed(format!(
                "scale-in protection on and {exit:?} in {} (desired capacity {} -> {})",
                current.group_name,
                current.desired_capacity,
                if in_service { current.desired_capacity - 1 } else { current.desired_capacity }
            )))
        })
    }

    fn restore<'x>(&'x self, cx: &'x Restore<'_>) -> BoxFuture<'x, Result<String, StepError>> {
        Box::pin(async move {
            let Some(previous) = &cx.record.auto_scaling else { return Ok("not in an Auto Scaling group".into()) };
            let asg = &cx.aws.autoscaling;
            let current = asg.membership(cx.instance_id).await.map_err(|e| cx.error(e))?;
            if current.is_none() && previous.exit == Some(AutoScalingExit::Detach) {
                asg.attach(&previous.group_name, cx.instance_id).await.map_err(|e| cx.error(e))?;
            }
            let current = asg.membership(cx.instance_id).await.map_err(|e| cx.error(e))?;
            let in_standby = current.as_ref().is_some_and(|m| m.lifecycle_state == "Standby");
            asg.restore(&previous.group_name, cx.instance_id, in_standby && previous.lifecycle_state == "InService", previous.protected_from_scale_in)
                .await
                .map_err(|e| cx.error(e))?;
            Ok(format!("{} back to {} with scale-in protection {}", previous.group_name, previous.lifecycle_state, previous.protected_from_scale_in))
        })
    }
}
