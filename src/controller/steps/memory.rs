//! Memory image: AVML on the instance streams through SHA-256 into an S3 multipart upload whose presigned part
//! URLs come from one small upload-plan object; the controller then checks the parts and completes the upload.

use std::time::Duration;

use super::{POLL, Progress, StepContext, StepError, Writer, command, upsert_artifact};
use crate::{
    acquisition::{self, plan_parts},
    api::{Artifact, ArtifactType, ForensicCaptureStatus, StepState},
    aws::s3::{EvidenceStore, Presign},
    controller::config::parse_s3_uri,
    planner::Step,
};

const STEP: Step = Step::Memory;
/// Presigned URLs live at most this long: the assumed signing session cannot outlive one hour when chained
/// from IRSA or Pod Identity credentials.
const MAX_URL_TTL: Duration = Duration::from_secs(3600);

/// URL lifetime for an image of this size: 15 minutes plus a minute per GiB, at most an hour.
fn url_ttl(memory_mib: u64) -> Duration {
    (Duration::from_secs(900) + Duration::from_secs(60 * memory_mib.div_ceil(1024))).min(MAX_URL_TTL)
}

/// Execution timeout: 10 minutes plus 2 minutes per GiB, within SSM's 48-hour limit.
fn execution_timeout(memory_mib: u64) -> u64 {
    (600 + 120 * memory_mib.div_ceil(1024)).min(172_800)
}

pub async fn run(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'_>) -> Result<Progress, StepError> {
    if super::start(STEP, status) {
        writer.save(status).await?;
    }
    let instance_id = sc.instance_id().to_string();
    let architecture = sc.target.architecture.clone().unwrap_or_default();
    let (avml_uri, avml_sha256) = sc.ctx.config.avml_for(&architecture).ok_or_else(|| {
        StepError::failed(
            "AvmlNotConfigured",
            format!("instance {instance_id} is {architecture}: no AVML location and SHA-256 configured for that architecture"),
        )
    })?;
    let (avml_bucket, avml_key) = parse_s3_uri(&avml_uri)
        .ok_or_else(|| StepError::failed("AvmlNotConfigured", format!("AVML location {avml_uri:?} is not s3://bucket/key")))?;
    let memory_mib = sc.target.memory_mib.filter(|m| *m > 0).ok_or_else(|| {
        StepError::failed("MemorySizeUnknown", format!("instance {instance_id}: the instance type's memory size is unknown"))
    })? as u64;
    let parts = plan_parts(memory_mib);
    let (bucket, prefix) = sc.evidence()?;
    let key = sc.key(&prefix, "memory.lime");
    let plan_key = sc.key(&prefix, "memory.upload-plan");
    let parts_key = sc.key(&prefix, "memory.parts");

    let upload_id = match super::record(STEP, status).upload_id.clone() {
        Some(id) => id,
        None => {
            sc.check_bucket(&bucket).await?;
            let store = &sc.aws.store;
            let existing = store.find_multipart_upload(&bucket, &key).await.map_err(|e| StepError::aws(e, &instance_id, "UploadFailed"))?;
            let id = match existing {
                Some(id) => id,
                None => store.create_multipart_upload(&bucket, &key).await.map_err(|e| StepError::aws(e, &instance_id, "UploadFailed"))?,
            };
            let record = super::record(STEP, status);
            record.upload_id = Some(id.clone());
            record.part_size_bytes = Some(parts.part_size as i64);
            writer.save(status).await?;
            id
        }
    };

    let prepare = || {
        prepare_command(sc, &bucket, [&key, &plan_key, &parts_key], &upload_id, parts, memory_mib, (&avml_bucket, &avml_key, &avml_sha256))
    };
    let command_id = command::ensure(sc, STEP, status, writer, execution_timeout(memory_mib), prepare).await?;
    let Some(stdout) = command::output(sc, STEP, &command_id).await? else {
        return Ok(Progress::Wait(POLL));
    };
    let reported = acquisition::result(&stdout, "memory").ok_or_else(|| {
        StepError::failed("MissingResult", format!("instance {instance_id}: memory command {command_id} reported no result"))
    })?;
    let sha256 = reported.get("sha256").cloned().unwrap_or_default();
    let bytes: i64 = reported.get("bytes").and_then(|b| b.parse().ok()).unwrap_or(-1);
    let part_count: i32 = reported.get("parts").and_then(|p| p.parse().ok()).unwrap_or(-1);
    complete_upload(sc, &bucket, &key, &parts_key, &upload_id, bytes, part_count).await?;
    check_image_hash(sc, &bucket, &key, &sha256).await?;
    let mut artifact = Artifact {
        started_at: super::record(STEP, status).started_at.clone(),
        ..Artifact::s3_object("memory", ArtifactType::MemoryImage, format!("s3://{bucket}/{key}"), sha256, bytes)
    };
    upsert_artifact(status, artifact.clone());
    artifact.lock = super::protect::object(sc, &bucket, &key).await?;
    upsert_artifact(status, artifact);
    super::end(STEP, status, StepState::Succeeded, None, None);
    Ok(Progress::Continue)
}

/// Presigns the AVML download, every part and the plan; writes the plan; returns the command lines.
#[allow(clippy::too_many_arguments)]
async fn prepare_command(
    sc: &StepContext<'_>,
    bucket: &str,
    [key, plan_key, parts_key]: [&str; 3],
    upload_id: &str,
    parts: acquisition::PartPlan,
    memory_mib: u64,
    (avml_bucket, avml_key, avml_sha256): (&str, &str, &str),
) -> Result<Vec<String>, StepError> {
    let instance_id = sc.instance_id();
    let mut requests = vec![
        Presign::Get { bucket: avml_bucket.into(), key: avml_key.into() },
        Presign::Get { bucket: bucket.into(), key: plan_key.into() },
        Presign::Put { bucket: bucket.into(), key: parts_key.into() },
    ];
    requests.extend((1..=parts.part_count as i32).map(|n| Presign::UploadPart {
        bucket: bucket.into(),
        key: key.into(),
        upload_id: upload_id.into(),
        part_number: n,
    }));
    let urls = sc
        .aws
        .store
        .presign(&requests, url_ttl(memory_mib), &format!("fc-{}-memory", &sc.uid[..8.min(sc.uid.len())]))
        .await
        .map_err(|e| StepError::aws(e, instance_id, "PresignFailed"))?;
    let plan = acquisition::upload_plan(parts.part_size, &urls[2], &urls[3..]);
    sc.aws
        .store
        .put_object(bucket, plan_key, plan.into_bytes(), "text/plain")
        .await
        .map_err(|e| StepError::aws(e, instance_id, "UploadFailed"))?;
    acquisition::command_lines(
        acquisition::MEMORY_SCRIPT,
        &[
            ("FC_AVML_URL", &urls[0]),
            ("FC_AVML_SHA256", avml_sha256),
            ("FC_AVML_ARGS", &sc.ctx.config.avml_args),
            ("FC_PLAN_URL", &urls[1]),
        ],
    )
    .map_err(|e| StepError::failed("InvalidCommand", e.to_string()))
}

/// Completes the upload from the parts list the instance wrote, after checking it against the totals the
/// command reported; S3 itself checks each part's ETag. After a restart the upload may already be complete:
/// either way the object's size must equal what the instance streamed.
async fn complete_upload(
    sc: &StepContext<'_>,
    bucket: &str,
    key: &str,
    parts_key: &str,
    upload_id: &str,
    bytes: i64,
    part_count: i32,
) -> Result<(), StepError> {
    let instance_id = sc.instance_id();
    let store = &sc.aws.store;
    let uri = format!("s3://{bucket}/{key}");
    let list = store.get_object(bucket, parts_key).await.map_err(|e| StepError::aws(e, instance_id, "UploadIncomplete"))?;
    let mut parts = acquisition::parse_parts_list(&String::from_utf8_lossy(&list))
        .ok_or_else(|| StepError::failed("UploadIncomplete", format!("{uri} from instance {instance_id}: the parts list is malformed")))?;
    parts.sort_by_key(|p| p.number);
    let numbers: Vec<i32> = parts.iter().map(|p| p.number).collect();
    let total: i64 = parts.iter().map(|p| p.size).sum();
    if !numbers.iter().copied().eq(1..=part_count) || total != bytes {
        return Err(StepError::failed(
            "UploadIncomplete",
            format!("{uri} from instance {instance_id}: the command reported {part_count} parts / {bytes} bytes, the parts list has {} parts / {total} bytes", numbers.len()),
        ));
    }
    if let Err(e) = store.complete_multipart_upload(bucket, key, upload_id, &parts).await {
        // NoSuchUpload: completed before a restart; the size check below decides.
        if e.code != "NoSuchUpload" {
            return Err(StepError::aws(e, instance_id, "UploadIncomplete"));
        }
    }
    let size = store.object_size(bucket, key).await.map_err(|e| StepError::aws(e, instance_id, "UploadIncomplete"))?;
    if size != Some(bytes) {
        return Err(StepError::failed("UploadIncomplete", format!("{uri} from instance {instance_id}: expected {bytes} bytes, S3 holds {size:?}")));
    }
    Ok(())
}

/// The controller's own end-to-end check: the completed object is streamed back and hashed, and must equal the
/// SHA-256 the instance computed over the stream AVML produced. (Per part, S3 has already checked each part's
/// Content-MD5 and ETag; this covers the whole image, including part order.)
async fn check_image_hash(sc: &StepContext<'_>, bucket: &str, key: &str, reported_sha256: &str) -> Result<(), StepError> {
    let instance_id = sc.instance_id();
    let (actual, size) = sc.aws.store.object_sha256(bucket, key).await.map_err(|e| StepError::aws(e, instance_id, "UploadIncomplete"))?;
    if actual != reported_sha256 {
        return Err(StepError::failed(
            "ArtifactChecksumMismatch",
            format!("s3://{bucket}/{key} from instance {instance_id}: the instance streamed sha256 {reported_sha256}, S3 holds sha256 {actual} ({size} bytes)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_lifetime_grows_with_memory_but_stays_within_an_hour() {
        assert_eq!(url_ttl(512), Duration::from_secs(960));
        assert_eq!(url_ttl(1024 * 1024), MAX_URL_TTL);
    }

    #[test]
    fn execution_timeout_stays_within_ssm_limits() {
        assert_eq!(execution_timeout(1024), 720);
        assert_eq!(execution_timeout(24 * 1024 * 1024), 172_800);
    }
}
