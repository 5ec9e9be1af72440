//! The node tier of the proof environment (`dev/stack` with `FC_STACK_NODE=1`, which dev/test sets): a real
//! kubelet, containerd v2, scheduler and controller-manager on this machine. Its Node is named after a moto
//! instance (private DNS name, `spec.providerID` `aws:///<zone>/<instance-id>`) that the SSM simulator runs on
//! this host (tag `ssm-simulator:target=host`), so SSM commands for it see the pods' processes.
//!
//! Pods run the busybox image the stack imports (`FC_NODE_BUSYBOX_IMAGE`, `imagePullPolicy: Never`: the node
//! has no registry), in any namespace; the default ServiceAccount and `kube-root-ca.crt` appear in a new one
//! within a second or so (the controller-manager makes them).
//!
//! Included by path (`#[path = "support/node.rs"] mod node;`) or as `support::node`: it names the rest of the
//! support code by `crate::support`.

#![allow(dead_code)]

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use serde_json::json;

pub struct Node {
    pub name: String,
    pub instance_id: String,
    pub zone: String,
    pub ip: String,
    /// The kubelet's --root-dir; checkpoints are written to its `checkpoints` directory.
    pub kubelet_root: PathBuf,
    pub ctr: PathBuf,
    pub containerd_address: PathBuf,
    pub busybox_image: String,
}

impl Node {
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.kubelet_root.join("checkpoints")
    }
}

/// The stack's node, or None when the stack runs without the node tier (FC_STACK_NODE unset), after saying on
/// stderr that the calling test is skipped. With FC_STACK_NODE set every variable must be there.
pub fn node(test: &str) -> Option<Node> {
    if std::env::var_os("FC_STACK_NODE").is_none() {
        eprintln!("SKIPPED {test}: the stack runs without its node tier (FC_STACK_NODE is unset; dev/test sets it, or `FC_STACK_NODE=1 dev/stack up`)");
        return None;
    }
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("FC_STACK_NODE is set but {name} is not: export what `dev/stack env` prints"));
    Some(Node {
        name: var("FC_NODE_NAME"),
        instance_id: var("FC_NODE_INSTANCE_ID"),
        zone: var("FC_NODE_ZONE"),
        ip: var("FC_NODE_IP"),
        kubelet_root: var("FC_NODE_KUBELET_ROOT").into(),
        ctr: var("FC_NODE_CTR").into(),
        containerd_address: var("FC_NODE_CONTAINERD_ADDRESS").into(),
        busybox_image: var("FC_NODE_BUSYBOX_IMAGE").into(),
    })
}

/// A test's start on the node: the node (None: the test is skipped, and says so), an admin client and a fresh
/// namespace.
pub async fn start(test: &str, namespace_prefix: &str) -> Option<(Node, kube::Client, String)> {
    let node = node(test)?;
    let client = crate::support::stack().kube().await;
    let namespace = crate::support::namespace(&client, namespace_prefix).await;
    Some((node, client, namespace))
}

/// Generous: pods start in seconds, but parallel tests share two cores.
pub const POD_DEADLINE: Duration = Duration::from_secs(180);

/// A pod of one busybox container `c` running `script` with /bin/sh, left to the scheduler (no nodeName).
pub fn busybox_pod(node: &Node, name: &str, script: &str, restart_policy: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "c",
                "image": node.busybox_image,
                "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", script],
            }],
        }
    }))
    .unwrap()
}

/// Waits until the namespace's default ServiceAccount exists (pods are refused before it does).
pub async fn default_service_account(client: &kube::Client, namespace: &str) {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(60);
    while accounts.get_opt("default").await.expect("get ServiceAccount").is_none() {
        assert!(Instant::now() < deadline, "no default ServiceAccount in {namespace} after 60 s: is the controller-manager running?");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates the pod (once the namespace can have pods) and waits until `done` holds for it.
pub async fn run_pod(client: &kube::Client, namespace: &str, pod: &Pod, done: fn(&Pod) -> bool) -> Pod {
    default_service_account(client, namespace).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let name = pod.metadata.name.clone().unwrap();
    pods.create(&Default::default(), pod).await.expect("create pod");
    wait_for_pod(&pods, &name, done).await
}

pub async fn wait_for_pod(pods: &Api<Pod>, name: &str, done: fn(&Pod) -> bool) -> Pod {
    let deadline = Instant::now() + POD_DEADLINE;
    loop {
        let pod = pods.get(name).await.expect("get pod");
        if done(&pod) {
            return pod;
        }
        assert!(Instant::now() < deadline, "pod {name} not there within {POD_DEADLINE:?}: {:?}", pod.status);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

pub fn finished(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Running with every container ready.
pub fn ready(pod: &Pod) -> bool {
    phase(pod) == "Running"
        && pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.ready))
}
