//! Writes `manifest.json` beside the artifacts when a capture ends, and lists it as an artifact.

use sha2::{Digest, Sha256};

use super::{StepContext, StepError, upsert_artifact};
use crate::{
    api::{Artifact, ArtifactType, ForensicCaptureStatus},
    aws::{ErrorClass, s3::EvidenceStore},
    controller::status::now,
    manifest,
};

pub async fn write(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus) -> Result<(), StepError> {
    let Ok((bucket, prefix)) = sc.evidence() else {
        tracing::warn!(instance = %sc.instance_id(), "no evidence bucket: capture ends without a manifest");
        return Ok(());
    };
    let key = sc.key(&prefix, "manifest.json");
    let body = serde_json::to_vec_pretty(&manifest::build(sc.capture, status, env!("CARGO_PKG_VERSION"))).expect("manifest serializes");
    let sha256 = hex::encode(Sha256::digest(&body));
    let size = body.len() as i64;
    match sc.aws.store.put_object(&bucket, &key, body, "application/json").await {
        Ok(()) => {}
        Err(e) if e.class() == ErrorClass::Retryable => return Err(StepError::Retry(format!("manifest for {}: {e}", sc.instance_id()))),
        Err(e) => {
            // The evidence steps already failed on this bucket with their own reasons; completion is not held.
            tracing::warn!(instance = %sc.instance_id(), error = %e, "manifest not written");
            return Ok(());
        }
    }
    upsert_artifact(
        status,
        Artifact {
            name: "manifest".into(),
            kind: ArtifactType::Manifest,
            uri: format!("s3://{bucket}/{key}"),
            sha256: Some(sha256),
            size_bytes: Some(size),
            created_at: Some(now()),
            state: "Available".into(),
            source_volume_id: None,
        },
    );
    Ok(())
}
