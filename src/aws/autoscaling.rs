//! Auto Scaling: keep the group from terminating or replacing a contained instance.

use std::future::Future;

use super::AwsError;
use crate::api::AutoScalingExit;

#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub group_name: String,
    pub lifecycle_state: String,
    pub protected_from_scale_in: bool,
    pub desired_capacity: i32,
}

pub trait AutoScalingApi: Send + Sync {
    fn membership(&self, instance_id: &str) -> impl Future<Output = Result<Option<Membership>, AwsError>> + Send;
    /// Scale-in protection, then Standby or Detach with the desired capacity lowered by one, so the group
    /// neither terminates the instance nor launches a replacement.
    fn protect_and_remove(&self, group_name: &str, instance_id: &str, in_service: bool, exit: AutoScalingExit) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Puts a detached instance back into its group (the desired capacity rises by one again).
    fn attach(&self, group_name: &str, instance_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Back in service (when in Standby; the desired capacity rises by one again) with the recorded protection.
    fn restore(&self, group_name: &str, instance_id: &str, exit_standby: bool, protected_from_scale_in: bool) -> impl Future<Output = Result<(), AwsError>> + Send;
}

#[derive(Clone)]
pub struct SdkAutoScaling(pub aws_sdk_autoscaling::Client);

impl AutoScalingApi for SdkAutoScaling {
    async fn membership(&self, instance_id: &str) -> Result<Option<Membership>, AwsError> {
        let instances = self
            .0
            .describe_auto_scaling_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("autoscaling:DescribeAutoScalingInstances", e))?;
        let Some(instance) = instances.auto_scaling_instances().first() else { return Ok(None) };
        let group_name = instance.auto_scaling_group_name().unwrap_or_default().to_string();
        let groups = self
            .0
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&group_name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("autoscaling:DescribeAutoScalingGroups", e))?;
        let desired_capacity = groups.auto_scaling_groups().first().and_then(|g| g.desired_capacity()).unwrap_or_default();
        Ok(Some(Membership {
            group_name,
            lifecycle_state: instance.lifecycle_state().unwrap_or_default().to_string(),
            protected_from_scale_in: instance.protected_from_scale_in().unwrap_or(false),
            desired_capacity,
        }))
    }

    async fn protect_and_remove(&self, group_name: &str, instance_id: &str, in_service: bool, exit: AutoScalingExit) -> Result<(), AwsError> {
        self.0
            .set_instance_protection()
            .auto_scaling_group_name(group_name)
            .instance_ids(instance_id)
            .protected_from_scale_in(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("autoscaling:SetInstanceProtection", e))?;
        if in_service && exit == AutoScalingExit::Detach {
            self.0
                .detach_instances()
                .auto_scaling_group_name(group_name)
                .instance_ids(instance_id)
                .should_decrement_desired_capacity(true)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("autoscaling:DetachInstances", e))?;
        } else if in_service {
            self.0
                .enter_standby()
                .auto_scaling_group_name(group_name)
                .instance_ids(instance_id)
                .should_decrement_desired_capacity(true)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("autoscaling:EnterStandby", e))?;
        }
        Ok(())
    }

    async fn restore(&self, group_name: &str, instance_id: &str, exit_standby: bool, protected_from_scale_in: bool) -> Result<(), AwsError> {
        if exit_standby {
            self.0
                .exit_standby()
                .auto_scaling_group_name(group_name)
                .instance_ids(instance_id)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("autoscaling:ExitStandby", e))?;
        }
        self.0
            .set_instance_protection()
            .auto_scaling_group_name(group_name)
            .instance_ids(instance_id)
            .protected_from_scale_in(protected_from_scale_in)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("autoscaling:SetInstanceProtection", e))?;
        Ok(())
    }

    async fn attach(&self, group_name: &str, instance_id: &str) -> Result<(), AwsError> {
        self.0
            .attach_instances()
            .auto_scaling_group_name(group_name)
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("autoscaling:AttachInstances", e))?;
        Ok(())
    }
}
