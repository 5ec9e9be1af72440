//! Crash safety: a controller SIGKILLed at any instant and restarted produces no duplicate SSM command,
//! snapshot set or security group, and loses no artifact.

mod support;

use std::time::{Duration, Instant};

use forensic_capture::api::{ArtifactType, ForensicCapture, Phase};
use sha2::{Digest, Sha256};
use support::fixtures::{CaptureEnv, capture_yaml, set_instance_memory};

enum KillWhen {
    /// Right after every status change the test observes: just after intent was recorded, or just after a
    /// side effect's result was.
    EveryStatusChange,
    /// On a beat unrelated to what the controller is doing: between an AWS call and its record.
    Every(Duration),
}

/// After this many kills the controller is left alone to finish: on a slow machine a beat shorter than a
/// controller's start-up would otherwise never let it make progress.
const MAX_KILLS: u32 = 12;

async fn capture_with_kills(prefix: &str, kill: KillWhen) {
    let stack = support::stack();
    let env = CaptureEnv::new(prefix).await;
    let ec2 = stack.ec2().await;
    let instance = support::run_instance(&ec2, 1, &[]).await.instance_id;
    set_instance_memory(&instance, 20 * 1024 * 1024 + 7);
    let mut controller = env.start_controller(prefix);
    env.apply(&capture_yaml("crashy", &instance, "")).await;

    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last_status = String::new();
    let mut last_kill = Instant::now();
    let final_capture: ForensicCapture = loop {
        assert!(Instant::now() < deadline, "capture did not complete under repeated kills");
        let capture = env.captures().get("crashy").await.unwrap();
        if capture.status.as_ref().is_some_and(|s| s.completed_at.is_some()) {
            break capture;
        }
        let now_status = serde_json::to_string(&capture.status).unwrap();
        let kill_now = controller.starts <= MAX_KILLS
            && match kill {
                KillWhen::EveryStatusChange => now_status != last_status,
                // Varied a little, so kills do not line up with the controller's own rhythm.
                KillWhen::Every(beat) => last_kill.elapsed() >= beat + Duration::from_millis(97 * u64::from(controller.starts % 7)),
            };
        if kill_now {
            controller.restart();
            last_kill = Instant::now();
        }
        last_status = now_status;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(controller.starts >= 4, "only {} controller starts: the test did not exercise restarts", controller.starts);

    let status = final_capture.status.clone().unwrap();
    let uid = final_capture.metadata.uid.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Isolated), "{status:#?}");

    let ssm = stack.ssm().await;
    let commands = ssm.list_commands().instance_id(&instance).send().await.unwrap();
    let comments: Vec<&str> = commands.commands().iter().filter_map(|c| c.comment()).collect();
    assert_eq!(comments.len(), 2, "exactly one SSM command per artifact kind: {comments:?}");
    assert!(comments.contains(&format!("forensic-capture {uid} volatile").as_str()));
    assert!(comments.contains(&format!("forensic-capture {uid} memory").as_str()));

    let by_uid = aws_sdk_ec2::types::Filter::builder().name("tag:forensic-capture.dev/capture-uid").values(&uid).build();
    let snapshots = ec2.describe_snapshots().filters(by_uid.clone()).send().await.unwrap();
    assert_eq!(snapshots.snapshots().len(), 2, "one snapshot set");
    let groups = ec2.describe_security_groups().filters(by_uid).send().await.unwrap();
    let mut roles: Vec<String> = groups
        .security_groups()
        .iter()
        .flat_map(|g| g.tags())
        .filter(|t| t.key() == Some("forensic-capture.dev/role"))
        .filter_map(|t| t.value().map(String::from))
        .collect();
    roles.sort();
    assert_eq!(roles, vec!["isolation", "transition"], "one isolation group and one transition group");
    let actions: Vec<(String, String)> =
        status.isolation.as_ref().unwrap().actions.iter().map(|a| (a.name.clone(), a.state.clone())).collect();
    assert_eq!(actions.len(), 7, "each containment action recorded once: {actions:?}");

    let kinds: Vec<ArtifactType> = status.artifacts.iter().map(|a| a.kind).collect();
    for kind in [ArtifactType::MemoryImage, ArtifactType::VolatileData, ArtifactType::KernelSymbols] {
        assert_eq!(kinds.iter().filter(|k| **k == kind).count(), 1, "{kind:?}");
    }
    assert_eq!(kinds.iter().filter(|k| **k == ArtifactType::EbsSnapshot).count(), 2);
    let memory = status.artifacts.iter().find(|a| a.kind == ArtifactType::MemoryImage).unwrap();
    let (bucket, key) = memory.uri.strip_prefix("s3://").unwrap().split_once('/').unwrap();
    let bytes = stack.s3().await.get_object().bucket(bucket).key(key).send().await.unwrap().body.collect().await.unwrap().to_vec();
    assert_eq!(memory.sha256.as_deref(), Some(hex::encode(Sha256::digest(&bytes)).as_str()));
}

#[tokio::test]
async fn kill_after_every_status_change_duplicates_nothing() {
    capture_with_kills("crash-status", KillWhen::EveryStatusChange).await;
}

#[tokio::test]
async fn kill_on_a_fixed_beat_duplicates_nothing() {
    capture_with_kills("crash-beat", KillWhen::Every(Duration::from_millis(400))).await;
}
