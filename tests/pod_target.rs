//! Pods as targets, on the API server alone: a pod bound to a Node whose providerID names a moto instance is
//! resolved pod -> node -> instance, recorded with its containers, captured on the node with the pod's context,
//! quarantined (label, NetworkPolicy, cordon) without touching the instance, and released. The kubelet's part
//! (the containers really running, their processes and layers on the node, checkpoints) is tests/node_pods.rs,
//! on the node tier.

mod support;

use std::collections::BTreeMap;

use forensic_capture::api::{ActionState, ForensicCapture, Phase};
use k8s_openapi::api::{
    core::v1::{Node, Pod, ServiceAccount},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{
    fixtures::{CaptureEnv, download, tar_entries},
    unique,
};

const CONTAINER_ID: &str = "5f2b8c0d9e7a41b3a6c4d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1";
const IMAGE_ID: &str = "docker.io/library/busybox@sha256:2ec4bcc3d9f3a6b8e1d0c7f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5";

fn condition(capture: &ForensicCapture, type_: &str) -> (String, String, String) {
    let c = capture.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_} condition: {:#?}", capture.status));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// A Node as an EKS node registers itself: named after the instance's private DNS name, providerID to it.
async fn node_for(kube: &kube::Client, instance: &str) -> String {
    let name = format!("{}.eu-west-1.compute.internal", unique("ip-10-30-1"));
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": "eu-west-1a"}},
        "spec": {"providerID": format!("aws:///eu-west-1a/{instance}")}
    }))
    .unwrap();
    Api::<Node>::all(kube.clone()).create(&PostParams::default(), &node).await.unwrap();
    name
}

/// A pod bound to `node` (spec.nodeName, as the scheduler would set it), with the status its kubelet would
/// report once its one container runs: written by the test, since no kubelet serves this Node. With no node,
/// a pod no scheduler can place.
async fn running_pod(kube: &kube::Client, namespace: &str, name: &str, node: Option<&str>) -> Pod {
    // The API server's ServiceAccount admission wants the pod's account; without the node tier no
    // controller-manager makes the default one.
    let accounts: Api<ServiceAccount> = Api::namespaced(kube.clone(), namespace);
    match accounts.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("default ServiceAccount: {e}"),
    }
    let pods: Api<Pod> = Api::namespaced(kube.clone(), namespace);
    // Without a node the pod must stay unplaced even where a scheduler and a real node run (the node tier): no
    // node has this label.
    let placement = match node {
        Some(node) => json!({"nodeName": node}),
        None => json!({"nodeSelector": {"forensic-capture.dev/test-no-such-node": "true"}}),
    };
    let mut spec = json!({"containers": [{"name": "app", "image": "busybox:1.36"}]});
    spec.as_object_mut().unwrap().extend(placement.as_object().unwrap().clone());
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "web"}}, "spec": spec})).unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    if node.is_none() {
        return created;
    }
    let status = json!({"status": {
        "phase": "Running",
        "podIP": "10.88.0.5",
        "podIPs": [{"ip": "10.88.0.5"}],
        "containerStatuses": [{
            "name": "app", "image": "docker.io/library/busybox:1.36", "imageID": IMAGE_ID,
            "containerID": format!("containerd://{CONTAINER_ID}"), "ready": true, "restartCount": 0,
            "state": {"running": {"startedAt": "2026-12-04T03:00:00Z"}}
        }]
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap()
}

async fn interface_groups(ec2: &aws_sdk_ec2::Client, instance: &str) -> Vec<String> {
    let out = ec2.describe_instances().instance_ids(instance).send().await.unwrap();
    let i = &out.reservations()[0].instances()[0];
    let mut groups: Vec<String> = i.network_interfaces().iter().flat_map(|n| n.groups()).filter_map(|g| g.group_id()).map(String::from).collect();
    groups.sort();
    groups
}

#[tokio::test]
async fn a_pod_is_captured_on_its_node_quarantined_without_touching_the_instance_and_released() {
    let stack = support::stack();
    let ec2 = stack.ec2().await;
    let instance = support::run_instance(&ec2, 0, &[]).await.instance_id;
    let env = CaptureEnv::new("pod").await;
    let kube = env.kube.clone();
    let node = node_for(&kube, &instance).await;
    let pod = running_pod(&kube, &env.namespace, "web-0", Some(&node)).await;
    let pod_uid = pod.metadata.uid.clone().unwrap();
    // Another policy already selects the pod: policies add up, so the capture must say it is there.
    let allow_web: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "allow-web"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}], "policyTypes": ["Ingress"]}
    }))
    .unwrap();
    let policies: Api<NetworkPolicy> = Api::namespaced(kube.clone(), &env.namespace);
    policies.create(&PostParams::default(), &allow_web).await.unwrap();
    let groups_before = interface_groups(&ec2, &instance).await;

    let _controller = env.start_controller("pod");
    env.apply(&format!(
        "apiVersion: forensic-capture.dev/v1alpha1\nkind: ForensicCapture\nmetadata:\n  name: web-pod\nspec:\n  caseId: INC-15\n  target:\n    podRef: {{namespace: {}, name: web-0}}\n  memory: {{enabled: false}}\n  isolation:\n    allowIngressCidrs: [203.0.113.7/32]\n  pod:\n    cordon: true\n",
        env.namespace
    ))
    .await;
    let capture = env.wait_completed("web-pod").await;
    let status = capture.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Isolated), "{status:#?}");
    let uid = capture.metadata.uid.clone().unwrap();

    // pod -> node -> instance, and the pod as its kubelet reported it.
    let target = status.target.clone().unwrap();
    assert_eq!((target.instance_id.as_str(), target.node_name.as_deref()), (instance.as_str(), Some(node.as_str())));
    let facts = target.pod.clone().expect("the pod is recorded");
    assert_eq!((facts.namespace.as_str(), facts.name.as_str(), facts.uid.as_str()), (env.namespace.as_str(), "web-0", pod_uid.as_str()));
    assert_eq!((facts.phase.as_deref(), facts.ips.clone()), (Some("Running"), vec!["10.88.0.5".to_string()]));
    let [container] = facts.containers.as_slice() else { panic!("one container: {facts:#?}") };
    assert_eq!(
        (container.name.as_str(), container.image.as_str(), container.image_id.as_deref(), container.container_id.clone(), container.state.as_deref(), container.kind.as_str()),
        ("app", "busybox:1.36", Some(IMAGE_ID), Some(format!("containerd://{CONTAINER_ID}")), Some("Running"), "Regular")
    );

    // The volatile archive was taken on the node with the pod's sections (what they hold needs a real
    // container: tests/node_pods.rs); the runtime's container ID reached the script.
    let volatile = status.artifacts.iter().find(|a| a.name == "volatile").expect("volatile archive");
    let entries = tar_entries(&download(&stack.s3().await, &volatile.uri).await);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    for section in ["volatile/pod/processes.tsv", "volatile/pod/cgroups.tsv", "volatile/pod/container-layers.tsv"] {
        assert!(names.contains(&section), "{section} in {names:?}");
    }
    let layers = &entries.iter().find(|(n, _)| n == "volatile/pod/container-layers.tsv").unwrap().1;
    assert!(String::from_utf8_lossy(layers).contains(CONTAINER_ID), "{}", String::from_utf8_lossy(layers));

    // The pod's containment, recorded; the instance's, not applied (no spec.pod.isolateNode).
    let record = status.isolation.clone().unwrap();
    let states: BTreeMap<&str, ActionState> = record.actions.iter().map(|a| (a.name.as_str(), a.state)).collect();
    assert_eq!(states.get("PodQuarantine"), Some(&ActionState::Applied), "{record:#?}");
    assert_eq!(states.get("NodeCordon"), Some(&ActionState::Applied), "{record:#?}");
    for name in ["TerminationSafeguards", "InstanceTags", "AutoScaling", "LoadBalancers", "ElasticIps", "SecurityGroups", "Credentials"] {
        let action = record.actions.iter().find(|a| a.name == name).unwrap_or_else(|| panic!("{name} recorded"));
        assert_eq!(action.state, ActionState::NotNeeded, "{action:?}");
        assert!(action.message.as_deref().unwrap().contains("spec.pod.isolateNode"), "{action:?}");
    }
    assert_eq!(interface_groups(&ec2, &instance).await, groups_before, "the node's instance keeps its security groups");
    let quarantine = record.pod_quarantine.clone().unwrap();
    assert_eq!((quarantine.uid.as_str(), quarantine.label_before.clone(), quarantine.other_policies.clone()), (pod_uid.as_str(), None, vec!["allow-web".to_string()]));
    let message = record.actions.iter().find(|a| a.name == "PodQuarantine").unwrap().message.clone().unwrap();
    assert!(message.contains("allow-web") && message.contains("203.0.113.7/32"), "{message}");

    // What the cluster now holds: the label, the policy, the cordon.
    let pods: Api<Pod> = Api::namespaced(kube.clone(), &env.namespace);
    let labels = pods.get("web-0").await.unwrap().metadata.labels.unwrap();
    assert_eq!(labels.get("forensic-capture.dev/quarantine"), Some(&uid));
    assert_eq!(labels.get("app").map(String::as_str), Some("web"), "the pod keeps its own labels (its ReplicaSet still owns it)");
    let policy = policies.get(&quarantine.network_policy).await.expect("the quarantine policy exists");
    let spec = serde_json::to_value(policy.spec.unwrap()).unwrap();
    // Egress in policyTypes with no egress rule (the API server stores the empty list as absent): no egress.
    assert_eq!(
        spec,
        json!({
            "podSelector": {"matchLabels": {"forensic-capture.dev/quarantine": uid}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": "203.0.113.7/32"}}]}]
        })
    );
    let nodes: Api<Node> = Api::all(kube.clone());
    assert_eq!(nodes.get(&node).await.unwrap().spec.unwrap().unschedulable, Some(true), "cordoned");
    assert!(pods.get_opt("web-0").await.unwrap().is_some(), "the pod is never deleted");

    // The manifest records the pod.
    let manifest = status.artifacts.iter().find(|a| a.name == "manifest").expect("manifest");
    let manifest: serde_json::Value = serde_json::from_slice(&download(&stack.s3().await, &manifest.uri).await).unwrap();
    assert_eq!(manifest["target"]["pod"]["uid"], json!(pod_uid), "{manifest:#}");

    // Release: the policy goes, the label goes, the node is schedulable again; the other policy stays.
    let released = env.release("release-web", "web-pod", "pod rebuilt from a clean image").await;
    assert!(released.released_at.is_some(), "{released:#?}");
    let restored: Vec<&str> = released.restored.iter().map(|a| a.name.as_str()).collect();
    assert!(restored.contains(&"PodQuarantine") && restored.contains(&"NodeCordon"), "{restored:?}");
    assert!(policies.get_opt(&quarantine.network_policy).await.unwrap().is_none(), "quarantine policy deleted");
    assert!(policies.get_opt("allow-web").await.unwrap().is_some(), "the namespace's own policy stays");
    let labels = pods.get("web-0").await.unwrap().metadata.labels.unwrap();
    assert_eq!(labels.get("forensic-capture.dev/quarantine"), None, "{labels:?}");
    assert_ne!(nodes.get(&node).await.unwrap().spec.unwrap().unschedulable, Some(true), "uncordoned");
}

#[tokio::test]
async fn pod_targets_that_are_missing_or_unplaced_fail_with_their_reason_and_contradictory_specs_are_refused() {
    let env = CaptureEnv::new("pod-bad").await;
    let kube = env.kube.clone();
    running_pod(&kube, &env.namespace, "pending-0", None).await;
    let _controller = env.start_controller("pod-bad");
    let capture = |name: &str, target: &str, extra: &str| {
        format!("apiVersion: forensic-capture.dev/v1alpha1\nkind: ForensicCapture\nmetadata:\n  name: {name}\nspec:\n  caseId: INC-15\n  target:\n{target}{extra}")
    };
    let ns = env.namespace.clone();
    env.apply(&capture("ghost", &format!("    podRef: {{namespace: {ns}, name: no-such-pod}}\n"), "")).await;
    env.apply(&capture("unplaced", &format!("    podRef: {{namespace: {ns}, name: pending-0}}\n"), "")).await;
    for (name, reason, names) in [("ghost", "PodNotFound", "no-such-pod"), ("unplaced", "PodNotScheduled", "pending-0")] {
        let done = env.wait_completed(name).await;
        let (state, got, message) = condition(&done, "Failed");
        assert_eq!((state.as_str(), got.as_str()), ("True", reason), "{message}");
        assert!(message.contains(&format!("{ns}/{names}")), "{message}");
        assert!(done.status.unwrap().artifacts.is_empty());
    }

    // Refused at apply time, with the rule's message.
    let refused = |yaml: String| {
        let env = &env;
        async move {
            let capture: ForensicCapture = serde_yaml::from_str(&yaml).unwrap();
            match env.captures().create(&PostParams::default(), &capture).await {
                Err(kube::Error::Api(e)) => e.message,
                other => panic!("accepted: {other:?}"),
            }
        }
    };
    let both = refused(capture("both", &format!("    instanceId: i-0123456789abcdef0\n    podRef: {{namespace: {ns}, name: web-0}}\n"), "")).await;
    assert!(both.contains("set exactly one of target.instanceId, target.nodeName and target.podRef"), "{both}");
    let pod_without_pod = refused(capture("stray", "    instanceId: i-0123456789abcdef0\n", "  pod: {cordon: true}\n")).await;
    assert!(pod_without_pod.contains("spec.pod applies to a pod target"), "{pod_without_pod}");
}
