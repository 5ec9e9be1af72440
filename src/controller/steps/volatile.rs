//! Volatile data and kernel symbol material, through one SSM command; both archives are PUT to presigned
//! URLs and then re-hashed by the controller.

use super::{POLL, Progress};
use crate::{
    acquisition,
    api::{Artifact, ArtifactType, ForensicCaptureStatus, Reason, Step},
    aws::s3::{EvidenceStore, Presign},
    controller::{
        failure::StepError,
        protect,
        records::{self, upsert_artifact},
        ssm_command::{self, Command},
        status::Writer,
        step_context::StepContext,
        symbols,
    },
};

const STEP: Step = Step::Volatile;

pub async fn run(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'_>) -> Result<Progress, StepError> {
    let (bucket, prefix) = sc.evidence()?;
    let volatile_key = sc.key(&prefix, "volatile.tar.gz");
    let symbols_key = sc.key(&prefix, "symbols.tar.gz");
    let instance_id = sc.instance_id().to_string();

    let prepare = || async {
        sc.check_bucket(&bucket).await?;
        let urls = sc
            .aws
            .store
            .presign(
                &[
                    Presign::Put { bucket: bucket.clone(), key: volatile_key.clone() },
                    Presign::Put { bucket: bucket.clone(), key: symbols_key.clone() },
                ],
                sc.ctx.config.url_ttl(),
                &format!("fc-{}-volatile", &sc.uid[..8.min(sc.uid.len())]),
            )
            .await
            .map_err(|e| StepError::on_instance(e, &instance_id, Reason::PresignFailed))?;
        acquisition::command_lines(acquisition::VOLATILE_SCRIPT, &[("FC_VOLATILE_URL", &urls[0]), ("FC_SYMBOLS_URL", &urls[1])])
            .map_err(|e| StepError::failed(Reason::InvalidCommand, e.to_string()))
    };
    let command_id = match ssm_command::ensure(sc, STEP, status, writer, sc.ctx.config.volatile_timeout_seconds, prepare).await? {
        Command::Known(id) | Command::SentNow(id) => id,
        Command::Unconfirmed => return Ok(Progress::Wait(POLL)),
    };
    let Some(stdout) = ssm_command::output(sc, STEP, &command_id).await? else {
        return Ok(Progress::Wait(POLL));
    };
    for (name, key, kind) in [("volatile", &volatile_key, ArtifactType::VolatileData), ("symbols", &symbols_key, ArtifactType::KernelSymbols)] {
        let mut artifact = verified_artifact(sc, &stdout, name, &bucket, key, kind).await?;
        artifact.started_at = records::record(STEP, status).started_at.clone();
        upsert_artifact(status, artifact.clone());
        artifact.lock = protect::object(sc, &bucket, key).await?;
        upsert_artifact(status, artifact);
    }
    symbols::build(sc, status, &bucket, &prefix, &symbols_key).await?;
    records::succeed(STEP, status);
    Ok(Progress::Continue)
}

/// Checks an uploaded archive against what the instance reported, by downloading and hashing it.
async fn verified_artifact(
    sc: &StepContext<'_>,
    stdout: &str,
    name: &str,
    bucket: &str,
    key: &str,
    kind: ArtifactType,
) -> Result<Artifact, StepError> {
    let instance_id = sc.instance_id();
    let reported = acquisition::result(stdout, name).ok_or_else(|| {
        StepError::failed(Reason::MissingResult, format!("instance {instance_id}: the volatile command reported no {name} result"))
    })?;
    let expected = reported.get("sha256").cloned().unwrap_or_default();
    let (actual, size) = sc.aws.store.object_sha256(bucket, key, |_| {}).await.map_err(|e| StepError::on_instance(e, instance_id, Reason::ArtifactMissing))?;
    if actual != expected || reported.get("bytes").map(String::as_str) != Some(size.to_string().as_str()) {
        return Err(StepError::failed(
            Reason::ArtifactChecksumMismatch,
            format!("s3://{bucket}/{key} from instance {instance_id}: instance reported sha256 {expected}, S3 holds {actual} ({size} bytes)"),
        ));
    }
    Ok(Artifact::s3_object(name, kind, format!("s3://{bucket}/{key}"), actual, size))
}
