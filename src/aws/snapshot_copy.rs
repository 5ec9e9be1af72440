//! Copies of EBS snapshots, in the instance's account (re-encrypted to a shareable key) and in the forensic
//! account (the evidence handed over). CopySnapshot has no client token, so every copy is tagged with what it
//! is a copy of and why, and found again by those tags after a restart. These are the calls a forensic
//! account's role needs (with LockSnapshot, src/aws/snapshot_lock.rs); sharing is in snapshot_share.rs.

use std::future::Future;

use aws_sdk_ec2::types::ResourceType;

use super::{
    AwsError,
    ec2::{tag_filter, tag_spec},
};

/// Tags on every copy, beside the capture's own.
pub mod tags {
    /// The evidence snapshot (in the instance's account) that the copy holds.
    pub const COPY_OF: &str = "forensic-capture.dev/copy-of";
    /// Forensic or Shareable.
    pub const COPY_PURPOSE: &str = "forensic-capture.dev/copy-purpose";
}

/// A snapshot as far as copying it is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotKey {
    pub snapshot_id: String,
    /// pending, completed, error (EC2's words).
    pub state: String,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    /// The copy-of tag, on copies.
    pub copy_of: Option<String>,
}

/// What to copy, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyRequest {
    pub source_region: String,
    pub source_snapshot_id: String,
    pub kms_key_id: String,
    pub description: String,
    pub tags: Vec<(String, String)>,
}

pub trait SnapshotCopyApi: Send + Sync {
    /// This account's copies made for the capture `capture_uid` with `purpose`.
    fn copies(&self, capture_uid: &str, purpose: &str) -> impl Future<Output = Result<Vec<SnapshotKey>, AwsError>> + Send;
    /// The snapshots with these IDs that this account can see (its own).
    fn describe(&self, snapshot_ids: &[String]) -> impl Future<Output = Result<Vec<SnapshotKey>, AwsError>> + Send;
    /// Starts a copy, always encrypted with the request's key, into this client's account and region.
    fn copy(&self, request: &CopyRequest) -> impl Future<Output = Result<String, AwsError>> + Send;
}

fn snapshot_key(s: &aws_sdk_ec2::types::Snapshot) -> Option<SnapshotKey> {
    Some(SnapshotKey {
        snapshot_id: s.snapshot_id()?.to_string(),
        state: s.state().map(|s| s.as_str().to_string()).unwrap_or_default(),
        encrypted: s.encrypted().unwrap_or(false),
        kms_key_id: s.kms_key_id().map(str::to_string),
        copy_of: s.tags().iter().find(|t| t.key() == Some(tags::COPY_OF)).and_then(|t| t.value()).map(str::to_string),
    })
}

impl SnapshotCopyApi for super::ec2::SdkEc2 {
    async fn copies(&self, capture_uid: &str, purpose: &str) -> Result<Vec<SnapshotKey>, AwsError> {
        let output = self
            .0
            .describe_snapshots()
            .owner_ids("self")
            .filters(tag_filter(super::ec2::tags::CAPTURE_UID, capture_uid))
            .filters(tag_filter(tags::COPY_PURPOSE, purpose))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeSnapshots", e))?;
        Ok(output.snapshots().iter().filter_map(snapshot_key).collect())
    }

    async fn describe(&self, snapshot_ids: &[String]) -> Result<Vec<SnapshotKey>, AwsError> {
        let output = self
            .0
            .describe_snapshots()
            .set_snapshot_ids(Some(snapshot_ids.to_vec()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeSnapshots", e))?;
        Ok(output.snapshots().iter().filter_map(snapshot_key).collect())
    }

    async fn copy(&self, request: &CopyRequest) -> Result<String, AwsError> {
        let tags = tag_spec(ResourceType::Snapshot, &request.tags);
        let output = self
            .0
            .copy_snapshot()
            .source_region(&request.source_region)
            .source_snapshot_id(&request.source_snapshot_id)
            .encrypted(true)
            .kms_key_id(&request.kms_key_id)
            .description(&request.description)
            .tag_specifications(tags)
            // No client token: a retry after a lost answer would make a second copy. The step retries, after
            // looking the copy up by its tags.
            .customize()
            .config_override(aws_sdk_ec2::config::Builder::default().retry_config(super::clients::single_attempt()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:CopySnapshot", e))?;
        output.snapshot_id().map(str::to_string).ok_or_else(|| AwsError::local("ec2:CopySnapshot", "NoSnapshotId", "CopySnapshot answered without a snapshot ID"))
    }
}
