//! The node tier of the proof environment (`dev/stack` with `FC_STACK_NODE=1`, as dev/test runs it): a real
//! Node — kubelet 1.36, containerd 2.3, the scheduler and the controller-manager on this machine — whose
//! providerID names a moto instance that the SSM simulator runs on this host. Each test is skipped, saying so,
//! when the stack runs without the tier.
//!
//! That `dev/stack down` leaves nothing of the node behind cannot be tested from inside the suite (the suite's
//! node is the only one the machine can have, and it must outlive the tests): dev/test runs the check after its
//! `dev/stack down` and fails when anything is left. The last test here proves the check sees what a running
//! node holds.

mod support;
#[path = "support/node.rs"]
mod node;

use std::collections::BTreeMap;

use aws_sdk_ssm::types::CommandInvocationStatus;
use base64::Engine;
use k8s_openapi::api::{
    authentication::v1::TokenReview,
    core::v1::{ConfigMap, Node, Pod},
};
use kube::{
    Api,
    api::{LogParams, PostParams},
};
use node::{busybox_pod, finished, ready, run_pod};
use serde_json::json;
use support::vm;

#[tokio::test]
async fn the_node_is_ready_and_its_provider_id_names_its_moto_instance() {
    let Some(node) = node::node("the_node_is_ready_and_its_provider_id_names_its_moto_instance") else { return };
    let client = support::stack().kube().await;
    let object = Api::<Node>::all(client).get(&node.name).await.expect("the Node");
    let spec = object.spec.clone().unwrap_or_default();
    assert_eq!(spec.provider_id.as_deref(), Some(format!("aws:///{}/{}", node.zone, node.instance_id).as_str()));
    // Ready, and the controller-manager has lifted the not-ready taint: pods without tolerations schedule.
    let status = object.status.clone().unwrap_or_default();
    let ready = status.conditions.unwrap_or_default().into_iter().find(|c| c.type_ == "Ready").expect("a Ready condition");
    assert_eq!(ready.status, "True", "{ready:?}");
    assert!(spec.taints.unwrap_or_default().is_empty(), "the Node has no taints");
    let addresses: BTreeMap<String, String> = status.addresses.unwrap_or_default().into_iter().map(|a| (a.type_, a.address)).collect();
    assert_eq!(addresses.get("InternalIP"), Some(&node.ip));
    assert_eq!(status.node_info.as_ref().map(|i| i.container_runtime_version.as_str()), Some("containerd://2.3.7"));

    // The instance as EC2 (moto) has it: the same zone, private address and DNS name, the host tier's tag.
    let described = support::stack().ec2().await.describe_instances().instance_ids(&node.instance_id).send().await.expect("describe the node's instance");
    let instance = &described.reservations()[0].instances()[0];
    assert_eq!(instance.state().and_then(|s| s.name()).map(|n| n.as_str()), Some("running"));
    assert_eq!(instance.placement().and_then(|p| p.availability_zone()), Some(node.zone.as_str()));
    assert_eq!(instance.private_ip_address(), Some(node.ip.as_str()));
    assert_eq!(instance.private_dns_name(), Some(node.name.as_str()));
    let tags: BTreeMap<&str, &str> = instance.tags().iter().filter_map(|t| Some((t.key()?, t.value()?))).collect();
    assert_eq!(tags.get("ssm-simulator:target"), Some(&"host"));
    // The labels EKS's nodes carry.
    let labels = object.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("topology.kubernetes.io/zone"), Some(&node.zone));
    assert_eq!(labels.get("topology.kubernetes.io/region").map(String::as_str), Some(support::stack().region()));
    assert_eq!(labels.get("node.kubernetes.io/instance-type").map(String::as_str), instance.instance_type().map(|t| t.as_str()));
}

#[tokio::test]
async fn a_busybox_pod_runs_to_completion_with_a_service_account_token_the_api_server_accepts() {
    let Some((node, client, ns)) = node::start("a_busybox_pod_runs_to_completion_with_a_service_account_token_the_api_server_accepts", "node-pod").await else { return };
    let script = "echo marker-from-the-pod; cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; \
                  cat /var/run/secrets/kubernetes.io/serviceaccount/token; echo; \
                  cat /var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
    let pod = run_pod(&client, &ns, &busybox_pod(&node, "once", script, "Never"), finished).await;
    assert_eq!(node::phase(&pod), "Succeeded", "{:?}", pod.status);
    // The scheduler put it there (the pod names no node).
    assert_eq!(pod.spec.as_ref().and_then(|s| s.node_name.as_deref()), Some(node.name.as_str()));

    // Its logs, read through the API server (which asks the kubelet).
    let logs = Api::<Pod>::namespaced(client.clone(), &ns).logs("once", &LogParams::default()).await.expect("pod logs");
    let mut lines = logs.lines();
    assert_eq!(lines.next(), Some("marker-from-the-pod"));
    assert_eq!(lines.next(), Some(ns.as_str()), "the projected token volume names the pod's namespace");
    let token = lines.next().expect("the token").to_string();
    let ca: String = lines.map(|l| format!("{l}\n")).collect();
    let root_ca = Api::<ConfigMap>::namespaced(client.clone(), &ns).get("kube-root-ca.crt").await.expect("kube-root-ca.crt");
    assert_eq!(Some(&ca), root_ca.data.unwrap_or_default().get("ca.crt"), "the mounted ca.crt is the controller-manager's root CA");
    let ca_file = std::fs::read_to_string(std::path::Path::new(support::stack().var("FC_STACK_DIR")).join("pki/ca.crt")).unwrap();
    assert_eq!(ca, ca_file, "which is the stack's CA");

    // A bound token the kubelet requested for the pod, signed with the stack's service-account key.
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["sub"], format!("system:serviceaccount:{ns}:default"));
    assert_eq!(claims["kubernetes.io"]["pod"]["name"], "once");
    let review: TokenReview = serde_json::from_value(json!({"spec": {"token": token}})).unwrap();
    let reviewed = Api::<TokenReview>::all(client).create(&PostParams::default(), &review).await.expect("TokenReview");
    let status = reviewed.status.unwrap_or_default();
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    assert_eq!(status.user.and_then(|u| u.username), Some(format!("system:serviceaccount:{ns}:default")));
}

#[tokio::test]
async fn pods_are_reachable_on_the_pod_network_and_through_a_host_port() {
    let Some((node, client, ns)) = node::start("pods_are_reachable_on_the_pod_network_and_through_a_host_port", "node-net").await else { return };
    // A port nothing listens on here: portmap's DNAT sends the node address's port to the pod.
    let host_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut pod = busybox_pod(&node, "web", "mkdir /www && echo served-by-the-pod >/www/index.html && exec httpd -f -p 8080 -h /www", "Never");
    let container = &mut pod.spec.as_mut().unwrap().containers[0];
    container.ports = Some(vec![serde_json::from_value(json!({"containerPort": 8080, "hostPort": host_port})).unwrap()]);
    container.readiness_probe = Some(serde_json::from_value(json!({"tcpSocket": {"port": 8080}, "periodSeconds": 1})).unwrap());
    let pod = run_pod(&client, &ns, &pod, ready).await;
    let pod_ip = pod.status.and_then(|s| s.pod_ip).expect("a pod IP");
    assert!(pod_ip.starts_with("10.214.0."), "an address of the pod bridge's range: {pod_ip}");
    let http = reqwest::Client::new();
    for url in [format!("http://{pod_ip}:8080/"), format!("http://{}:{host_port}/", node.ip)] {
        let body = http.get(&url).send().await.and_then(|r| r.error_for_status()).unwrap_or_else(|e| panic!("GET {url}: {e}")).text().await.unwrap();
        assert_eq!(body, "served-by-the-pod\n", "{url}");
    }
}

#[tokio::test]
async fn commands_for_the_node_instance_see_its_pods_and_may_write_only_the_checkpoint_directory() {
    let Some((node, client, ns)) = node::start("commands_for_the_node_instance_see_its_pods_and_may_write_only_the_checkpoint_directory", "node-ssm").await else { return };
    // A sleep no other test runs, and an environment variable only this pod has.
    let seconds = 4_000_000 + (std::process::id() % 1_000_000);
    let mut pod = busybox_pod(&node, "sleeper", &format!("exec sleep {seconds}"), "Never");
    pod.spec.as_mut().unwrap().containers[0].env = Some(vec![serde_json::from_value(json!({"name": "FC_POD_MARKER", "value": ns})).unwrap()]);
    let pod = run_pod(&client, &ns, &pod, ready).await;
    let uid = pod.metadata.uid.clone().unwrap();

    let probe = node.checkpoint_dir().join(format!("probe-{ns}"));
    let commands = [
        "set -eu".to_string(),
        format!("pid=$(pgrep -xf 'sleep {seconds}')"),
        "grep -m1 ':pids:' /proc/$pid/cgroup".to_string(),
        // Another process's environment: readable only with the capabilities a real agent has.
        "tr '\\0' '\\n' </proc/$pid/environ | grep '^FC_POD_MARKER='".to_string(),
        // The container's writable layer, where containerd keeps it (the node's state, under /tmp when the stack
        // is, is seen at its own path).
        "upper=$(grep -m1 ' / / ' /proc/$pid/mountinfo | sed -n 's/.*upperdir=\\([^,]*\\).*/\\1/p')".to_string(),
        "test -d \"$upper\" && echo \"upperdir $upper\"".to_string(),
        format!("echo x >'{}' && rm '{}' && echo checkpoint-dir-writable", probe.display(), probe.display()),
        format!("if touch '{}/probe' 2>/dev/null; then echo kubelet-root-writable; else echo kubelet-root-read-only; fi", node.kubelet_root.display()),
        "if touch /etc/fc-node-tier-probe 2>/dev/null; then echo host-root-writable; else echo host-root-read-only; fi".to_string(),
    ];
    let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
    let result = vm::run(&support::stack().ssm().await, &node.instance_id, &commands).await;
    assert_eq!(result.status(), Some(&CommandInvocationStatus::Success), "{}", vm::stderr(&result));
    let out = vm::stdout(&result);
    assert!(out.contains(&format!("/kubepods/besteffort/pod{uid}/")), "the pod's cgroup: {out}");
    assert!(out.contains(&format!("FC_POD_MARKER={ns}\n")), "{out}");
    let upper = out.lines().find_map(|l| l.strip_prefix("upperdir ")).unwrap_or_else(|| panic!("the container's upperdir: {out}"));
    assert!(upper.starts_with(node.containerd_address.parent().unwrap().to_str().unwrap()), "under the node's state: {upper}");
    assert!(out.contains("checkpoint-dir-writable\n"), "{out}");
    assert!(out.contains("kubelet-root-read-only\n"), "{out}");
    assert!(out.contains("host-root-read-only\n"), "{out}");
    assert!(!probe.exists());
}

#[tokio::test]
async fn a_root_container_is_checkpointed_through_the_api_server() {
    let Some((node, client, ns)) = node::start("a_root_container_is_checkpointed_through_the_api_server", "node-checkpoint").await else { return };
    // The marker is made at run time, so only the container's memory holds it (its command line and the
    // checkpoint's copy of the container spec hold the pieces).
    let marker = format!("fc-marker-{ns}");
    let (head, tail) = marker.split_at(10);
    let script = format!("M=$(printf '%s%s' '{head}' '{tail}'); while :; do sleep 1; done");
    run_pod(&client, &ns, &busybox_pod(&node, "held", &script, "Never"), ready).await;

    // The kubelet's checkpoint API, as the controller will call it: the API server's node proxy.
    let request = kube::core::Request::new(format!("/api/v1/nodes/{}/proxy/checkpoint/{ns}/held/c", node.name))
        .create(&PostParams::default(), Vec::new())
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&client.request_text(request).await.expect("checkpoint")).unwrap();
    let archive = std::path::PathBuf::from(answer["items"][0].as_str().expect("the archive's path"));
    assert_eq!(archive.parent(), Some(node.checkpoint_dir().as_path()));
    let bytes = std::fs::read(&archive).expect("read the checkpoint");
    std::fs::remove_file(&archive).unwrap();
    assert!(bytes.windows(marker.len()).any(|w| w == marker.as_bytes()), "the marker is in the checkpoint's memory pages");
    // The container runs on.
    let pod = Api::<Pod>::namespaced(client, &ns).get("held").await.unwrap();
    assert!(ready(&pod), "{:?}", pod.status);
}

#[tokio::test]
async fn the_leftovers_check_reports_what_the_running_node_holds() {
    let Some(node) = node::node("the_leftovers_check_reports_what_the_running_node_holds") else { return };
    let out = std::process::Command::new(support::repo_root().join("dev/stack"))
        .arg("check-node")
        .env("FC_STACK_DIR", support::stack().var("FC_STACK_DIR"))
        .output()
        .expect("run dev/stack check-node");
    let report = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "while the node runs, the check fails: {report}");
    for expected in [
        "process ".to_string(),
        "bin/kubelet-v".to_string(),
        format!("mount {}\n", node.kubelet_root.display()),
        "link fc-node0\n".to_string(),
        "iptables chain KUBE-FIREWALL in iptables-nft's filter table\n".to_string(),
        "path /run/containerd\n".to_string(),
        "cgroup /sys/fs/cgroup/pids/kubepods\n".to_string(),
    ] {
        assert!(report.contains(&expected), "{expected:?} in {report}");
    }
}
