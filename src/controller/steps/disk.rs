//! EBS snapshots: one CreateSnapshots call (crash-consistent across volumes), found again by the capture's UID
//! tag after a restart, completion awaited by requeueing.
//!
//! CreateSnapshots has no client token and DescribeSnapshots is eventually consistent, so the intent is saved
//! (with its time) before the call, and a restart that finds no tagged snapshot waits out the lookup window
//! before creating a second set; snapshots already recorded must all be seen again before the step goes on.

use std::time::Duration;

use super::Progress;
use crate::{
    api::{Artifact, ArtifactType, ForensicCaptureStatus, Reason, Step},
    aws::ec2::{Ec2Api, SnapshotInfo},
    controller::{
        failure::StepError,
        protect,
        records::{self, upsert_artifact},
        status::{Writer, now},
        step_context::StepContext,
    },
};

const STEP: Step = Step::Disk;
const SNAPSHOT_POLL: Duration = Duration::from_secs(10);

pub async fn run(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'_>) -> Result<Progress, StepError> {
    let instance_id = sc.instance_id().to_string();
    let ec2 = &sc.aws.ec2;
    let failed = |e| StepError::on_instance(e, &instance_id, Reason::SnapshotFailed);
    let recorded: Vec<String> = status.artifacts.iter().filter(|a| a.kind == ArtifactType::EbsSnapshot).filter_map(|a| snapshot_id(&a.uri)).collect();
    // The intent is saved before the create, over the status this reconcile read: with neither an intent nor a
    // snapshot on record, no set exists for this capture and EC2 need not be asked.
    let mut snapshots = if recorded.is_empty() && !records::create_requested(STEP, status) {
        Vec::new()
    } else {
        ec2.snapshots_tagged(&sc.uid).await.map_err(failed)?
    };
    if let Some(missing) = recorded.iter().find(|id| !snapshots.iter().any(|s| &s.snapshot_id == *id)) {
        // A recorded snapshot the tag lookup does not show yet: look again rather than go on with part of the
        // set, for as long as a lookup may lag; after that it is gone (deleted, or its tag removed).
        if records::create_requested_recently(STEP, status, sc.ctx.config.create_lookup_window()) {
            return Ok(Progress::Wait(super::POLL));
        }
        return Err(StepError::failed(
            Reason::SnapshotFailed,
            format!("snapshot {missing} of instance {instance_id} was recorded but EC2 no longer lists it with the capture's tag"),
        ));
    }
    if snapshots.is_empty() {
        if records::create_requested_recently(STEP, status, sc.ctx.config.create_lookup_window()) {
            return Ok(Progress::Wait(super::POLL));
        }
        records::request_create(STEP, status);
        writer.save(status).await?;
        let description = format!("forensic-capture case {} instance {instance_id} capture {}", sc.capture.spec.case_id, sc.uid);
        snapshots = match ec2.create_snapshots(&instance_id, sc.capture.spec.steps.disk.exclude_boot_volume, &description, &sc.tags()).await {
            Ok(snapshots) => snapshots,
            Err(e) => {
                // Refused (throttled, say): no set exists, so the next attempt need not wait out the lookup
                // window. After a 5xx or a response cut short a set may exist: the intent stays.
                if e.refused_before_acting() {
                    records::forget_create_request(STEP, status);
                }
                return Err(failed(e));
            }
        };
        if snapshots.is_empty() {
            return Err(StepError::failed(Reason::NoVolumes, format!("instance {instance_id} has no EBS volumes to snapshot")));
        }
    }
    // Saved with the next record (the wait for completion, or the next step's first): until then the intent is
    // on record, and a restart finds the set by its tag.
    for snapshot in &snapshots {
        upsert_artifact(status, artifact(sc, snapshot));
    }
    if let Some(failed) = snapshots.iter().find(|s| s.state == "error") {
        return Err(StepError::failed(
            Reason::SnapshotFailed,
            format!("snapshot {} of volume {} (instance {instance_id}) is in state error", failed.snapshot_id, failed.volume_id),
        ));
    }
    if snapshots.iter().all(|s| s.state == "completed") {
        for snapshot in &snapshots {
            let lock = protect::snapshot(sc, &snapshot.snapshot_id).await?;
            upsert_artifact(status, Artifact { lock, ..artifact(sc, snapshot) });
        }
        records::succeed(STEP, status);
        return Ok(Progress::Continue);
    }
    Ok(Progress::Wait(SNAPSHOT_POLL))
}

/// The snapshot ID in a recorded snapshot artifact's ARN.
fn snapshot_id(uri: &str) -> Option<String> {
    uri.rsplit_once("snapshot/").map(|(_, id)| id.to_string())
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
        copy: None,
        container: None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn snapshot_ids_are_read_from_recorded_arns() {
        assert_eq!(super::snapshot_id("arn:aws:ec2:eu-west-1::snapshot/snap-0abc"), Some("snap-0abc".into()));
    }
}
