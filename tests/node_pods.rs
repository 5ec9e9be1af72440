//! Pods as targets on the node tier (dev/stack with FC_STACK_NODE=1): a real kubelet runs the pod under
//! containerd v2 on this machine, whose moto instance the node's providerID names and whose commands the SSM
//! simulator runs on this host (ssm-simulator:target=host). A root container's checkpoint is taken through the
//! kubelet, uploaded, verified, holds the container's memory, and is removed from the node; a non-root
//! container's checkpoint fails on this machine (CRIU needs CAP_SYS_RESOURCE here, which the VM lacks) and the
//! rest of the capture completes. Skipped, saying so, when the stack runs without the node tier.

mod support;

use std::time::Duration;

use forensic_capture::api::{ActionState, ArtifactType, ForensicCapture, Phase, StepState};
use k8s_openapi::api::{core::v1::Pod, networking::v1::NetworkPolicy};
use kube::{Api, api::PostParams};
use serde_json::json;
use sha2::{Digest, Sha256};
use support::{
    fixtures::{CaptureEnv, download, plain_tar_entries, tar_entries},
    unique,
};

/// The node tier's settings, or None (with a note on stderr) when the stack has no node.
fn node_tier() -> Option<(String, String)> {
    if std::env::var("FC_STACK_NODE").as_deref() != Ok("1") {
        eprintln!("skipped: the stack runs without the node tier (dev/stack up with FC_STACK_NODE=1; dev/test sets it)");
        return None;
    }
    Some((std::env::var("FC_NODE_NAME").expect("FC_NODE_NAME"), std::env::var("FC_NODE_BUSYBOX_IMAGE").expect("FC_NODE_BUSYBOX_IMAGE")))
}

/// A pod on the node whose one container keeps `marker` in its memory (its environment) and writes a file
/// into its writable layer; waits until it runs.
async fn marked_pod(kube: &kube::Client, namespace: &str, name: &str, image: &str, marker: &str, run_as: Option<i64>) -> Pod {
    let pods: Api<Pod> = Api::namespaced(kube.clone(), namespace);
    let mut container = json!({
        "name": "app", "image": image, "imagePullPolicy": "Never",
        "env": [{"name": "FC_TEST_MARKER", "value": marker}],
        "command": ["/bin/sh", "-c", "echo \"$FC_TEST_MARKER\" > /tmp/written-by-the-pod; while :; do sleep 1; done"]
    });
    if let Some(uid) = run_as {
        container["securityContext"] = json!({"runAsUser": uid, "runAsGroup": uid, "runAsNonRoot": true});
    }
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 1, "automountServiceAccountToken": false}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let pod = pods.get(name).await.unwrap();
        let running = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).is_some_and(|cs| cs.iter().all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some())));
        if running {
            return pod;
        }
        assert!(std::time::Instant::now() < deadline, "pod {namespace}/{name} did not run: {:#?}", pod.status);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn capture_yaml(name: &str, namespace: &str, pod: &str) -> String {
    format!(
        "apiVersion: forensic-capture.dev/v1alpha1\nkind: ForensicCapture\nmetadata:\n  name: {name}\nspec:\n  caseId: INC-15\n  target:\n    podRef: {{namespace: {namespace}, name: {pod}}}\n  memory: {{enabled: false}}\n  disk: {{enabled: false}}\n  isolation:\n    allowIngressCidrs: [203.0.113.7/32]\n  pod:\n    checkpoint: true\n"
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_root_container_is_checkpointed_with_its_memory_quarantined_and_released_and_keeps_running() {
    let Some((node, image)) = node_tier() else { return };
    let stack = support::stack();
    let env = CaptureEnv::new("node-pod").await;
    let kube = env.kube.clone();
    let marker = unique("fc-marker-in-memory");
    let pod = marked_pod(&kube, &env.namespace, "root-0", &image, &marker, None).await;
    assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some(node.as_str()));
    let _controller = env.start_controller("node-pod");
    env.apply(&capture_yaml("root-pod", &env.namespace, "root-0")).await;
    let capture = env.wait_for("root-pod", Duration::from_secs(300), |c: &ForensicCapture| c.status.as_ref().is_some_and(|s| s.completed_at.is_some())).await;
    let status = capture.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Isolated), "{status:#?}");
    let container_id = pod.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0].container_id.clone().unwrap();
    let facts = status.target.as_ref().unwrap().pod.clone().unwrap();
    assert_eq!(facts.containers[0].container_id.as_deref(), Some(container_id.as_str()));
    assert!(facts.containers[0].image_id.as_deref().is_some_and(|i| i.contains("sha256:")), "{facts:#?}");

    // The checkpoint: an artifact whose SHA-256 is that of the object, recomputed; the marker in its memory pages.
    let artifact = status.artifacts.iter().find(|a| a.kind == ArtifactType::ContainerCheckpoint).unwrap_or_else(|| panic!("a checkpoint artifact: {status:#?}"));
    let archive = download(&stack.s3().await, &artifact.uri).await;
    assert_eq!(artifact.sha256.as_deref(), Some(hex::encode(Sha256::digest(&archive)).as_str()));
    assert_eq!(artifact.size_bytes, Some(archive.len() as i64));
    let container = artifact.container.clone().unwrap();
    assert_eq!((container.name.as_str(), container.container_id.as_deref()), ("app", Some(container_id.as_str())));
    let entries = plain_tar_entries(&archive);
    let pages: Vec<&(String, Vec<u8>)> = entries.iter().filter(|(n, _)| n.contains("pages-") && n.ends_with(".img")).collect();
    assert!(!pages.is_empty(), "CRIU memory pages in {:?}", entries.iter().map(|(n, _)| n).collect::<Vec<_>>());
    assert!(pages.iter().any(|(_, body)| contains(body, marker.as_bytes())), "the marker is in the container's memory pages");

    // Removed from the node once verified, and said so.
    let record = status.checkpoints.iter().find(|c| c.container == "app").unwrap();
    let path = record.node_path.clone().unwrap();
    assert!(record.removed_at.is_some(), "{record:#?}");
    assert!(!std::path::Path::new(&path).exists(), "{path} is gone from the node");
    assert_eq!(status.steps.checkpoint_removal.as_ref().unwrap().state, StepState::Succeeded);

    // The pod's context in the volatile archive: its processes (with the container) and its writable layer.
    let volatile = status.artifacts.iter().find(|a| a.name == "volatile").unwrap();
    let volatile = tar_entries(&download(&stack.s3().await, &volatile.uri).await);
    let section = |name: &str| String::from_utf8_lossy(&volatile.iter().find(|(n, _)| n == &format!("volatile/pod/{name}")).unwrap().1).to_string();
    let bare_id = container_id.trim_start_matches("containerd://");
    assert!(section("processes.tsv").lines().skip(1).any(|l| l.split('\t').nth(1) == Some(bare_id)), "a process of the container: {}", section("processes.tsv"));
    assert!(section("container-layers.tsv").contains("tmp/written-by-the-pod"), "{}", section("container-layers.tsv"));

    // Quarantined, and still running.
    let pods: Api<Pod> = Api::namespaced(kube.clone(), &env.namespace);
    let now = pods.get("root-0").await.unwrap();
    let uid = capture.metadata.uid.clone().unwrap();
    assert_eq!(now.metadata.labels.as_ref().unwrap().get("forensic-capture.dev/quarantine"), Some(&uid));
    let cs = &now.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
    assert!(cs.state.as_ref().unwrap().running.is_some() && cs.restart_count == 0, "the container runs on, never restarted: {cs:#?}");
    let quarantine = status.isolation.as_ref().unwrap().pod_quarantine.clone().unwrap();
    let policies: Api<NetworkPolicy> = Api::namespaced(kube.clone(), &env.namespace);
    assert!(policies.get_opt(&quarantine.network_policy).await.unwrap().is_some());
    let applied = status.isolation.as_ref().unwrap().actions.iter().find(|a| a.name == "PodQuarantine").unwrap().state;
    assert_eq!(applied, ActionState::Applied);

    // Release: policy and label gone.
    let released = env.release("release-root", "root-pod", "reviewed").await;
    assert!(released.released_at.is_some(), "{released:#?}");
    assert!(policies.get_opt(&quarantine.network_policy).await.unwrap().is_none());
    assert_eq!(pods.get("root-0").await.unwrap().metadata.labels.unwrap().get("forensic-capture.dev/quarantine"), None);
}

#[tokio::test]
async fn a_non_root_container_that_cannot_be_checkpointed_says_why_and_the_capture_goes_on() {
    let Some((_, image)) = node_tier() else { return };
    let env = CaptureEnv::new("node-nonroot").await;
    let kube = env.kube.clone();
    marked_pod(&kube, &env.namespace, "nonroot-0", &image, &unique("fc-marker"), Some(65532)).await;
    let _controller = env.start_controller("node-nonroot");
    env.apply(&capture_yaml("nonroot-pod", &env.namespace, "nonroot-0")).await;
    let capture = env.wait_for("nonroot-pod", Duration::from_secs(300), |c: &ForensicCapture| c.status.as_ref().is_some_and(|s| s.completed_at.is_some())).await;
    let status = capture.status.clone().unwrap();
    let step = status.steps.checkpoint.clone().unwrap();
    assert_eq!((step.state, step.reason.as_deref()), (StepState::Failed, Some("CheckpointFailed")), "{status:#?}");
    let record = &status.checkpoints[0];
    let message = record.message.clone().unwrap_or_default();
    // On this machine CRIU cannot read a non-root task's rlimits without CAP_SYS_RESOURCE.
    assert!(message.contains("rlimit") || message.contains("Operation not permitted"), "{message}");
    assert!(!status.artifacts.iter().any(|a| a.kind == ArtifactType::ContainerCheckpoint));
    for (name, record) in [("volatile", &status.steps.volatile), ("isolation", &status.steps.isolation), ("checkpointRemoval", &status.steps.checkpoint_removal)] {
        assert_eq!(record.as_ref().map(|r| r.state), Some(StepState::Succeeded), "{name}: {status:#?}");
    }
}
