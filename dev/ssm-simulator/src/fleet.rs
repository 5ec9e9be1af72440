//! Which EC2 instances (in moto) are SSM managed nodes, and whether their agent is online.
//!
//! Running instances are managed and Online. The tag `ssm-simulator:agent` changes that, so tests can model
//! the agent states the controller must handle: `offline` (registered, PingStatus ConnectionLost, commands end
//! in DeliveryTimedOut) and `absent` (not a managed node: SendCommand fails with InvalidInstanceId).
//! Stopped instances are registered but ConnectionLost, as with the real agent; terminated ones are gone.

use aws_sdk_ec2::types::{Filter, Instance, InstanceStateName};

pub const AGENT_TAG: &str = "ssm-simulator:agent";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ping {
    Online,
    ConnectionLost,
}

impl Ping {
    pub fn as_str(self) -> &'static str {
        match self {
            Ping::Online => "Online",
            Ping::ConnectionLost => "ConnectionLost",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ManagedNode {
    pub instance_id: String,
    pub ping: Ping,
    pub platform_type: &'static str,
    pub ip_address: Option<String>,
    pub computer_name: String,
}

pub struct Fleet {
    base: aws_config::SdkConfig,
    endpoint: String,
}

impl Fleet {
    pub async fn new(endpoint: &str) -> Self {
        let base = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
        Fleet { base, endpoint: endpoint.to_string() }
    }

    fn client(&self, region: &str) -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::config::Builder::from(&self.base)
            .endpoint_url(&self.endpoint)
            .region(aws_sdk_ec2::config::Region::new(region.to_string()))
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }

    /// Managed nodes among `instance_ids` (all instances in the region when empty), in request order.
    pub async fn managed_nodes(&self, region: &str, instance_ids: &[String]) -> anyhow::Result<Vec<ManagedNode>> {
        let mut request = self.client(region).describe_instances();
        if !instance_ids.is_empty() {
            // A filter rather than InstanceIds: unknown IDs are simply absent instead of failing the whole call.
            request = request.filters(Filter::builder().name("instance-id").set_values(Some(instance_ids.to_vec())).build());
        }
        let mut nodes = Vec::new();
        let mut pages = request.into_paginator().send();
        while let Some(page) = pages.next().await {
            for reservation in page?.reservations() {
                nodes.extend(reservation.instances().iter().filter_map(managed_node));
            }
        }
        if !instance_ids.is_empty() {
            nodes.sort_by_key(|n| instance_ids.iter().position(|id| id == &n.instance_id));
        }
        Ok(nodes)
    }

    pub async fn managed_node(&self, region: &str, instance_id: &str) -> anyhow::Result<Option<ManagedNode>> {
        Ok(self.managed_nodes(region, &[instance_id.to_string()]).await?.into_iter().next())
    }
}

fn managed_node(instance: &Instance) -> Option<ManagedNode> {
    let agent = instance.tags().iter().find(|t| t.key() == Some(AGENT_TAG)).and_then(|t| t.value());
    let state = instance.state().and_then(|s| s.name()).cloned().unwrap_or(InstanceStateName::Pending);
    let ping = match (agent, state) {
        (Some("absent"), _) => return None,
        (_, InstanceStateName::Terminated | InstanceStateName::ShuttingDown) => return None,
        (Some("offline"), _) => Ping::ConnectionLost,
        (_, InstanceStateName::Running) => Ping::Online,
        _ => Ping::ConnectionLost,
    };
    let windows = instance.platform().map(|p| p.as_str().eq_ignore_ascii_case("windows")).unwrap_or(false);
    Some(ManagedNode {
        instance_id: instance.instance_id()?.to_string(),
        ping,
        platform_type: if windows { "Windows" } else { "Linux" },
        ip_address: instance.private_ip_address().map(str::to_string),
        computer_name: instance.private_dns_name().unwrap_or_default().to_string(),
    })
}
