//! What a completed capture must have left behind exactly once, however many controllers worked on it or
//! were killed along the way: one SSM command per artifact kind, one snapshot set, one isolation and one
//! transition group, each containment action recorded once, each artifact once with the right hash.

use forensic_capture::api::{ArtifactType, ForensicCapture, Phase};
use sha2::{Digest, Sha256};

/// Asserts the side effects of `capture` (completed, Isolated) on `instance` (one extra volume).
pub async fn assert_each_side_effect_once(instance: &str, capture: &ForensicCapture) {
    let stack = super::stack();
    let status = capture.status.clone().unwrap();
    let uid = capture.metadata.uid.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Isolated), "{status:#?}");

    let ssm = stack.ssm().await;
    let commands = ssm.list_commands().instance_id(instance).send().await.unwrap();
    let comments: Vec<&str> = commands.commands().iter().filter_map(|c| c.comment()).collect();
    assert_eq!(comments.len(), 2, "exactly one SSM command per artifact kind: {comments:?}");
    assert!(comments.contains(&format!("forensic-capture {uid} volatile").as_str()));
    assert!(comments.contains(&format!("forensic-capture {uid} memory").as_str()));

    let ec2 = stack.ec2().await;
    let by_uid = aws_sdk_ec2::types::Filter::builder().name("tag:forensic-capture.dev/capture-uid").values(&uid).build();
    let snapshots = ec2.describe_snapshots().filters(by_uid.clone()).send().await.unwrap();
    let is_copy = |s: &&aws_sdk_ec2::types::Snapshot| s.tags().iter().any(|t| t.key() == Some("forensic-capture.dev/copy-of"));
    assert_eq!(snapshots.snapshots().iter().filter(|s| !is_copy(s)).count(), 2, "one snapshot set");
    assert_copies_once(&status, &uid).await;
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
        status.isolation.as_ref().unwrap().actions.iter().map(|a| (a.name.clone(), a.state.to_string())).collect();
    assert_eq!(actions.len(), 7, "each containment action recorded once: {actions:?}");

    let kinds: Vec<ArtifactType> = status.artifacts.iter().map(|a| a.kind).collect();
    for kind in [ArtifactType::MemoryImage, ArtifactType::VolatileData, ArtifactType::KernelSymbols] {
        assert_eq!(kinds.iter().filter(|k| **k == kind).count(), 1, "{kind:?}");
    }
    assert_eq!(kinds.iter().filter(|k| **k == ArtifactType::EbsSnapshot).count(), 2);
    let memory = status.artifacts.iter().find(|a| a.kind == ArtifactType::MemoryImage).unwrap();
    let bytes = super::fixtures::download(&stack.s3().await, &memory.uri).await;
    assert_eq!(memory.sha256.as_deref(), Some(hex::encode(Sha256::digest(&bytes)).as_str()));
}

/// Every snapshot copy the capture made exists exactly once, in its account and region, and is on record.
async fn assert_copies_once(status: &forensic_capture::api::ForensicCaptureStatus, uid: &str) {
    use std::collections::{BTreeMap, BTreeSet};
    let stack = super::stack();
    // (account, region, purpose) -> recorded snapshot IDs.
    let mut recorded: BTreeMap<(String, String, String), BTreeSet<String>> = BTreeMap::new();
    for artifact in status.artifacts.iter().filter(|a| a.kind == ArtifactType::EbsSnapshotCopy) {
        let copy = artifact.copy.as_ref().unwrap();
        let place = (copy.account_id.clone().unwrap_or_else(|| super::iam::ACCOUNT_ID.into()), copy.region.clone(), copy.purpose.clone());
        recorded.entry(place).or_default().insert(artifact.uri.rsplit('/').next().unwrap().to_string());
        assert_eq!(artifact.state, "Available", "{artifact:?}");
    }
    for ((account, region, purpose), ids) in recorded {
        let config = stack.aws_in(&account).await.to_builder().region(aws_config::Region::new(region.clone())).build();
        let filter = |key: &str, value: &str| aws_sdk_ec2::types::Filter::builder().name(format!("tag:{key}")).values(value).build();
        let found = aws_sdk_ec2::Client::new(&config)
            .describe_snapshots()
            .owner_ids("self")
            .filters(filter("forensic-capture.dev/capture-uid", uid))
            .filters(filter("forensic-capture.dev/copy-purpose", &purpose))
            .send()
            .await
            .unwrap();
        let made: BTreeSet<String> = found.snapshots().iter().filter_map(|s| s.snapshot_id().map(String::from)).collect();
        assert_eq!(made, ids, "{purpose} copies in account {account} ({region}): exactly those on record");
    }
}
