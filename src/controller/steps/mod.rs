//! The side-effecting half of each planner action. Every step looks up what it may already have done (by
//! tag, by command comment, by upload key) before doing it, and saves intent to the status before a side
//! effect whose result could not be found again, so a controller killed at any instant resumes cleanly.

mod command;
pub mod disk;
pub mod isolation;
pub mod manifest;
pub mod memory;
pub mod protect;
pub mod resolve;
pub mod symbols;
pub mod volatile;

use std::time::Duration;

use kube::ResourceExt;

use super::{Context, RegionClients, status};
use crate::{
    acquisition,
    api::{Artifact, ForensicCapture, ForensicCaptureStatus, StepRecord, StepState, TargetFacts},
    aws::{AwsError, ErrorClass, ssm::Invocation},
    planner::Step,
};

/// What a step asks of the reconcile loop.
#[derive(Debug)]
pub enum Progress {
    /// Something changed: plan again now.
    Continue,
    /// Waiting on AWS or the instance: look again after this long.
    Wait(Duration),
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Transient (throttling, 5xx, API conflicts): retried with backoff, the capture continues.
    #[error("{0}")]
    Retry(String),
    /// This step ends without its result; later steps still run.
    #[error("{reason}: {message}")]
    Failed { reason: String, message: String },
    /// The capture cannot continue: every unfinished step ends with this reason, and nothing more is done.
    #[error("{reason}: {message}")]
    Abort { reason: String, message: String },
}

impl StepError {
    pub fn failed(reason: &str, message: impl Into<String>) -> Self {
        StepError::Failed { reason: reason.into(), message: message.into() }
    }

    /// Classifies an AWS error met while working on `instance_id`; `reason` names a step-level failure.
    pub fn aws(error: AwsError, instance_id: &str, reason: &str) -> Self {
        let message = format!("instance {instance_id}: {error}");
        match error.class() {
            ErrorClass::Retryable => StepError::Retry(message),
            ErrorClass::AccessDenied => StepError::Abort { reason: "AccessDenied".into(), message },
            ErrorClass::NotFound if error.code.starts_with("InvalidInstanceID") => {
                StepError::Abort { reason: "InstanceNotFound".into(), message }
            }
            _ => StepError::Failed { reason: reason.into(), message },
        }
    }
}

impl From<kube::Error> for StepError {
    fn from(e: kube::Error) -> Self {
        StepError::Retry(format!("Kubernetes API: {e}"))
    }
}

/// Saves the status mid-step, so intent is recorded before the next side effect.
pub struct Writer<'a> {
    pub ctx: &'a Context,
    pub capture: &'a ForensicCapture,
    pub written: ForensicCaptureStatus,
}

impl Writer<'_> {
    pub async fn save(&mut self, status: &mut ForensicCaptureStatus) -> Result<(), StepError> {
        status::publish(self.ctx, self.capture, &mut self.written, status, None).await?;
        Ok(())
    }
}

/// Everything a step needs to know about the capture it works for.
pub struct StepContext<'a> {
    pub ctx: &'a Context,
    pub capture: &'a ForensicCapture,
    pub uid: String,
    pub target: TargetFacts,
    pub aws: RegionClients,
}

impl<'a> StepContext<'a> {
    pub fn new(ctx: &'a Context, capture: &'a ForensicCapture, target: TargetFacts) -> Self {
        let aws = ctx.aws(&target.region);
        StepContext { ctx, capture, uid: capture.uid().unwrap_or_default(), target, aws }
    }

    pub fn instance_id(&self) -> &str {
        &self.target.instance_id
    }

    /// The evidence bucket and key prefix for this capture, or why there is none.
    pub fn evidence(&self) -> Result<(String, String), StepError> {
        let location = self.capture.spec.evidence.clone().unwrap_or_default();
        let bucket = location.bucket.or_else(|| self.ctx.config.evidence_bucket.clone()).ok_or_else(|| {
            StepError::failed(
                "EvidenceBucketNotConfigured",
                "no evidence bucket: set spec.evidence.bucket or the controller's --evidence-bucket",
            )
        })?;
        let prefix = location.prefix.unwrap_or_else(|| self.ctx.config.evidence_prefix.clone());
        Ok((bucket, prefix))
    }

    pub fn key(&self, prefix: &str, file: &str) -> String {
        acquisition::object_key(prefix, &self.capture.spec.case_id, self.instance_id(), &self.uid, file)
    }

    /// Identifies this capture's command for a step in SSM's history.
    pub fn command_comment(&self, step: Step) -> String {
        format!("forensic-capture {} {}", self.uid, step.name())
    }

    /// Tags for every AWS object this capture creates.
    pub fn tags(&self) -> Vec<(String, String)> {
        use crate::aws::ec2::tags;
        vec![
            (tags::CAPTURE_UID.into(), self.uid.clone()),
            (tags::CASE_ID.into(), self.capture.spec.case_id.clone()),
            (tags::CAPTURE.into(), format!("{}/{}", self.capture.namespace().unwrap_or_default(), self.capture.name_any())),
            (tags::INSTANCE_ID.into(), self.instance_id().to_string()),
        ]
    }

    /// Fails the step unless the evidence bucket is reachable.
    pub async fn check_bucket(&self, bucket: &str) -> Result<(), StepError> {
        use crate::aws::s3::EvidenceStore;
        self.aws.store.check_bucket(bucket).await.map_err(|e| {
            let message = format!("evidence bucket {bucket} for instance {}: {e}", self.instance_id());
            match e.class() {
                ErrorClass::Retryable => StepError::Retry(message),
                ErrorClass::NotFound => StepError::failed("EvidenceBucketNotFound", message),
                ErrorClass::AccessDenied => StepError::failed("EvidenceBucketAccessDenied", message),
                ErrorClass::Rejected => StepError::failed("EvidenceBucketUnavailable", message),
            }
        })
    }
}

/// Adds an artifact to the status, or replaces the one of the same name.
pub fn upsert_artifact(status: &mut ForensicCaptureStatus, artifact: Artifact) {
    match status.artifacts.iter_mut().find(|a| a.name == artifact.name) {
        Some(existing) => *existing = artifact,
        None => status.artifacts.push(artifact),
    }
}

/// Marks a step started, once.
pub fn start(step: Step, status: &mut ForensicCaptureStatus) -> bool {
    let record = step.record_mut(status);
    if record.is_some() {
        return false;
    }
    *record = Some(StepRecord { state: StepState::Running, started_at: Some(status::now()), ..Default::default() });
    true
}

pub fn record(step: Step, status: &mut ForensicCaptureStatus) -> &mut StepRecord {
    step.record_mut(status).get_or_insert_with(Default::default)
}

pub fn end(step: Step, status: &mut ForensicCaptureStatus, state: StepState, reason: Option<String>, message: Option<String>) {
    let record = record(step, status);
    record.state = state;
    record.reason = reason;
    record.message = message;
    record.completed_at = Some(status::now());
}

/// Turns a finished (non-successful) SSM invocation into a step failure that names the instance, the command
/// and what the script said.
pub fn invocation_failure(step: Step, instance_id: &str, command_id: &str, invocation: &Invocation) -> StepError {
    let what = format!("{} command {command_id} on instance {instance_id}", step.name());
    match invocation {
        Invocation::Failed { response_code, stdout, stderr } => match acquisition::script_error(stdout) {
            Some((reason, detail)) => {
                let reason = match reason.as_str() {
                    "ToolChecksumMismatch" => "AvmlChecksumMismatch".to_string(),
                    "ToolDownloadFailed" => "AvmlDownloadFailed".to_string(),
                    _ => reason,
                };
                StepError::failed(&reason, format!("{what} failed: {detail}"))
            }
            None => StepError::failed(
                "CommandFailed",
                format!("{what} exited {response_code}: {}", tail(stderr, 400)),
            ),
        },
        Invocation::TimedOut { stderr, .. } => {
            StepError::failed("CommandTimedOut", format!("{what} exceeded its execution timeout: {}", tail(stderr, 300)))
        }
        Invocation::DeliveryTimedOut => {
            StepError::failed("CommandDeliveryTimedOut", format!("{what} was never delivered: the SSM agent is offline"))
        }
        Invocation::Cancelled => StepError::failed("CommandCancelled", format!("{what} was cancelled")),
        Invocation::Running | Invocation::Succeeded { .. } => StepError::Retry(format!("{what} has not failed")),
    }
}

fn tail(s: &str, chars: usize) -> String {
    let count = s.chars().count();
    s.chars().skip(count.saturating_sub(chars)).collect::<String>().trim().to_string()
}

pub const POLL: Duration = Duration::from_secs(2);
