//! Classic Elastic Load Balancing: instances registered directly with a Classic Load Balancer (no target
//! group) keep receiving traffic unless they are deregistered from it too.

use std::future::Future;

use aws_sdk_elasticloadbalancing::types::Instance;

use super::AwsError;

pub trait ClassicLoadBalancingApi: Send + Sync {
    /// Names of the Classic Load Balancers the instance is registered with.
    fn load_balancers_of(&self, instance_id: &str) -> impl Future<Output = Result<Vec<String>, AwsError>> + Send;
    fn deregister(&self, load_balancer: &str, instance_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn register(&self, load_balancer: &str, instance_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
}

#[derive(Clone)]
pub struct SdkClassicLoadBalancing(pub aws_sdk_elasticloadbalancing::Client);

impl ClassicLoadBalancingApi for SdkClassicLoadBalancing {
    async fn load_balancers_of(&self, instance_id: &str) -> Result<Vec<String>, AwsError> {
        let mut found = Vec::new();
        let mut pages = self.0.describe_load_balancers().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("elasticloadbalancing:DescribeLoadBalancers", e))?;
            for balancer in page.load_balancer_descriptions() {
                if balancer.instances().iter().any(|i| i.instance_id() == Some(instance_id)) {
                    found.extend(balancer.load_balancer_name().map(str::to_string));
                }
            }
        }
        Ok(found)
    }

    async fn deregister(&self, load_balancer: &str, instance_id: &str) -> Result<(), AwsError> {
        self.0
            .deregister_instances_from_load_balancer()
            .load_balancer_name(load_balancer)
            .instances(Instance::builder().instance_id(instance_id).build())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("elasticloadbalancing:DeregisterInstancesFromLoadBalancer", e))?;
        Ok(())
    }

    async fn register(&self, load_balancer: &str, instance_id: &str) -> Result<(), AwsError> {
        self.0
            .register_instances_with_load_balancer()
            .load_balancer_name(load_balancer)
            .instances(Instance::builder().instance_id(instance_id).build())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("elasticloadbalancing:RegisterInstancesWithLoadBalancer", e))?;
        Ok(())
    }
}
