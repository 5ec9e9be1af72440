//! `forensic-capture verify`: re-checks a capture's evidence against its manifest, without trusting the
//! controller or the cluster: every S3 artifact is streamed and re-hashed, every snapshot must still exist and
//! carry the capture's UID tag.

use crate::aws::{AwsError, ec2::tags, s3::EvidenceStore};

/// One artifact's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub name: String,
    pub uri: String,
    pub ok: bool,
    pub detail: String,
}

pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.findings.iter().all(|f| f.ok)
    }
}

fn split_s3(uri: &str) -> Option<(&str, &str)> {
    uri.strip_prefix("s3://")?.split_once('/')
}

pub async fn verify(store: &crate::aws::s3::SdkEvidenceStore, ec2: &aws_sdk_ec2::Client, manifest_uri: &str) -> Result<Report, String> {
    let (bucket, key) = split_s3(manifest_uri).ok_or_else(|| format!("{manifest_uri} is not an s3://bucket/key URI"))?;
    let bytes = store.get_object(bucket, key).await.map_err(|e| format!("cannot read the manifest {manifest_uri}: {e}"))?;
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| format!("{manifest_uri} is not a manifest: {e}"))?;
    let uid = manifest["capture"]["uid"].as_str().unwrap_or_default().to_string();
    let mut findings = Vec::new();
    for artifact in manifest["artifacts"].as_array().into_iter().flatten() {
        let name = artifact["name"].as_str().unwrap_or("?").to_string();
        let uri = artifact["uri"].as_str().unwrap_or_default().to_string();
        let (ok, detail) = match split_s3(&uri) {
            Some((bucket, key)) => check_object(store, bucket, key, artifact).await,
            None => check_snapshot(ec2, &uri, &uid).await,
        };
        findings.push(Finding { name, uri, ok, detail });
    }
    Ok(Report { findings })
}

async fn check_object(store: &crate::aws::s3::SdkEvidenceStore, bucket: &str, key: &str, artifact: &serde_json::Value) -> (bool, String) {
    let expected_sha = artifact["sha256"].as_str().unwrap_or_default();
    let expected_size = artifact["sizeBytes"].as_i64();
    match store.object_sha256(bucket, key).await {
        Ok((sha, size)) if sha == expected_sha && Some(size) == expected_size => (true, format!("sha256 {sha}, {size} bytes")),
        Ok((sha, size)) => (
            false,
            format!("MISMATCH: expected sha256 {expected_sha} and {} bytes, found sha256 {sha} and {size} bytes", expected_size.unwrap_or(-1)),
        ),
        Err(e) => (false, missing(e)),
    }
}

async fn check_snapshot(ec2: &aws_sdk_ec2::Client, arn: &str, uid: &str) -> (bool, String) {
    let snapshot_id = arn.rsplit('/').next().unwrap_or_default();
    match ec2.describe_snapshots().snapshot_ids(snapshot_id).send().await {
        Ok(found) => match found.snapshots().first() {
            Some(s) => {
                let tagged = s.tags().iter().any(|t| t.key() == Some(tags::CAPTURE_UID) && t.value() == Some(uid));
                if tagged {
                    (true, format!("snapshot {snapshot_id} exists, state {}", s.state().map(|s| s.as_str()).unwrap_or("?")))
                } else {
                    (false, format!("MISMATCH: snapshot {snapshot_id} lacks the tag {}={uid}", tags::CAPTURE_UID))
                }
            }
            None => (false, format!("MISSING: snapshot {snapshot_id} not found")),
        },
        Err(e) => (false, missing(AwsError::from_sdk("ec2:DescribeSnapshots", e))),
    }
}

fn missing(e: AwsError) -> String {
    match e.class() {
        crate::aws::ErrorClass::NotFound => format!("MISSING: {e}"),
        _ => format!("UNVERIFIED: {e}"),
    }
}
