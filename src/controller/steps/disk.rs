//! EBS snapshots: one CreateSnapshots call (crash-consistent across volumes), found again by the capture's UID
//! tag after a restart, completion awaited by requeueing.

use super::{Progress, StepContext, StepError, Writer, upsert_artifact};
use crate::{
    api::{Artifact, ArtifactType, ForensicCaptureStatus, StepState},
    aws::ec2::{Ec2Api, SnapshotInfo},
    controller::status::now,
    planner::Step,
};

const STEP: Step = Step::Disk;

pub async fn run(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'_>) -> Result<Progress, StepError> {
    if super::start(STEP, status) {
        writer.save(status).await?;
    }
    let instance_id = sc.instance_id().to_string();
    let ec2 = &sc.aws.ec2;
    let mut snapshots = ec2.snapshots_tagged(&sc.uid).await.map_err(|e| StepError::aws(e, &instance_id, "SnapshotFailed"))?;
    if snapshots.is_empty() {
        let description = format!("forensic-capture case {} instance {instance_id} capture {}", sc.capture.spec.case_id, sc.uid);
        snapshots = ec2
            .create_snapshots(&instance_id, sc.capture.spec.disk.exclude_boot_volume, &description, &sc.tags())
            .await
            .map_err(|e| StepError::aws(e, &instance_id, "SnapshotFailed"))?;
        if snapshots.is_empty() {
            return Err(StepError::failed("NoVolumes", format!("instance {instance_id} has no EBS volumes to snapshot")));
        }
    }
    for snapshot in &snapshots {
        upsert_artifact(status, artifact(sc, snapshot));
    }
    if let Some(failed) = snapshots.iter().find(|s| s.state == "error") {
        return Err(StepError::failed(
            "SnapshotFailed",
            format!("snapshot {} of volume {} (instance {instance_id}) is in state error", failed.snapshot_id, failed.volume_id),
        ));
    }
    if snapshots.iter().all(|s| s.state == "completed") {
        for snapshot in &snapshots {
            let lock = super::protect::snapshot(sc, &snapshot.snapshot_id).await?;
            upsert_artifact(status, Artifact { lock, ..artifact(sc, snapshot) });
        }
        super::end(STEP, status, StepState::Succeeded, None, None);
        return Ok(Progress::Continue);
    }
    Ok(Progress::Wait(std::time::Duration::from_secs(10)))
}

fn artifact(sc: &StepContext<'_>, snapshot: &SnapshotInfo) -> Artifact {
    Artifact {
        name: format!("snapshot-{}", snapshot.volume_id),
        kind: ArtifactType::EbsSnapshot,
        // Snapshot ARNs carry no account: arn:aws:ec2:<region>::snapshot/<id>.
        uri: format!("arn:aws:ec2:{}::snapshot/{}", sc.target.region, snapshot.snapshot_id),
        sha256: None,
        size_bytes: snapshot.volume_size_gib.map(|g| g as i64 * 1024 * 1024 * 1024),
        started_at: snapshot.start_time.as_deref().and_then(|t| t.parse().ok()).map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
        created_at: (snapshot.state == "completed").then(now),
        state: if snapshot.state == "completed" { "Available".into() } else { snapshot.state.clone() },
        source_volume_id: Some(snapshot.volume_id.clone()),
        lock: None,
        key_id: None,
        image: None,
    }
}
