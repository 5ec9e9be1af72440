//! Which EC2 instances (in moto) are SSM managed nodes, and whether their agent is online.
//!
//! Running instances are managed and Online. The tag `ssm-simulator:agent` changes that, so tests can model
//! the agent states the controller must handle: `offline` (registered, PingStatus ConnectionLost, commands end
//! in DeliveryTimedOut) and `absent` (not a managed node: SendCommand fails with InvalidInstanceId).
//! Stopped instances are registered but ConnectionLost, as with the real agent; terminated ones are gone.
//!
//! Tags also choose what runs a node's commands (see vm.rs): `ssm-simulator:target=qemu` backs the instance
//! with a QEMU guest running a real Linux kernel instead of the bubblewrap sandbox, with optional
//! `ssm-simulator:kernel-args` (appended to the guest's kernel command line) and `ssm-simulator:memory-mib`.

use std::collections::HashMap;

use aws_sdk_ec2::types::{Filter, Instance, InstanceStateName};

pub const AGENT_TAG: &str = "ssm-simulator:agent";
pub const TARGET_TAG: &str = "ssm-simulator:target";
pub const KERNEL_ARGS_TAG: &str = "ssm-simulator:kernel-args";
pub const MEMORY_TAG: &str = "ssm-simulator:memory-mib";

/// What runs a node's commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// The host-side runner (runner.rs): bubblewrap, or plain bash.
    Sandbox,
    /// A QEMU guest with a real kernel (vm.rs). `memory_mib` None: the simulator's default.
    Qemu { kernel_args: String, memory_mib: Option<u32> },
    /// Tags that name no backing the simulator has; commands fail with this message rather than silently
    /// running somewhere the test did not ask for.
    Invalid(String),
}

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
    pub backing: Backing,
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

    /// The EC2 state of each of `instance_ids` that still exists (moto forgets terminated instances after a
    /// while: absent means gone).
    pub async fn instance_states(&self, region: &str, instance_ids: &[String]) -> anyhow::Result<HashMap<String, InstanceStateName>> {
        let request = self
            .client(region)
            .describe_instances()
            .filters(Filter::builder().name("instance-id").set_values(Some(instance_ids.to_vec())).build());
        let mut states = HashMap::new();
        let mut pages = request.into_paginator().send();
        while let Some(page) = pages.next().await {
            for reservation in page?.reservations() {
                for instance in reservation.instances() {
                    if let (Some(id), Some(state)) = (instance.instance_id(), instance.state().and_then(|s| s.name())) {
                        states.insert(id.to_string(), state.clone());
                    }
                }
            }
        }
        Ok(states)
    }
}

fn backing(instance: &Instance) -> Backing {
    let tag = |key: &str| instance.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value());
    match tag(TARGET_TAG) {
        None | Some("sandbox") => Backing::Sandbox,
        Some("qemu") => {
            let memory_mib = match tag(MEMORY_TAG).map(|m| m.trim().parse::<u32>()) {
                None => None,
                Some(Ok(m)) if (128..=16_384).contains(&m) => Some(m),
                Some(_) => return Backing::Invalid(format!("tag {MEMORY_TAG} must be a number of MiB from 128 to 16384")),
            };
            Backing::Qemu { kernel_args: tag(KERNEL_ARGS_TAG).unwrap_or_default().trim().to_string(), memory_mib }
        }
        Some(other) => Backing::Invalid(format!("tag {TARGET_TAG}={other} names no backing the simulator has (qemu or sandbox)")),
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
        backing: backing(instance),
    })
}
