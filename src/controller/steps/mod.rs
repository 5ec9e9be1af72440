//! The step executors: the side-effecting half of `Action::Run(step)`. Every step looks up what it may already
//! have done (by tag, by command comment, by upload key) before doing it, and saves intent to the status before
//! a side effect whose result could not be found again, so a controller killed at any instant resumes cleanly.

mod checkpoint;
mod checkpoint_removal;
mod disk;
mod forensic_copy;
mod isolation;
mod memory;
mod volatile;

use std::time::Duration;

use super::{failure::StepError, status::Writer, step_context::StepContext};
use crate::{
    acquisition,
    api::{Artifact, ArtifactType, ForensicCaptureStatus, Reason, Step},
    aws::s3::EvidenceStore,
};

/// What a step asks of the reconcile loop.
#[derive(Debug)]
pub enum Progress {
    /// Something changed: plan again now.
    Continue,
    /// Waiting on AWS or the instance: look again after this long.
    Wait(Duration),
}

/// How often a running command or snapshot is looked at again.
pub const POLL: Duration = Duration::from_secs(2);

/// Runs (or continues) `step`. The one place a step's executor is named.
pub async fn run<'a>(step: Step, sc: &StepContext<'a>, status: &mut ForensicCaptureStatus, writer: &mut Writer<'a>) -> Result<Progress, StepError> {
    // The start is saved with the step's first record: every step saves its intent before its first side
    // effect that a lookup could not find again (an SSM command, a snapshot set, a containment change).
    super::records::start(step, status);
    match step {
        Step::Volatile => volatile::run(sc, status, writer).await,
        Step::Checkpoint => checkpoint::run(sc, status, writer).await,
        Step::CheckpointRemoval => checkpoint_removal::run(sc, status, writer).await,
        Step::Memory => memory::run(sc, status, writer).await,
        Step::Disk => disk::run(sc, status, writer).await,
        Step::Isolation => isolation::run(sc, status, writer).await,
        Step::ForensicCopy => forensic_copy::run(sc, status, writer).await,
    }
}

/// An object an on-instance script PUT to a presigned URL, re-hashed from S3 and found equal to what the script
/// reported for it.
pub struct VerifiedUpload {
    uri: String,
    sha256: String,
    size: i64,
}

impl VerifiedUpload {
    pub fn into_artifact(self, name: &str, kind: ArtifactType) -> Artifact {
        Artifact::s3_object(name, kind, self.uri, self.sha256, self.size)
    }
}

/// Checks an uploaded object against the `FC-RESULT <result> sha256=... bytes=...` line the `command` printed,
/// by downloading and hashing it.
pub async fn verified_upload(sc: &StepContext<'_>, stdout: &str, command: &str, result: &str, bucket: &str, key: &str) -> Result<VerifiedUpload, StepError> {
    let instance_id = sc.instance_id();
    let reported = acquisition::result(stdout, result)
        .ok_or_else(|| StepError::failed(Reason::MissingResult, format!("instance {instance_id}: the {command} command reported no {result} result")))?;
    let expected = reported.get("sha256").cloned().unwrap_or_default();
    let (actual, size) = sc.aws.store.object_sha256(bucket, key, |_| {}).await.map_err(|e| StepError::on_instance(e, instance_id, Reason::ArtifactMissing))?;
    if actual != expected || reported.get("bytes").map(String::as_str) != Some(size.to_string().as_str()) {
        return Err(StepError::failed(
            Reason::ArtifactChecksumMismatch,
            format!("s3://{bucket}/{key} from instance {instance_id}: instance reported sha256 {expected}, S3 holds {actual} ({size} bytes)"),
        ));
    }
    Ok(VerifiedUpload { uri: format!("s3://{bucket}/{key}"), sha256: actual, size })
}
