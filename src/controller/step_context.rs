//! Everything a step needs to know about the capture it works for: the instance, its AWS clients, where its
//! evidence goes and how its AWS objects are named and tagged.

use kube::ResourceExt;

use super::{Context, accounts_config::ForensicDestination, clients::Requester, failure::StepError};
use crate::{
    acquisition,
    api::{ForensicCapture, Reason, Step, TargetFacts},
    aws::{CaptureClients, RegionClients, ec2::tags, s3::EvidenceStore},
};

pub struct StepContext<'a> {
    pub ctx: &'a Context,
    pub capture: &'a ForensicCapture,
    pub uid: String,
    pub target: TargetFacts,
    pub aws: CaptureClients,
}

impl<'a> StepContext<'a> {
    /// Fails when the instance's account cannot be reached (its role cannot be assumed).
    pub async fn new(ctx: &'a Context, capture: &'a ForensicCapture, target: TargetFacts) -> Result<Self, StepError> {
        let aws = capture_clients(ctx, capture, &target.instance_id, &target.region).await?;
        Ok(StepContext { ctx, capture, uid: capture.uid().unwrap_or_default(), target, aws })
    }

    pub fn instance_id(&self) -> &str {
        &self.target.instance_id
    }

    /// "instance i-..." (with its account when the capture names one): how messages name what the work was on.
    pub fn subject(&self) -> String {
        match &self.capture.spec.target.account_id {
            Some(account) => format!("instance {} in account {account}", self.instance_id()),
            None => format!("instance {}", self.instance_id()),
        }
    }

    /// The evidence bucket and key prefix for this capture, or why there is none.
    pub fn evidence(&self) -> Result<(String, String), StepError> {
        let location = self.capture.spec.evidence.clone().unwrap_or_default();
        let bucket = location.bucket.or_else(|| self.ctx.config.evidence_bucket.clone()).ok_or_else(|| {
            StepError::failed(Reason::EvidenceBucketNotConfigured, "no evidence bucket: set spec.evidence.bucket or the controller's --evidence-bucket")
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
        vec![
            (tags::CAPTURE_UID.into(), self.uid.clone()),
            (tags::CASE_ID.into(), self.capture.spec.case_id.clone()),
            (tags::CAPTURE.into(), format!("{}/{}", self.capture.namespace().unwrap_or_default(), self.capture.name_any())),
            (tags::INSTANCE_ID.into(), self.instance_id().to_string()),
        ]
    }

    /// Who the capture's sessions act for.
    pub fn requester(&self) -> Requester<'_> {
        Requester { uid: &self.uid, case_id: &self.capture.spec.case_id, who: crate::manifest::requester(&self.capture.metadata) }
    }

    /// The forensic account's clients in `destination`'s region, through its role.
    pub async fn forensic_clients(&self, destination: &ForensicDestination) -> Result<RegionClients, StepError> {
        self.ctx
            .forensic_clients(&destination.account_id, &destination.role_arn, &destination.region, &self.requester())
            .await
            .map_err(|e| e.for_forensic_copy(self.instance_id()))
    }

    /// Fails the step unless the evidence bucket is reachable.
    pub async fn check_bucket(&self, bucket: &str) -> Result<(), StepError> {
        use super::failure::{OnError, Outcome::Fail};
        const BUCKET: OnError = OnError {
            access_denied: Fail(Reason::EvidenceBucketAccessDenied),
            instance_not_found: Fail(Reason::EvidenceBucketUnavailable),
            not_found: Fail(Reason::EvidenceBucketNotFound),
            rejected: Fail(Reason::EvidenceBucketUnavailable),
        };
        self.aws.store.check_bucket(bucket).await.map_err(|e| StepError::aws(e, &format!("evidence bucket {bucket} for instance {}", self.instance_id()), BUCKET))
    }
}

/// The clients for `capture`'s instance in `region`: through its account's session when the capture names an
/// account, the session named after the capture and carrying who asked.
pub async fn capture_clients(ctx: &Context, capture: &ForensicCapture, instance_id: &str, region: &str) -> Result<CaptureClients, StepError> {
    let uid = capture.uid().unwrap_or_default();
    let requester = Requester { uid: &uid, case_id: &capture.spec.case_id, who: crate::manifest::requester(&capture.metadata) };
    ctx.capture_clients(capture.spec.target.account_id.as_deref(), region, &requester).await.map_err(|e| e.for_instance(instance_id))
}
