//! The hand-over of disk evidence to a forensic account: each completed snapshot is copied there under the
//! forensic account's KMS key. EC2 lets another account copy only what is shared with it, and never shares a
//! snapshot under the AWS managed key for EBS, so a snapshot under any key but the share key is first
//! re-encrypted in the instance's account (a Shareable copy), shared, copied by the forensic account (the
//! Forensic copy), and unshared. Runs after containment: copying can take hours and must never delay it.
//!
//! Every object is recorded before it could exist unrecorded: a copy's artifact is saved as Requested before
//! CopySnapshot (which has no client token), and a share is recorded on the Forensic artifact before it is
//! made. A restart finds copies by their tags (capture UID, purpose, copy-of). Nothing is ever deleted: the
//! Shareable copy stays in the instance's account, on record.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::Progress;
use crate::{
    api::{Artifact, ArtifactType, ForensicCaptureStatus, Reason, SnapshotCopy, Step},
    aws::{
        AwsError, ErrorClass,
        snapshot_copy::{CopyRequest, SnapshotCopyApi, SnapshotKey, tags},
        snapshot_share::SnapshotShareApi,
    },
    controller::{
        accounts_config::ForensicDestination,
        failure::{OnError, StepError},
        protect,
        records::{self, upsert_artifact},
        status::{Writer, now},
        step_context::StepContext,
    },
};

const STEP: Step = Step::ForensicCopy;
/// Copies take minutes to hours: look again this often.
const COPY_POLL: Duration = Duration::from_secs(15);
pub const FORENSIC: &str = "Forensic";
pub const SHAREABLE: &str = "Shareable";
/// A copy's artifact before CopySnapshot answered.
const REQUESTED: &str = "Requested";
/// The Forensic artifact once the share it needs is on record, before the copy is requested.
const SHARED: &str = "Shared";
/// A Shareable copy whose request was refused before EC2 acted: none exists.
const NOT_REQUESTED: &str = "NotRequested";

/// What one source snapshot's hand-over is waiting for.
enum HandOver {
    Done,
    Waiting,
}

enum Copied {
    Pending,
    Completed(String),
}

/// Which part of the hand-over an error belongs to: its reason and what the message says was being done.
enum Stage<'a> {
    ReEncrypt { key: &'a str },
    Share { account: &'a str },
    Copy { account: &'a str, region: &'a str, key: &'a str },
    Unshare { account: &'a str },
}

impl Stage<'_> {
    fn error(&self, sc: &StepContext<'_>, snapshot_id: &str, error: AwsError) -> StepError {
        let subject = sc.subject();
        let (reason, doing) = match self {
            Stage::ReEncrypt { key } => (Reason::SnapshotShareFailed, format!("re-encrypting snapshot {snapshot_id} of {subject} to the share key {key}")),
            Stage::Share { account } => (Reason::SnapshotShareFailed, format!("sharing snapshot {snapshot_id} of {subject} with forensic account {account}")),
            Stage::Copy { account, region, key } => {
                (Reason::ForensicCopyFailed, format!("copying snapshot {snapshot_id} of {subject} into forensic account {account} ({region}) under key {key}"))
            }
            Stage::Unshare { account } => {
                (Reason::SnapshotShareFailed, format!("removing the share of snapshot {snapshot_id} of {subject} with account {account} (the copy is made)"))
            }
        };
        // Only the hand-over fails, whatever the error: the evidence is in place, containment is done.
        StepError::aws(error, &doing, OnError::only(reason))
    }

    fn failed(&self, sc: &StepContext<'_>, message: String) -> StepError {
        let reason = match self {
            Stage::Copy { .. } => Reason::ForensicCopyFailed,
            _ => Reason::SnapshotShareFailed,
        };
        StepError::failed(reason, format!("{}: {message}", sc.subject()))
    }
}

pub async fn run(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'_>) -> Result<Progress, StepError> {
    let spec = sc.capture.spec.steps.disk.forensic_copy.clone().unwrap_or_default();
    let destination = sc
        .ctx
        .config
        .accounts
        .forensic_destination(&spec, &sc.target.region)
        .map_err(|m| StepError::failed(Reason::ForensicCopyNotConfigured, format!("{}: {m}", sc.subject())))?;
    // (volume, snapshot, size) of every snapshot the disk step recorded.
    let sources: Vec<(String, String, Option<i64>)> = status
        .artifacts
        .iter()
        .filter(|a| a.kind == ArtifactType::EbsSnapshot)
        .filter_map(|a| Some((a.source_volume_id.clone().unwrap_or_default(), a.uri.rsplit_once("snapshot/")?.1.to_string(), a.size_bytes)))
        .collect();
    if sources.is_empty() {
        return Err(StepError::failed(Reason::NoSnapshotsToCopy, format!("{}: no snapshot is on record to copy", sc.subject())));
    }
    let forensic = sc.forensic_clients(&destination).await?;
    let ids: Vec<String> = sources.iter().map(|(_, id, _)| id.clone()).collect();
    let keys = sc.aws.ec2.describe(&ids).await.map_err(|e| StepError::aws(e, &format!("snapshots of {}", sc.subject()), OnError::only(Reason::SnapshotShareFailed)))?;
    let mut waiting = false;
    for (volume, snapshot_id, size_bytes) in &sources {
        let Some(source) = keys.iter().find(|k| &k.snapshot_id == snapshot_id) else {
            return Err(StepError::failed(Reason::SnapshotShareFailed, format!("snapshot {snapshot_id} of {} is on record but EC2 does not list it", sc.subject())));
        };
        if let HandOver::Waiting = hand_over(sc, &forensic.ec2, &destination, (volume, *size_bytes), source, status, writer).await? {
            waiting = true;
        }
    }
    if waiting {
        return Ok(Progress::Wait(COPY_POLL));
    }
    records::succeed(STEP, status);
    Ok(Progress::Continue)
}

/// Whether `source` must be re-encrypted before it can be shared: it is encrypted under a key other than the
/// share key (an unencrypted snapshot is shared as it is, and encrypted by the forensic account's copy).
fn needs_reencryption(source: &SnapshotKey, share_key: Option<&str>) -> bool {
    source.encrypted && source.kms_key_id.as_deref() != share_key
}

async fn hand_over(
    sc: &StepContext<'_>,
    forensic: &(impl SnapshotCopyApi + crate::aws::snapshot_lock::SnapshotLockApi),
    destination: &ForensicDestination,
    (volume, size_bytes): (&str, Option<i64>),
    source: &SnapshotKey,
    status: &mut ForensicCaptureStatus,
    writer: &mut Writer<'_>,
) -> Result<HandOver, StepError> {
    let forensic_name = format!("forensic-copy-{volume}");
    let recorded = status.artifacts.iter().find(|a| a.name == forensic_name).cloned();
    if recorded.as_ref().is_some_and(|a| a.state == "Available") {
        return Ok(HandOver::Done);
    }
    let account = destination.account_id.as_str();
    // A forensic "account" that is the instance's own copies what it already holds: no share is needed.
    let same_account = sc.target.account_id.as_deref() == Some(account);
    // 1. Something the forensic account may copy.
    let shared_id = if !same_account && needs_reencryption(source, destination.share_kms_key_id.as_deref()) {
        let Some(share_key) = destination.share_kms_key_id.as_deref() else {
            let key = source.kms_key_id.as_deref().unwrap_or("unknown");
            return Err(Stage::Share { account }.failed(
                sc,
                format!(
                    "snapshot {} is encrypted with KMS key {key}, which cannot be shared as it is (EC2 never shares the AWS managed key for EBS), and no share key is set: set spec.disk.forensicCopy.shareKmsKeyId or --forensic-share-kms-key-id, or give the forensic key as an ARN",
                    source.snapshot_id
                ),
            ));
        };
        let copy = CopyPlan {
            name: format!("shareable-copy-{volume}"),
            purpose: SHAREABLE,
            account_id: sc.target.account_id.clone(),
            region: sc.target.region.clone(),
            source_id: source.snapshot_id.clone(),
            copy_of: source.snapshot_id.clone(),
            key: share_key.to_string(),
            volume,
            size_bytes,
        };
        match ensure_copy(sc, &sc.aws.ec2, &copy, Stage::ReEncrypt { key: share_key }, status, writer).await? {
            Copied::Pending => return Ok(HandOver::Waiting),
            Copied::Completed(id) => id,
        }
    } else {
        source.snapshot_id.clone()
    };
    // 2. The share, on record before it is made; repeated after a restart (adding a permission twice is fine).
    let plan = CopyPlan {
        name: forensic_name,
        purpose: FORENSIC,
        account_id: Some(account.to_string()),
        region: destination.region.clone(),
        source_id: shared_id.clone(),
        copy_of: source.snapshot_id.clone(),
        key: destination.kms_key_id.clone(),
        volume,
        size_bytes,
    };
    if !same_account && recorded.as_ref().is_none_or(|a| a.state == SHARED) {
        upsert_artifact(status, plan.artifact(SHARED, None, None));
        writer.save(status).await?;
        sc.aws.ec2.share(&shared_id, account).await.map_err(|e| Stage::Share { account }.error(sc, &shared_id, e))?;
    }
    // 3. The forensic account's copy.
    let stage = Stage::Copy { account, region: &destination.region, key: &destination.kms_key_id };
    let copy_id = match ensure_copy(sc, forensic, &plan, stage, status, writer).await? {
        Copied::Pending => return Ok(HandOver::Waiting),
        Copied::Completed(id) => id,
    };
    // 4. Complete: unshare, lock, record.
    let mut artifact = status.artifacts.iter().find(|a| a.name == plan.name).cloned().expect("ensure_copy records the copy");
    if !same_account {
        sc.aws.ec2.unshare(&shared_id, account).await.map_err(|e| Stage::Unshare { account }.error(sc, &shared_id, e))?;
        if let Some(copy) = artifact.copy.as_mut() {
            copy.share_removed_at = Some(now());
        }
    }
    upsert_artifact(status, artifact.clone());
    let what = format!("forensic copy {copy_id} (account {account}) of snapshot {} of {}", source.snapshot_id, sc.subject());
    artifact.lock = protect::snapshot_with(sc, forensic, &copy_id, &what).await?;
    upsert_artifact(status, artifact);
    Ok(HandOver::Done)
}

/// One copy to make: where, of what, under which key.
struct CopyPlan<'a> {
    name: String,
    purpose: &'static str,
    /// The account the copy is made in (None: the controller's own).
    account_id: Option<String>,
    region: String,
    /// The snapshot CopySnapshot is given (the evidence snapshot, or its Shareable copy).
    source_id: String,
    /// The evidence snapshot it holds.
    copy_of: String,
    key: String,
    volume: &'a str,
    size_bytes: Option<i64>,
}

impl CopyPlan<'_> {
    fn artifact(&self, state: &str, copy: Option<&SnapshotKey>, previous: Option<&Artifact>) -> Artifact {
        Artifact {
            name: self.name.clone(),
            kind: ArtifactType::EbsSnapshotCopy,
            uri: copy.map(|c| format!("arn:aws:ec2:{}::snapshot/{}", self.region, c.snapshot_id)).unwrap_or_default(),
            sha256: None,
            size_bytes: previous.and_then(|p| p.size_bytes).or(self.size_bytes),
            started_at: previous.and_then(|p| p.started_at.clone()).or_else(|| (state == REQUESTED).then(now)),
            created_at: (state == "Available").then(now),
            state: state.to_string(),
            source_volume_id: Some(self.volume.to_string()),
            lock: None,
            key_id: None,
            image: None,
            copy: Some(SnapshotCopy {
                purpose: self.purpose.to_string(),
                source_snapshot_id: self.copy_of.clone(),
                copied_from_snapshot_id: (self.source_id != self.copy_of).then(|| self.source_id.clone()),
                account_id: self.account_id.clone(),
                region: self.region.clone(),
                kms_key_id: copy.and_then(|c| c.kms_key_id.clone()).or_else(|| Some(self.key.clone())),
                share_removed_at: None,
            }),
            container: None,
        }
    }

    fn request(&self, sc: &StepContext<'_>) -> CopyRequest {
        let mut tags = sc.tags();
        tags.push((tags::COPY_OF.into(), self.copy_of.clone()));
        tags.push((tags::COPY_PURPOSE.into(), self.purpose.into()));
        CopyRequest {
            source_region: sc.target.region.clone(),
            source_snapshot_id: self.source_id.clone(),
            kms_key_id: self.key.clone(),
            description: format!(
                "forensic-capture case {} instance {} capture {}: {} copy of {}",
                sc.capture.spec.case_id,
                sc.instance_id(),
                sc.uid,
                self.purpose,
                self.copy_of
            ),
            tags,
        }
    }
}

/// The snapshot with `id`, if `api`'s account can see it.
async fn describe_one(api: &impl SnapshotCopyApi, id: &str) -> Result<Option<SnapshotKey>, AwsError> {
    match api.describe(&[id.to_string()]).await {
        Ok(found) => Ok(found.into_iter().next()),
        Err(e) if e.class() == ErrorClass::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Finds `plan`'s copy (by its recorded ID, else by its tags) or requests it, and records where it stands.
async fn ensure_copy(
    sc: &StepContext<'_>,
    api: &impl SnapshotCopyApi,
    plan: &CopyPlan<'_>,
    stage: Stage<'_>,
    status: &mut ForensicCaptureStatus,
    writer: &mut Writer<'_>,
) -> Result<Copied, StepError> {
    let recorded = status.artifacts.iter().find(|a| a.name == plan.name).cloned();
    let recorded_id = recorded.as_ref().and_then(|a| a.uri.rsplit_once("snapshot/")).map(|(_, id)| id.to_string());
    let error = |e| stage.error(sc, &plan.source_id, e);
    let found = match &recorded_id {
        Some(id) => describe_one(api, id).await.map_err(error)?,
        None => api.copies(&sc.uid, plan.purpose).await.map_err(error)?.into_iter().find(|c| c.copy_of.as_deref() == Some(plan.copy_of.as_str())),
    };
    let requested_recently = recorded.as_ref().and_then(|a| a.started_at.as_ref()).is_some_and(|at| {
        let window = sc.ctx.config.create_lookup_window();
        Timestamp::now().duration_since(at.0) < k8s_openapi::jiff::SignedDuration::try_from(window).unwrap_or_default()
    });
    if let Some(copy) = found {
        return record_found(sc, plan, &copy, recorded.as_ref(), &stage, status);
    }
    if let Some(id) = recorded_id {
        if requested_recently {
            return Ok(Copied::Pending);
        }
        return Err(stage.failed(sc, format!("copy {id} of snapshot {} was recorded but EC2 no longer lists it", plan.copy_of)));
    }
    if recorded.as_ref().is_some_and(|a| a.state == REQUESTED) && requested_recently {
        // Asked for, but the tag lookup may lag: look again rather than make a second copy.
        return Ok(Copied::Pending);
    }
    upsert_artifact(status, Artifact { started_at: Some(Time(Timestamp::now())), ..plan.artifact(REQUESTED, None, None) });
    writer.save(status).await?;
    match api.copy(&plan.request(sc)).await {
        Ok(id) => {
            // Its state, right away: a copy can complete at once (small or incremental).
            let copy = describe_one(api, &id).await.ok().flatten().unwrap_or(SnapshotKey {
                snapshot_id: id,
                state: "pending".into(),
                encrypted: true,
                kms_key_id: None,
                copy_of: Some(plan.copy_of.clone()),
            });
            let recorded = status.artifacts.iter().find(|a| a.name == plan.name).cloned();
            record_found(sc, plan, &copy, recorded.as_ref(), &stage, status)
        }
        Err(e) => {
            if e.refused_before_acting() {
                // No copy exists: the next attempt need not wait out the lookup window.
                let state = if plan.purpose == FORENSIC { SHARED } else { NOT_REQUESTED };
                upsert_artifact(status, plan.artifact(state, None, None));
            }
            Err(error(e))
        }
    }
}

fn record_found(
    sc: &StepContext<'_>,
    plan: &CopyPlan<'_>,
    copy: &SnapshotKey,
    recorded: Option<&Artifact>,
    stage: &Stage<'_>,
    status: &mut ForensicCaptureStatus,
) -> Result<Copied, StepError> {
    let state = match copy.state.as_str() {
        "completed" => "Available",
        other => other,
    };
    upsert_artifact(status, plan.artifact(state, Some(copy), recorded));
    match copy.state.as_str() {
        "completed" => Ok(Copied::Completed(copy.snapshot_id.clone())),
        "error" => Err(stage.failed(sc, format!("copy {} of snapshot {} is in state error", copy.snapshot_id, plan.copy_of))),
        _ => Ok(Copied::Pending),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(encrypted: bool, key: Option<&str>) -> SnapshotKey {
        SnapshotKey { snapshot_id: "snap-1".into(), state: "completed".into(), encrypted, kms_key_id: key.map(str::to_string), copy_of: None }
    }

    #[test]
    fn only_snapshots_under_another_key_than_the_share_key_are_re_encrypted() {
        let share = "arn:aws:kms:eu-west-1:666677778888:key/share";
        assert!(!needs_reencryption(&key(false, None), Some(share)), "unencrypted: shared as it is");
        assert!(needs_reencryption(&key(true, Some("arn:aws:kms:eu-west-1:333344445555:key/aws-ebs")), Some(share)));
        assert!(!needs_reencryption(&key(true, Some(share)), Some(share)), "already under the share key");
        assert!(needs_reencryption(&key(true, Some(share)), None), "no share key: it cannot be shared as it is");
    }
}
