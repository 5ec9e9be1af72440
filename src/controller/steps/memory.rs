//! Memory image: AVML on the instance streams through SHA-256 into an S3 multipart upload whose presigned part
//! URLs come from small upload-plan objects (renewed while the upload runs, so it may outlast one set of URLs);
//! the controller then checks the parts, completes the upload and re-hashes the image.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::{POLL, Progress};
use crate::{
    acquisition::{self, plan_parts},
    api::{Artifact, ArtifactType, ForensicCaptureStatus, Reason, Step},
    aws::s3::{EvidenceStore, Presign},
    controller::{
        config::parse_s3_uri,
        failure::StepError,
        protect,
        records::{self, upsert_artifact},
        ssm_command::{self, Command},
        status::Writer,
        step_context::StepContext,
    },
    lime,
};

const STEP: Step = Step::Memory;
const MIB: u64 = 1024 * 1024;
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
    let instance_id = sc.instance_id().to_string();
    let architecture = sc.target.architecture.clone().unwrap_or_default();
    let avml = sc.ctx.config.avml_for(&architecture);
    if let Some((reason, message)) = crate::planner::memory_blocker(&sc.target, avml.is_some()) {
        return Err(StepError::failed(reason, message));
    }
    let (Some((avml_uri, avml_sha256)), Some(memory_mib)) = (avml, sc.target.memory_mib) else {
        unreachable!("memory_blocker checked the AVML and the memory size");
    };
    let memory_mib = memory_mib as u64;
    let (avml_bucket, avml_key) = parse_s3_uri(&avml_uri)
        .ok_or_else(|| StepError::failed(Reason::AvmlNotConfigured, format!("AVML location {avml_uri:?} is not s3://bucket/key")))?;
    let parts = plan_parts(memory_mib);
    let (bucket, prefix) = sc.evidence()?;
    let key = sc.key(&prefix, "memory.lime");
    let parts_key = sc.key(&prefix, "memory.parts");

    let upload_id = match records::record(STEP, status).upload_id.clone() {
        Some(id) => id,
        None => {
            // An artifact this capture stored there already says the bucket is reachable.
            let stored = format!("s3://{bucket}/");
            if !status.artifacts.iter().any(|a| a.uri.starts_with(&stored)) {
                sc.check_bucket(&bucket).await?;
            }
            let store = &sc.aws.store;
            let existing = store.find_multipart_upload(&bucket, &key).await.map_err(|e| StepError::on_instance(e, &instance_id, Reason::UploadFailed))?;
            let id = match existing {
                Some(id) => id,
                None => store.create_multipart_upload(&bucket, &key).await.map_err(|e| StepError::on_instance(e, &instance_id, Reason::UploadFailed))?,
            };
            let record = records::record(STEP, status);
            record.upload_id = Some(id.clone());
            record.part_size_bytes = Some(parts.part_size as i64);
            writer.save(status).await?;
            id
        }
    };

    let upload = Upload {
        bucket: &bucket,
        key: &key,
        parts_key: &parts_key,
        prefix: &prefix,
        upload_id: &upload_id,
        parts,
        ttl: sc.ctx.config.memory_url_ttl_seconds.map(Duration::from_secs).unwrap_or_else(|| url_ttl(memory_mib)),
    };
    // The first plan's renewal time is taken before it is signed, so it is never later than the real one.
    let first_renewal = acquisition::plan_timing(unix_now(), upload.ttl.as_secs()).renew_at;
    let prepare = || prepare_command(sc, &upload, &architecture, (&avml_bucket, &avml_key, &avml_sha256));
    let (command_id, sent_now) = match ssm_command::ensure(sc, STEP, status, writer, execution_timeout(memory_mib), prepare).await? {
        Command::SentNow(id) => (id, true),
        Command::Known(id) => (id, false),
        Command::Unconfirmed => return Ok(Progress::Wait(POLL)),
    };
    let record = records::record(STEP, status);
    if record.plan_generation.is_none() {
        // A command found in SSM's history after a restart has a plan of unknown age: renew it at once.
        record.plan_generation = Some(1);
        // Saved with the command's ID, by the wait that follows: a restart before then finds the command in
        // SSM's history, and renews its plan at once.
        record.plan_renew_at = Some(unix_time(if sent_now { first_renewal } else { unix_now() }));
    }
    let Some(stdout) = ssm_command::output(sc, STEP, &command_id).await? else {
        renew_plan_if_due(sc, &upload, status, writer).await?;
        return Ok(Progress::Wait(POLL));
    };
    let reported = acquisition::result(&stdout, "memory").ok_or_else(|| {
        StepError::failed(Reason::MissingResult, format!("instance {instance_id}: memory command {command_id} reported no result"))
    })?;
    let sha256 = reported.get("sha256").cloned().unwrap_or_default();
    let bytes: i64 = reported.get("bytes").and_then(|b| b.parse().ok()).unwrap_or(-1);
    let part_count: i32 = reported.get("parts").and_then(|p| p.parse().ok()).unwrap_or(-1);
    complete_upload(sc, &bucket, &key, &parts_key, &upload_id, bytes, part_count).await?;
    let parsed = check_image(sc, &bucket, &key, &sha256).await?;
    let (quality, refusal) = match &parsed {
        Ok(layout) => {
            let (quality, refusal) =
                lime::assess(layout, Some(memory_mib * MIB), sc.ctx.config.memory_min_coverage_percent, sc.target.kernel_banner.as_deref());
            (Some(quality), refusal)
        }
        Err(defect) => (None, Some(lime::Refusal { reason: defect.reason(), message: defect.to_string() })),
    };
    // The image is evidence whatever the gate says: it is recorded (and locked) before a refusal fails the step.
    let mut artifact = Artifact {
        started_at: records::record(STEP, status).started_at.clone(),
        image: quality,
        ..Artifact::s3_object("memory", ArtifactType::MemoryImage, format!("s3://{bucket}/{key}"), sha256, bytes)
    };
    upsert_artifact(status, artifact.clone());
    artifact.lock = protect::object(sc, &bucket, &key).await?;
    upsert_artifact(status, artifact);
    if let Some(refusal) = refusal {
        return Err(StepError::failed(refusal.reason, format!("s3://{bucket}/{key} from instance {instance_id} failed the image quality gate: {}", refusal.message)));
    }
    records::succeed(STEP, status);
    Ok(Progress::Continue)
}

/// The multipart upload a memory command streams into, and how long the URLs handed to it live.
struct Upload<'a> {
    bucket: &'a str,
    key: &'a str,
    parts_key: &'a str,
    prefix: &'a str,
    upload_id: &'a str,
    parts: acquisition::PartPlan,
    ttl: Duration,
}

fn unix_now() -> u64 {
    Timestamp::now().as_second().max(0) as u64
}

fn unix_time(seconds: u64) -> Time {
    Time(Timestamp::from_second(seconds as i64).unwrap_or_else(|_| Timestamp::now()))
}

/// Upload plans are numbered: the instance reads plan 1 first, and each plan names the next one.
fn plan_key(sc: &StepContext<'_>, prefix: &str, generation: i32) -> String {
    sc.key(prefix, &format!("memory.upload-plan.{generation}"))
}

/// Presigns `leading` and everything plan `generation` holds (the parts list, every part, the next plan), in one
/// scoped session; writes the plan; returns the URLs of `leading` and when they were signed (Unix time).
async fn write_plan(sc: &StepContext<'_>, upload: &Upload<'_>, generation: i32, mut requests: Vec<Presign>) -> Result<(Vec<String>, u64), StepError> {
    let instance_id = sc.instance_id();
    let bucket = upload.bucket.to_string();
    let leading = requests.len();
    requests.push(Presign::Put { bucket: bucket.clone(), key: upload.parts_key.into() });
    requests.push(Presign::Get { bucket: bucket.clone(), key: plan_key(sc, upload.prefix, generation + 1) });
    requests.extend((1..=upload.parts.part_count as i32).map(|n| Presign::UploadPart {
        bucket: bucket.clone(),
        key: upload.key.into(),
        upload_id: upload.upload_id.into(),
        part_number: n,
    }));
    let signed_at = unix_now();
    let urls = sc
        .aws
        .store
        .presign(&requests, upload.ttl, &format!("fc-{}-memory", &sc.uid[..8.min(sc.uid.len())]))
        .await
        .map_err(|e| StepError::on_instance(e, instance_id, Reason::PresignFailed))?;
    let timing = acquisition::plan_timing(signed_at, upload.ttl.as_secs());
    let renewal = acquisition::PlanRenewal { refresh_at: timing.refresh_at, expires_at: timing.expires_at, next_plan_url: urls[leading + 1].clone() };
    let plan = acquisition::upload_plan(upload.parts.part_size, &urls[leading], &urls[leading + 2..], Some(&renewal));
    sc.aws
        .store
        .put_object(upload.bucket, &plan_key(sc, upload.prefix, generation), plan.into_bytes(), "text/plain")
        .await
        .map_err(|e| StepError::on_instance(e, instance_id, Reason::UploadFailed))?;
    Ok((urls[..leading].to_vec(), signed_at))
}

/// Writes plan 1 (with the AVML download and its own URL presigned alongside); returns the command lines.
async fn prepare_command(
    sc: &StepContext<'_>,
    upload: &Upload<'_>,
    architecture: &str,
    (avml_bucket, avml_key, avml_sha256): (&str, &str, &str),
) -> Result<Vec<String>, StepError> {
    let leading = vec![
        Presign::Get { bucket: avml_bucket.into(), key: avml_key.into() },
        Presign::Get { bucket: upload.bucket.into(), key: plan_key(sc, upload.prefix, 1) },
    ];
    let (urls, _) = write_plan(sc, upload, 1, leading).await?;
    acquisition::command_lines(
        acquisition::MEMORY_SCRIPT,
        &[
            ("FC_AVML_URL", &urls[0]),
            ("FC_AVML_SHA256", avml_sha256),
            ("FC_ARCH", architecture),
            ("FC_AVML_SOURCE", sc.ctx.config.avml_source.as_deref().unwrap_or_default()),
            ("FC_PLAN_URL", &urls[1]),
            ("FC_UPLOAD_CONCURRENCY", &sc.ctx.config.memory_upload_concurrency.to_string()),
        ],
    )
    .map_err(|e| StepError::failed(Reason::InvalidCommand, e.to_string()))
}

/// While the command runs, writes the next plan once the current one is half-way through its life, so an upload
/// that outlasts one set of presigned URLs moves on to fresh ones. A restart between writing and recording just
/// writes that plan again with fresh URLs.
async fn renew_plan_if_due(sc: &StepContext<'_>, upload: &Upload<'_>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'_>) -> Result<(), StepError> {
    let record = records::record(STEP, status);
    let (Some(generation), Some(due)) = (record.plan_generation, record.plan_renew_at.clone()) else {
        return Ok(());
    };
    if Timestamp::now() < due.0 {
        return Ok(());
    }
    let (_, signed_at) = write_plan(sc, upload, generation + 1, Vec::new()).await?;
    let record = records::record(STEP, status);
    record.plan_generation = Some(generation + 1);
    record.plan_renew_at = Some(unix_time(acquisition::plan_timing(signed_at, upload.ttl.as_secs()).renew_at));
    tracing::debug!(instance = %sc.instance_id(), generation = generation + 1, "memory upload plan renewed");
    writer.save(status).await
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
    let list = store.get_object(bucket, parts_key).await.map_err(|e| StepError::on_instance(e, instance_id, Reason::UploadIncomplete))?;
    let mut parts = acquisition::parse_parts_list(&String::from_utf8_lossy(&list))
        .ok_or_else(|| StepError::failed(Reason::UploadIncomplete, format!("{uri} from instance {instance_id}: the parts list is malformed")))?;
    parts.sort_by_key(|p| p.number);
    let numbers: Vec<i32> = parts.iter().map(|p| p.number).collect();
    let total: i64 = parts.iter().map(|p| p.size).sum();
    if !numbers.iter().copied().eq(1..=part_count) || total != bytes {
        return Err(StepError::failed(Reason::UploadIncomplete,
            format!("{uri} from instance {instance_id}: the command reported {part_count} parts / {bytes} bytes, the parts list has {} parts / {total} bytes", numbers.len()),
        ));
    }
    if let Err(e) = store.complete_multipart_upload(bucket, key, upload_id, &parts).await {
        // NoSuchUpload: completed before a restart; the size check below decides.
        if e.code != "NoSuchUpload" {
            return Err(StepError::on_instance(e, instance_id, Reason::UploadIncomplete));
        }
    }
    let size = store.object_size(bucket, key).await.map_err(|e| StepError::on_instance(e, instance_id, Reason::UploadIncomplete))?;
    if size != Some(bytes) {
        return Err(StepError::failed(Reason::UploadIncomplete, format!("{uri} from instance {instance_id}: expected {bytes} bytes, S3 holds {size:?}")));
    }
    Ok(())
}

/// The controller's own end-to-end check: the completed object is streamed back and hashed, and must equal the
/// SHA-256 the instance computed over the stream AVML produced. (Per part, S3 has already checked each part's
/// Content-MD5 and ETag; this covers the whole image, including part order.) The same pass parses the LiME
/// records for the quality gate.
async fn check_image(sc: &StepContext<'_>, bucket: &str, key: &str, reported_sha256: &str) -> Result<Result<lime::ImageLayout, lime::ImageDefect>, StepError> {
    let instance_id = sc.instance_id();
    let mut inspector = lime::Inspector::new();
    let (actual, size) =
        sc.aws.store.object_sha256(bucket, key, |chunk| inspector.feed(chunk)).await.map_err(|e| StepError::on_instance(e, instance_id, Reason::UploadIncomplete))?;
    if actual != reported_sha256 {
        return Err(StepError::failed(Reason::ArtifactChecksumMismatch,
            format!("s3://{bucket}/{key} from instance {instance_id}: the instance streamed sha256 {reported_sha256}, S3 holds sha256 {actual} ({size} bytes)"),
        ));
    }
    Ok(inspector.finish())
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
