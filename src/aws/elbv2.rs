//! Elastic Load Balancing v2: stop customer traffic reaching a contained instance.

use std::future::Future;

use aws_sdk_elasticloadbalancingv2::types::TargetDescription;

use super::AwsError;
use crate::api::TargetRegistration;

pub trait LoadBalancingApi: Send + Sync {
    /// Every target group registration of the instance (by instance ID).
    fn registrations(&self, instance_id: &str) -> impl Future<Output = Result<Vec<TargetRegistration>, AwsError>> + Send;
    fn deregister(&self, registration: &TargetRegistration, instance_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn register(&self, registration: &TargetRegistration, instance_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
}

#[derive(Clone)]
pub struct SdkLoadBalancing(pub aws_sdk_elasticloadbalancingv2::Client);

impl LoadBalancingApi for SdkLoadBalancing {
    async fn registrations(&self, instance_id: &str) -> Result<Vec<TargetRegistration>, AwsError> {
        let mut found = Vec::new();
        let mut pages = self.0.describe_target_groups().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("elasticloadbalancing:DescribeTargetGroups", e))?;
            for group in page.target_groups() {
                let Some(arn) = group.target_group_arn() else { continue };
                let health = self
                    .0
                    .describe_target_health()
                    .target_group_arn(arn)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("elasticloadbalancing:DescribeTargetHealth", e))?;
                for description in health.target_health_descriptions() {
                    if let Some(target) = description.target().filter(|t| t.id() == Some(instance_id)) {
                        found.push(TargetRegistration { target_group_arn: arn.to_string(), port: target.port() });
                    }
                }
            }
        }
        Ok(found)
    }

    async fn deregister(&self, registration: &TargetRegistration, instance_id: &str) -> Result<(), AwsError> {
        let target = TargetDescription::builder().id(instance_id).set_port(registration.port).build();
        self.0
            .deregister_targets()
            .target_group_arn(&registration.target_group_arn)
            .targets(target)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("elasticloadbalancing:DeregisterTargets", e))?;
        Ok(())
    }

    async fn register(&self, registration: &TargetRegistration, instance_id: &str) -> Result<(), AwsError> {
        let target = TargetDescription::builder().id(instance_id).set_port(registration.port).build();
        self.0
            .register_targets()
            .target_group_arn(&registration.target_group_arn)
            .targets(target)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("elasticloadbalancing:RegisterTargets", e))?;
        Ok(())
    }
}
