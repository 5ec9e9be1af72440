//! Resolve the target: which instance, where, what it is, and whether SSM can reach it.

use k8s_openapi::api::core::v1::{ContainerStatus, Node, Pod};
use kube::Api;

use super::{Context, failure::StepError};
use crate::{
    api::{ContainerFacts, ForensicCapture, Needs, PodFacts, Reason, Step, TargetFacts},
    aws::{ErrorClass, ec2::Ec2Api, ssm::SsmApi},
};

/// The instance ID in a Node's providerID: `aws:///eu-west-1a/i-0123456789abcdef0`.
pub fn instance_from_provider_id(provider_id: &str) -> Option<(Option<String>, String)> {
    let rest = provider_id.strip_prefix("aws://")?;
    let mut parts = rest.trim_start_matches('/').split('/');
    let (zone, id) = match (parts.next(), parts.next()) {
        (Some(zone), Some(id)) => (Some(zone.to_string()).filter(|z| !z.is_empty()), id),
        (Some(id), None) => (None, id),
        _ => return None,
    };
    id.starts_with("i-").then(|| (zone, id.to_string()))
}

/// Region of an availability zone (`eu-west-1a` -> `eu-west-1`).
fn region_of_zone(zone: &str) -> String {
    zone.trim_end_matches(|c: char| c.is_ascii_lowercase()).to_string()
}

pub async fn resolve(ctx: &Context, capture: &ForensicCapture) -> Result<TargetFacts, StepError> {
    let target = &capture.spec.target;
    let mut pod = None;
    let (instance_id, zone_region, node_name) = match (&target.instance_id, &target.node_name, &target.pod_ref) {
        (Some(id), _, _) => (id.clone(), None, None),
        (None, Some(node), _) => node_instance(ctx, node, None).await?,
        (None, None, Some(pod_ref)) => {
            let found = pod_facts(ctx, &pod_ref.namespace, &pod_ref.name).await?;
            let node = found.1.ok_or_else(|| {
                StepError::abort(Reason::PodNotScheduled, format!("pod {}/{} is not on a node yet (no spec.nodeName): there is no instance to capture", pod_ref.namespace, pod_ref.name))
            })?;
            let resolved = node_instance(ctx, &node, Some(&found.0)).await?;
            pod = Some(found.0);
            resolved
        }
        (None, None, None) => {
            return Err(StepError::abort(Reason::InvalidTarget, "spec.target names no instance"));
        }
    };
    let region = target.region.clone().or(zone_region).unwrap_or_else(|| ctx.default_region());
    // A role that cannot be assumed ends the capture here, before anything is done in any account.
    let aws = super::step_context::capture_clients(ctx, capture, &instance_id, &region).await?;
    let account = match &target.account_id {
        Some(account) => format!("account {account}"),
        None => "the controller's own account".to_string(),
    };
    let info = aws
        .ec2
        .describe_instance(&instance_id)
        .await
        .map_err(|e| StepError::aws(e, &format!("instance {instance_id} in {account}"), super::failure::OnError::step(Reason::TargetLookupFailed)))?
        .ok_or_else(|| StepError::abort(Reason::InstanceNotFound, format!("instance {instance_id} not found in {account}, region {region} (ec2:DescribeInstances)")))?;
    if let (Some(wanted), Some(owner)) = (&target.account_id, &info.owner_id)
        && wanted != owner
    {
        // A role session acts in its own account, so this only happens when a role ARN names another account.
        return Err(StepError::abort(Reason::InstanceNotFound, format!("instance {instance_id} is in account {owner}, not in account {wanted} that spec.target.accountId names")));
    }
    if matches!(info.state.as_str(), "terminated" | "shutting-down") {
        return Err(StepError::abort(Reason::InstanceTerminated, format!("instance {instance_id} in {region} is {}: nothing left to capture or contain", info.state)));
    }
    let memory_mib = match &info.instance_type {
        Some(t) => instance_type_memory(ctx, &aws, &region, t).await.map_err(|e| StepError::on_instance(e, &instance_id, Reason::TargetLookupFailed))?,
        None => None,
    };
    // Only steps that run a command on the instance need its SSM agent; without one enabled, SSM is not asked.
    let agent_needed = Step::ALL.iter().any(|s| s.enabled(&capture.spec) && s.info().needs == Needs::LinuxAgent);
    let (ssm_managed, ssm_access_denied) = if !agent_needed {
        (None, None)
    } else {
        match aws.ssm.agent_online(&instance_id).await {
            Ok(online) => (Some(online), None),
            Err(e) if e.is_retryable() => return Err(StepError::aws(e, &format!("instance {instance_id}"), super::failure::OnError::step(Reason::TargetLookupFailed))),
            // A permissions problem is not a property of the instance: it is recorded as what it is, and the
            // planner skips the SSM steps as AccessDenied naming the operation; disk and isolation still run.
            Err(e) if e.class() == ErrorClass::AccessDenied => (Some(false), Some(e.to_string())),
            Err(e) => {
                // Without SSM the evidence steps that need it are skipped; disk and isolation still run.
                tracing::warn!(instance = %instance_id, error = %e, "cannot ask SSM whether the instance is managed");
                (Some(false), None)
            }
        }
    };
    Ok(TargetFacts {
        instance_id,
        account_id: info.owner_id,
        region,
        availability_zone: info.availability_zone,
        vpc_id: info.vpc_id,
        architecture: info.architecture,
        platform: Some(info.platform),
        instance_type: info.instance_type,
        memory_mib,
        state: Some(info.state),
        ssm_managed,
        ssm_access_denied,
        node_name,
        pod,
        // Reported by the instance itself, in the volatile step.
        kernel_banner: None,
    })
}

/// The instance behind a Node (for a pod target, the pod's Node), from its providerID.
async fn node_instance(ctx: &Context, node: &str, pod: Option<&PodFacts>) -> Result<(String, Option<String>, Option<String>), StepError> {
    let of_pod = pod.map(|p| format!(" (the node of pod {}/{})", p.namespace, p.name)).unwrap_or_default();
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let found = nodes.get_opt(node).await?.ok_or_else(|| StepError::abort(Reason::NodeNotFound, format!("Node {node}{of_pod} does not exist in this cluster")))?;
    let provider_id = found.spec.and_then(|s| s.provider_id).unwrap_or_default();
    let (zone, id) = instance_from_provider_id(&provider_id)
        .ok_or_else(|| StepError::abort(Reason::NodeNotOnEc2, format!("Node {node}{of_pod} has providerID {provider_id:?}, not an EC2 instance (aws:///<zone>/<instance-id>)")))?;
    Ok((id, zone.map(|z| region_of_zone(&z)), Some(node.to_string())))
}

/// The pod as the API server has it, and its node.
async fn pod_facts(ctx: &Context, namespace: &str, name: &str) -> Result<(PodFacts, Option<String>), StepError> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let found = pods.get_opt(name).await?.ok_or_else(|| StepError::abort(Reason::PodNotFound, format!("pod {namespace}/{name} does not exist in this cluster")))?;
    let node = found.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
    Ok((describe_pod(&found), node))
}

/// What the capture records of a pod: its identity and every container with its image digest and ID.
pub fn describe_pod(pod: &Pod) -> PodFacts {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let container_status = |name: &str, statuses: &Option<Vec<ContainerStatus>>| statuses.as_ref().and_then(|all| all.iter().find(|s| s.name == name).cloned());
    let mut containers = Vec::new();
    let mut add = |kind: &str, name: &str, image: Option<String>, statuses: &Option<Vec<ContainerStatus>>| {
        let found = container_status(name, statuses);
        let state = found.as_ref().and_then(|s| s.state.as_ref()).map(|state| {
            if state.running.is_some() {
                "Running"
            } else if state.terminated.is_some() {
                "Terminated"
            } else {
                "Waiting"
            }
        });
        containers.push(ContainerFacts {
            name: name.to_string(),
            image: image.unwrap_or_default(),
            // The kubelet reports "" before the image is pulled and the container created.
            image_id: found.as_ref().map(|s| s.image_id.clone()).filter(|i| !i.is_empty()),
            container_id: found.as_ref().and_then(|s| s.container_id.clone()).filter(|i| !i.is_empty()),
            state: state.map(String::from),
            kind: kind.to_string(),
        });
    };
    for c in spec.init_containers.iter().flatten() {
        add("Init", &c.name, c.image.clone(), &status.init_container_statuses);
    }
    for c in &spec.containers {
        add("Regular", &c.name, c.image.clone(), &status.container_statuses);
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        add("Ephemeral", &c.name, c.image.clone(), &status.ephemeral_container_statuses);
    }
    PodFacts {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        phase: status.phase.clone(),
        ips: status.pod_ips.iter().flatten().map(|ip| ip.ip.clone()).collect(),
        service_account: spec.service_account_name.clone(),
        containers,
    }
}

/// The memory of `instance_type` in `region`: asked of EC2 once per process.
async fn instance_type_memory(ctx: &Context, aws: &crate::aws::CaptureClients, region: &str, instance_type: &str) -> Result<Option<i64>, crate::aws::AwsError> {
    let key = (region.to_string(), instance_type.to_string());
    if let Some(known) = ctx.instance_type_memory.lock().expect("instance types lock").get(&key) {
        return Ok(*known);
    }
    let memory = aws.ec2.instance_type_memory_mib(instance_type).await?;
    ctx.instance_type_memory.lock().expect("instance types lock").insert(key, memory);
    Ok(memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids_name_the_instance_and_zone() {
        assert_eq!(
            instance_from_provider_id("aws:///eu-west-1a/i-0123456789abcdef0"),
            Some((Some("eu-west-1a".into()), "i-0123456789abcdef0".into()))
        );
        assert_eq!(instance_from_provider_id("gce://p/z/n"), None);
        assert_eq!(instance_from_provider_id("aws:///eu-west-1a/not-an-instance"), None);
        assert_eq!(region_of_zone("eu-west-1a"), "eu-west-1");
    }
}
