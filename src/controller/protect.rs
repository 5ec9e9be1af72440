//! Write-once protection of evidence as it is recorded: S3 Object Lock on objects, EBS Snapshot Lock on
//! snapshots, as the controller is configured. The artifact is recorded before it is protected, so a refused
//! lock never hides evidence; it fails the step with a reason that says the evidence is there but unlocked.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::{
    failure::{OnError, StepError},
    step_context::StepContext,
};
use crate::{
    api::{ArtifactLock, Reason},
    aws::{AwsError, s3::EvidenceStore, snapshot_lock::SnapshotLockApi},
    custody,
};

fn lock_error(error: AwsError, what: String, reason: Reason) -> StepError {
    // Even AccessDenied only costs the lock: the evidence is in place and the other steps still run.
    StepError::aws(error, &format!("{what} is stored but not locked"), OnError::only(reason))
}

/// Applies the configured Object Lock retention and legal hold to `s3://bucket/key`.
pub async fn object(sc: &StepContext<'_>, bucket: &str, key: &str) -> Result<Option<ArtifactLock>, StepError> {
    let p = &sc.ctx.config.protection;
    let Some(protection) = custody::object_protection(p.object_lock_mode, p.object_lock_retention_days, p.object_lock_legal_hold, Timestamp::now()) else {
        return Ok(None);
    };
    sc.aws
        .store
        .protect_object(bucket, key, &protection)
        .await
        .map_err(|e| lock_error(e, format!("s3://{bucket}/{key} from instance {}", sc.instance_id()), Reason::ObjectLockFailed))?;
    Ok(Some(ArtifactLock {
        mode: protection.retention.map(|(mode, _)| mode.as_str().to_string()),
        until: protection.retention.map(|(_, until)| Time(until)),
        legal_hold: protection.legal_hold,
    }))
}

/// Locks a completed snapshot with EBS Snapshot Lock, when configured.
pub async fn snapshot(sc: &StepContext<'_>, snapshot_id: &str) -> Result<Option<ArtifactLock>, StepError> {
    snapshot_with(sc, &sc.aws.ec2, snapshot_id, &format!("snapshot {snapshot_id} of instance {}", sc.instance_id())).await
}

/// Locks a completed snapshot through `ec2` (the account it is in), when configured; `what` names it.
pub async fn snapshot_with(sc: &StepContext<'_>, ec2: &impl SnapshotLockApi, snapshot_id: &str, what: &str) -> Result<Option<ArtifactLock>, StepError> {
    let p = &sc.ctx.config.protection;
    let Some(request) = custody::snapshot_lock_request(snapshot_id, p.snapshot_lock_mode, p.snapshot_lock_duration_days, p.snapshot_lock_cool_off_hours)
    else {
        return Ok(None);
    };
    let until = custody::days_after(Timestamp::now(), request.duration_days as u32);
    let state = ec2.lock_snapshot(&request).await.map_err(|e| lock_error(e, what.to_string(), Reason::SnapshotLockFailed))?;
    Ok(Some(ArtifactLock { mode: Some(state), until: Some(Time(until)), legal_hold: false }))
}
