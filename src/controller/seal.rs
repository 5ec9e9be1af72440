//! Seals a capture when it ends: `manifest.json` written once beside the artifacts, locked like them, and
//! signed with KMS when a signing key is configured (`manifest.json.sig`). Both are listed as artifacts.
//!
//! Failures here never hold the capture's completion (the evidence is already recorded); they are logged and
//! published as Warning events naming the instance and the AWS error. Transient errors are retried.

use base64::Engine;
use sha2::{Digest, Sha256};

use super::{
    failure::StepError,
    protect,
    records::upsert_artifact,
    status::{self, now},
    step_context::StepContext,
};
use crate::{
    api::{Artifact, ArtifactType, ForensicCaptureStatus, Reason},
    aws::{
        AwsError, ErrorClass,
        kms::SignerApi,
        s3::{EvidenceStore, Written},
    },
    custody::{self, SIGNATURE_FORMAT, SIGNATURE_SUFFIX, SignatureDocument},
    manifest,
};

pub async fn write(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus) -> Result<(), StepError> {
    let Ok((bucket, prefix)) = sc.evidence() else {
        tracing::warn!(instance = %sc.instance_id(), "no evidence bucket: capture ends without a manifest");
        return Ok(());
    };
    let key = sc.key(&prefix, "manifest.json");
    let uri = format!("s3://{bucket}/{key}");
    let body = serde_json::to_vec_pretty(&manifest::build(sc.capture, status, env!("CARGO_PKG_VERSION"), &sc.tags())).expect("manifest serializes");
    let body = match store_once(sc, &bucket, &key, body, "application/json").await {
        Ok(stored) => stored,
        Err(e) => return give_up(sc, e, Reason::ManifestNotWritten, &uri).await,
    };
    let sha256 = hex::encode(Sha256::digest(&body));
    record_and_lock(sc, status, stored_artifact("manifest", ArtifactType::Manifest, &uri, &body), &bucket, &key).await?;
    let Some(key_id) = sc.ctx.config.protection.kms_signing_key_id.clone() else {
        return Ok(());
    };
    let signature_key = format!("{key}{SIGNATURE_SUFFIX}");
    let signature_uri = format!("s3://{bucket}/{signature_key}");
    let signed = match sign(sc, &key_id, &uri, &sha256).await {
        Ok(document) => serde_json::to_vec_pretty(&document).expect("signature serializes"),
        Err(e) => return give_up(sc, e, Reason::ManifestSigningFailed, &uri).await,
    };
    let stored = match store_once(sc, &bucket, &signature_key, signed, "application/json").await {
        Ok(stored) => stored,
        Err(e) => return give_up(sc, e, Reason::ManifestSigningFailed, &signature_uri).await,
    };
    let mut signature = stored_artifact("manifest-signature", ArtifactType::ManifestSignature, &signature_uri, &stored);
    signature.key_id = serde_json::from_slice::<SignatureDocument>(&stored).ok().map(|d| d.key_id);
    record_and_lock(sc, status, signature, &bucket, &signature_key).await
}

/// Lists the object, then applies the configured Object Lock and records it; a refused lock is a warning.
pub async fn record_and_lock(sc: &StepContext<'_>, status: &mut ForensicCaptureStatus, mut artifact: Artifact, bucket: &str, key: &str) -> Result<(), StepError> {
    upsert_artifact(status, artifact.clone());
    match protect::object(sc, bucket, key).await {
        Ok(lock) => {
            artifact.lock = lock;
            upsert_artifact(status, artifact);
        }
        Err(e @ StepError::Retry { .. }) => return Err(e),
        Err(e) => warn(sc, "Seal", Reason::ObjectLockFailed, e.to_string()).await,
    }
    Ok(())
}

/// Writes `body` unless the key already holds an object (a manifest written before a restart); returns the
/// bytes actually stored, which are what the record must describe.
pub async fn store_once(sc: &StepContext<'_>, bucket: &str, key: &str, body: Vec<u8>, content_type: &str) -> Result<Vec<u8>, AwsError> {
    match sc.aws.store.put_object_once(bucket, key, body.clone(), content_type).await? {
        Written::Created => Ok(body),
        Written::AlreadyExists => sc.aws.store.get_object(bucket, key).await,
    }
}

/// KMS-signs the manifest's SHA-256 (digest mode) with the first SHA-256 algorithm the key supports.
async fn sign(sc: &StepContext<'_>, key_id: &str, manifest_uri: &str, manifest_sha256: &str) -> Result<SignatureDocument, AwsError> {
    let kms = &sc.aws.kms;
    let supported = kms.signing_algorithms(key_id).await?;
    let algorithm = custody::signing_algorithm(&supported).ok_or_else(|| {
        AwsError::local(
            "kms:DescribeKey",
            "UnsupportedSigningKey",
            format!("key {key_id} offers no SHA-256 signing algorithm (it offers {supported:?}); use an asymmetric SIGN_VERIFY key"),
        )
    })?;
    let digest = hex::decode(manifest_sha256).expect("hex digest");
    let signed = kms.sign_digest(key_id, algorithm, &digest).await?;
    Ok(SignatureDocument {
        format: SIGNATURE_FORMAT.into(),
        manifest_uri: manifest_uri.into(),
        manifest_sha256: manifest_sha256.into(),
        key_id: signed.key_arn,
        signing_algorithm: signed.algorithm,
        message_type: "DIGEST".into(),
        signature: base64::engine::general_purpose::STANDARD.encode(&signed.signature),
        signed_at: now().0.to_string(),
    })
}

pub fn stored_artifact(name: &str, kind: ArtifactType, uri: &str, body: &[u8]) -> Artifact {
    Artifact::s3_object(name, kind, uri.into(), hex::encode(Sha256::digest(body)), body.len() as i64)
}

/// Retryable errors are retried; anything else is reported and the capture completes without this piece.
pub async fn give_up(sc: &StepContext<'_>, error: AwsError, reason: Reason, uri: &str) -> Result<(), StepError> {
    let message = format!("{uri} for instance {}: {error}", sc.instance_id());
    if error.class() == ErrorClass::Retryable {
        return Err(StepError::Retry { message, source: Some(error) });
    }
    warn(sc, "Seal", reason, message).await;
    Ok(())
}

/// Logs and publishes a Warning Event: the capture is recorded without one of its derived objects.
pub async fn warn(sc: &StepContext<'_>, action: &str, reason: Reason, message: String) {
    tracing::warn!(instance = %sc.instance_id(), %reason, %message, "capture recorded without one of its derived objects");
    status::warn(sc.ctx, sc.capture, action, reason, message).await;
}
