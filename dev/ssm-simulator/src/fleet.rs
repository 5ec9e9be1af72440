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
//! `ssm-simulator:target=host` makes the instance this machine itself, as the node tier's instance is (dev/stack
//! with FC_STACK_NODE=1: the kubelet runs here, so a capture of that node is a capture of this host): its
//! commands run under bubblewrap in the host's PID namespace, so the kubelet's pods, their processes and their
//! cgroups are visible under /proc and /sys/fs/cgroup, with the root capabilities a real agent has; the host
//! root stays read-only except the directories the simulator was given with --host-writable-dir (the kubelet's
//! checkpoint directory, whose archives a capture removes after uploading them). /tmp, /var/tmp, the agent's
//! directory and environment follow the sandbox's rules (runner.rs); --host-visible-dir names host directories
//! seen at their own paths all the same (the node's state when the stack lives under /tmp).

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
    /// This machine: the host-side runner without its own PID namespace (runner.rs).
    Host,
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

/// Where instances are looked up: a region, in the account of the caller whose access key is given. SSM only
/// ever shows a caller the managed nodes of its own account. A role session's key is in the role's account,
/// which moto knows (dev/moto-server lists its sessions); any other key is in moto's default account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub region: String,
    /// None: the simulator's own account (moto's default).
    pub access_key: Option<String>,
}

/// moto's header naming the account a request acts in (its server mode's multi-account switch).
const ACCOUNT_HEADER: &str = "x-moto-account-id";

pub struct Fleet {
    base: aws_config::SdkConfig,
    endpoint: String,
    http: reqwest::Client,
    /// Access key ID -> account, for role sessions moto has issued (a session's account never changes).
    accounts: std::sync::Mutex<HashMap<String, String>>,
}

impl Fleet {
    pub async fn new(endpoint: &str) -> Self {
        let base = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
        Fleet { base, endpoint: endpoint.to_string(), http: reqwest::Client::new(), accounts: Default::default() }
    }

    fn client(&self, scope: &Scope) -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::config::Builder::from(&self.base)
            .endpoint_url(&self.endpoint)
            .region(aws_sdk_ec2::config::Region::new(scope.region.clone()));
        aws_sdk_ec2::Client::from_conf(config.build())
    }

    /// The account of a role session's key, asked of moto once; None for any other key.
    async fn account_of(&self, scope: &Scope) -> anyhow::Result<Option<String>> {
        let Some(key) = &scope.access_key else { return Ok(None) };
        if let Some(account) = self.accounts.lock().unwrap().get(key) {
            return Ok(Some(account.clone()));
        }
        let body = self.http.get(format!("{}/_moto-server/sts-sessions", self.endpoint)).send().await?.error_for_status()?.bytes().await?;
        let sessions: Vec<serde_json::Value> = serde_json::from_slice(&body)?;
        let mut accounts = self.accounts.lock().unwrap();
        for session in &sessions {
            if let (Some(k), Some(a)) = (session["accessKeyId"].as_str(), session["account"].as_str()) {
                accounts.insert(k.to_string(), a.to_string());
            }
        }
        Ok(accounts.get(key).cloned())
    }

    /// Every instance DescribeInstances gives for `instance_ids` (a filter: unknown IDs are simply absent
    /// instead of failing the call; all instances when empty), in the scope's account.
    async fn instances(&self, scope: &Scope, instance_ids: &[String]) -> anyhow::Result<Vec<Instance>> {
        let account = self.account_of(scope).await?;
        let client = self.client(scope);
        let mut instances = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let mut request = client.describe_instances().set_next_token(next_token.take());
            if !instance_ids.is_empty() {
                request = request.filters(Filter::builder().name("instance-id").set_values(Some(instance_ids.to_vec())).build());
            }
            let account = account.clone();
            let page = request
                .customize()
                .mutate_request(move |r| {
                    if let Some(account) = &account {
                        r.headers_mut().insert(ACCOUNT_HEADER, account.clone());
                    }
                })
                .send()
                .await?;
            instances.extend(page.reservations().iter().flat_map(|r| r.instances().iter().cloned()));
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_string()),
                _ => return Ok(instances),
            }
        }
    }

    /// Managed nodes among `instance_ids` (all instances in the region when empty), in request order.
    pub async fn managed_nodes(&self, scope: &Scope, instance_ids: &[String]) -> anyhow::Result<Vec<ManagedNode>> {
        let mut nodes: Vec<ManagedNode> = self.instances(scope, instance_ids).await?.iter().filter_map(managed_node).collect();
        if !instance_ids.is_empty() {
            nodes.sort_by_key(|n| instance_ids.iter().position(|id| id == &n.instance_id));
        }
        Ok(nodes)
    }

    pub async fn managed_node(&self, scope: &Scope, instance_id: &str) -> anyhow::Result<Option<ManagedNode>> {
        Ok(self.managed_nodes(scope, &[instance_id.to_string()]).await?.into_iter().next())
    }

    /// The EC2 state of each of `instance_ids` that still exists (moto forgets terminated instances after a
    /// while: absent means gone).
    pub async fn instance_states(&self, scope: &Scope, instance_ids: &[String]) -> anyhow::Result<HashMap<String, InstanceStateName>> {
        let mut states = HashMap::new();
        for instance in self.instances(scope, instance_ids).await? {
            if let (Some(id), Some(state)) = (instance.instance_id(), instance.state().and_then(|s| s.name())) {
                states.insert(id.to_string(), state.clone());
            }
        }
        Ok(states)
    }
}

fn backing(instance: &Instance) -> Backing {
    let tag = |key: &str| instance.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value());
    match tag(TARGET_TAG) {
        None | Some("sandbox") => Backing::Sandbox,
        Some("host") => Backing::Host,
        Some("qemu") => {
            let memory_mib = match tag(MEMORY_TAG).map(|m| m.trim().parse::<u32>()) {
                None => None,
                Some(Ok(m)) if (128..=16_384).contains(&m) => Some(m),
                Some(_) => return Backing::Invalid(format!("tag {MEMORY_TAG} must be a number of MiB from 128 to 16384")),
            };
            Backing::Qemu { kernel_args: tag(KERNEL_ARGS_TAG).unwrap_or_default().trim().to_string(), memory_mib }
        }
        Some(other) => Backing::Invalid(format!("tag {TARGET_TAG}={other} names no backing the simulator has (qemu, host or sandbox)")),
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

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::{Instance, Tag};

    use super::{Backing, KERNEL_ARGS_TAG, MEMORY_TAG, TARGET_TAG, backing};

    fn tagged(tags: &[(&str, &str)]) -> Instance {
        tags.iter().fold(Instance::builder(), |b, (k, v)| b.tags(Tag::builder().key(*k).value(*v).build())).build()
    }

    #[test]
    fn the_target_tag_chooses_the_backing() {
        assert_eq!(backing(&tagged(&[])), Backing::Sandbox);
        assert_eq!(backing(&tagged(&[(TARGET_TAG, "sandbox")])), Backing::Sandbox);
        assert_eq!(backing(&tagged(&[(TARGET_TAG, "host")])), Backing::Host);
        // The guest's settings belong to the qemu tier only: on the host they change nothing.
        assert_eq!(backing(&tagged(&[(TARGET_TAG, "host"), (MEMORY_TAG, "1")])), Backing::Host);
        assert_eq!(
            backing(&tagged(&[(TARGET_TAG, "qemu"), (KERNEL_ARGS_TAG, " quiet "), (MEMORY_TAG, "512")])),
            Backing::Qemu { kernel_args: "quiet".into(), memory_mib: Some(512) }
        );
        assert!(matches!(backing(&tagged(&[(TARGET_TAG, "qemu"), (MEMORY_TAG, "64")])), Backing::Invalid(m) if m.contains(MEMORY_TAG)));
        // Tag values are case-sensitive, as EC2's are: "Host" is not the host.
        for other in ["Host", "hosts", ""] {
            assert!(matches!(backing(&tagged(&[(TARGET_TAG, other)])), Backing::Invalid(m) if m.contains("qemu, host or sandbox")), "{other:?}");
        }
    }
}
