//! `forensic-capture verify`: re-checks a capture's evidence against its manifest, without trusting the
//! controller or the cluster: every S3 artifact is streamed and re-hashed, every snapshot must still exist and
//! carry the capture's UID tag, and the manifest's KMS signature must cover the manifest's exact bytes.

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::{
    aws::{AwsError, ec2::tags, s3::EvidenceStore},
    custody::{SIGNATURE_SUFFIX, SignatureDocument},
};

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
    pub fn failed(&self) -> usize {
        self.findings.iter().filter(|f| !f.ok).count()
    }
}

fn split_s3(uri: &str) -> Option<(&str, &str)> {
    uri.strip_prefix("s3://")?.split_once('/')
}

/// What the caller expects of the manifest itself, beyond what it says of the artifacts.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// SHA-256 of the manifest as the capture's status recorded it (when verifying by capture).
    pub manifest_sha256: Option<String>,
    /// Fail when the manifest has no signature beside it.
    pub require_signature: bool,
}

/// The clients verification reads with. Every AWS call `verify` makes is in this file (or is the store's
/// GetObject), so that iam/verifier-policy.json can be checked against it.
pub struct Readers<'a> {
    pub store: &'a crate::aws::s3::SdkEvidenceStore,
    pub ec2: &'a aws_sdk_ec2::Client,
    pub kms: &'a aws_sdk_kms::Client,
    pub sts: &'a aws_sdk_sts::Client,
    /// A read-only role per account (--account-role): snapshots in that account (a workload account's
    /// originals, a forensic account's copies) are described through it; others with the auditor's identity.
    pub account_roles: std::collections::BTreeMap<String, String>,
}

impl Readers<'_> {
    /// EC2 as seen from `account` (through its role, when one is given) in `region`.
    async fn ec2_in(&self, account: Option<&str>, region: Option<&str>) -> Result<aws_sdk_ec2::Client, String> {
        let mut config = self.ec2.config().to_builder();
        if let Some(region) = region {
            config = config.region(aws_sdk_ec2::config::Region::new(region.to_string()));
        }
        if let Some((account, role)) = account.and_then(|a| self.account_roles.get_key_value(a)) {
            let assumed = self
                .sts
                .assume_role()
                .role_arn(role)
                .role_session_name("forensic-capture-verify")
                .send()
                .await
                .map_err(|e| format!("UNVERIFIED: cannot assume {role} in account {account}: {}", AwsError::from_sdk("sts:AssumeRole", e)))?;
            let c = assumed.credentials().ok_or_else(|| format!("UNVERIFIED: {role} gave no credentials"))?;
            let credentials = aws_sdk_ec2::config::Credentials::new(
                c.access_key_id(),
                c.secret_access_key(),
                Some(c.session_token().to_string()),
                None,
                "forensic-capture-verify",
            );
            config = config.credentials_provider(credentials);
        }
        Ok(aws_sdk_ec2::Client::from_conf(config.build()))
    }
}

/// KMS Verify of a digest signature. Ok(false) when the signature does not match (KMS answers that with
/// KMSInvalidSignatureException); Err for anything else (no access, no such key).
async fn kms_verify_digest(kms: &aws_sdk_kms::Client, key_id: &str, algorithm: &str, digest: &[u8], signature: &[u8]) -> Result<bool, AwsError> {
    use aws_sdk_kms::{primitives::Blob, types::{MessageType, SigningAlgorithmSpec}};
    // A key is reached in the region its ARN names, whatever the auditor's default region.
    let kms = match crate::aws::clients::region_of_arn(key_id) {
        Some(region) if kms.config().region().map(|r| r.as_ref()) != Some(region) => {
            aws_sdk_kms::Client::from_conf(kms.config().to_builder().region(aws_sdk_kms::config::Region::new(region.to_string())).build())
        }
        _ => kms.clone(),
    };
    let result = kms
        .verify()
        .key_id(key_id)
        .message(Blob::new(digest))
        .message_type(MessageType::Digest)
        .signing_algorithm(SigningAlgorithmSpec::from(algorithm))
        .signature(Blob::new(signature))
        .send()
        .await;
    match result {
        Ok(output) => Ok(output.signature_valid()),
        Err(e) => {
            let e = AwsError::from_sdk("kms:Verify", e);
            if e.code == "KMSInvalidSignatureException" { Ok(false) } else { Err(e) }
        }
    }
}

pub async fn verify(readers: &Readers<'_>, manifest_uri: &str, expect: &Expectations) -> Result<Report, String> {
    let (bucket, key) = split_s3(manifest_uri).ok_or_else(|| format!("{manifest_uri} is not an s3://bucket/key URI"))?;
    let bytes = readers.store.get_object(bucket, key).await.map_err(|e| format!("cannot read the manifest {manifest_uri}: {e}"))?;
    let manifest_sha256 = hex::encode(Sha256::digest(&bytes));
    let mut findings = Vec::new();
    if let Some(recorded) = &expect.manifest_sha256 {
        let ok = *recorded == manifest_sha256;
        let detail = if ok {
            format!("sha256 {manifest_sha256} as recorded in the capture's status")
        } else {
            format!("MISMATCH: the capture's status recorded sha256 {recorded}, the manifest has sha256 {manifest_sha256}")
        };
        findings.push(Finding { name: "manifest".into(), uri: manifest_uri.into(), ok, detail });
    }
    findings.push(check_signature(readers, bucket, key, manifest_uri, &manifest_sha256, expect.require_signature).await);
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| format!("{manifest_uri} is not a manifest: {e}"))?;
    let uid = manifest["capture"]["uid"].as_str().unwrap_or_default().to_string();
    // The originals are in the instance's account; a copy says where it is.
    let instance_account = manifest["target"]["accountId"].as_str();
    for artifact in manifest["artifacts"].as_array().into_iter().flatten() {
        let name = artifact["name"].as_str().unwrap_or("?").to_string();
        let uri = artifact["uri"].as_str().unwrap_or_default().to_string();
        let (ok, detail) = match split_s3(&uri) {
            Some((bucket, key)) => check_object(readers.store, bucket, key, artifact).await,
            None => {
                let account = if artifact["copy"].is_object() { artifact["copy"]["accountId"].as_str() } else { instance_account };
                match readers.ec2_in(account, crate::aws::clients::region_of_arn(&uri)).await {
                    Ok(ec2) => check_snapshot(&ec2, &uri, &uid, artifact).await,
                    Err(detail) => (false, detail),
                }
            }
        };
        findings.push(Finding { name, uri, ok, detail });
    }
    Ok(Report { findings })
}

/// Checks `<manifest>.sig`: it must cover exactly these manifest bytes, and KMS must confirm the signature.
async fn check_signature(readers: &Readers<'_>, bucket: &str, key: &str, manifest_uri: &str, manifest_sha256: &str, required: bool) -> Finding {
    let signature_key = format!("{key}{SIGNATURE_SUFFIX}");
    let uri = format!("s3://{bucket}/{signature_key}");
    let finding = |ok: bool, detail: String| Finding { name: "manifest-signature".into(), uri: uri.clone(), ok, detail };
    let bytes = match readers.store.get_object(bucket, &signature_key).await {
        Ok(bytes) => bytes,
        Err(e) if e.class() == crate::aws::ErrorClass::NotFound => {
            return if required {
                finding(false, format!("MISSING: no signature beside {manifest_uri}, and one is required"))
            } else {
                finding(true, "UNSIGNED: no signature beside the manifest (pass --require-signature to make this a failure)".into())
            };
        }
        Err(e) => return finding(false, missing(e)),
    };
    let Ok(document) = serde_json::from_slice::<SignatureDocument>(&bytes) else {
        return finding(false, "MISMATCH: the signature file is not a forensic-capture signature document".into());
    };
    if document.manifest_sha256 != manifest_sha256 {
        return finding(
            false,
            format!("MISMATCH: the signature covers manifest sha256 {}, the manifest has sha256 {manifest_sha256}", document.manifest_sha256),
        );
    }
    let signature = match base64::engine::general_purpose::STANDARD.decode(&document.signature) {
        Ok(s) => s,
        Err(e) => return finding(false, format!("MISMATCH: the signature is not base64: {e}")),
    };
    let digest = hex::decode(manifest_sha256).expect("hex digest");
    match kms_verify_digest(readers.kms, &document.key_id, &document.signing_algorithm, &digest, &signature).await {
        Ok(true) => finding(true, format!("signature valid: {} over sha256 {manifest_sha256}, key {}", document.signing_algorithm, document.key_id)),
        Ok(false) => finding(
            false,
            format!("MISMATCH: KMS reports the signature invalid for manifest sha256 {manifest_sha256} with key {} ({})", document.key_id, document.signing_algorithm),
        ),
        Err(e) => finding(false, format!("UNVERIFIED: {e}")),
    }
}

async fn check_object(store: &crate::aws::s3::SdkEvidenceStore, bucket: &str, key: &str, artifact: &serde_json::Value) -> (bool, String) {
    let expected_sha = artifact["sha256"].as_str().unwrap_or_default();
    let expected_size = artifact["sizeBytes"].as_i64();
    match store.object_sha256(bucket, key, |_| {}).await {
        Ok((sha, size)) if sha == expected_sha && Some(size) == expected_size => (true, format!("sha256 {sha}, {size} bytes")),
        Ok((sha, size)) => (
            false,
            format!("MISMATCH: expected sha256 {expected_sha} and {} bytes, found sha256 {sha} and {size} bytes", expected_size.unwrap_or(-1)),
        ),
        Err(e) => (false, missing(e)),
    }
}

/// A snapshot (looked for in the region its ARN names, by `ec2`'s account) must exist with the capture's tag;
/// a copy must also hold the snapshot it says it copies, under the key it says.
async fn check_snapshot(ec2: &aws_sdk_ec2::Client, arn: &str, uid: &str, artifact: &serde_json::Value) -> (bool, String) {
    let snapshot_id = arn.rsplit('/').next().unwrap_or_default();
    let s = match ec2.describe_snapshots().snapshot_ids(snapshot_id).send().await {
        Ok(found) => match found.snapshots().first() {
            Some(s) => s.clone(),
            None => return (false, format!("MISSING: snapshot {snapshot_id} not found")),
        },
        Err(e) => return (false, missing(AwsError::from_sdk("ec2:DescribeSnapshots", e))),
    };
    let tag = |key: &str| s.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value()).map(str::to_string);
    if tag(tags::CAPTURE_UID).as_deref() != Some(uid) {
        return (false, format!("MISMATCH: snapshot {snapshot_id} lacks the tag {}={uid}", tags::CAPTURE_UID));
    }
    let state = s.state().map(|s| s.as_str()).unwrap_or("?");
    let copy = &artifact["copy"];
    if !copy.is_object() {
        return (true, format!("snapshot {snapshot_id} exists, state {state}"));
    }
    let source = copy["sourceSnapshotId"].as_str().unwrap_or_default();
    if tag(crate::aws::snapshot_copy::tags::COPY_OF).as_deref() != Some(source) {
        return (false, format!("MISMATCH: snapshot {snapshot_id} is not tagged as a copy of {source}"));
    }
    let key = copy["kmsKeyId"].as_str();
    if s.encrypted() != Some(true) || s.kms_key_id() != key {
        return (false, format!("MISMATCH: copy {snapshot_id} is under key {:?}, the manifest says {key:?}", s.kms_key_id()));
    }
    let owner = s.owner_id().unwrap_or("?");
    (true, format!("copy {snapshot_id} of {source} exists in account {owner}, state {state}, key {}", key.unwrap_or("?")))
}

fn missing(e: AwsError) -> String {
    match e.class() {
        crate::aws::ErrorClass::NotFound => format!("MISSING: {e}"),
        _ => format!("UNVERIFIED: {e}"),
    }
}

/// The manifest a capture's status points at, and what the status recorded about it: its SHA-256, and whether
/// the controller signed it (then a missing signature is a failure).
pub fn from_capture(capture: &crate::api::ForensicCapture) -> Result<(String, Expectations), String> {
    use crate::api::ArtifactType;
    use kube::ResourceExt;
    let name = format!("{}/{}", capture.namespace().unwrap_or_default(), capture.name_any());
    let artifacts = capture.status.as_ref().map(|s| s.artifacts.as_slice()).unwrap_or_default();
    let manifest = artifacts
        .iter()
        .find(|a| a.kind == ArtifactType::Manifest)
        .ok_or_else(|| format!("capture {name} lists no manifest (it has not completed, or had no evidence bucket)"))?;
    let signed = artifacts.iter().any(|a| a.kind == ArtifactType::ManifestSignature);
    Ok((manifest.uri.clone(), Expectations { manifest_sha256: manifest.sha256.clone(), require_signature: signed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_that_signed_its_manifest_requires_the_signature() {
        let capture: crate::api::ForensicCapture = serde_json::from_value(serde_json::json!({
            "apiVersion": "forensic-capture.dev/v1alpha1", "kind": "ForensicCapture",
            "metadata": {"name": "c", "namespace": "ir"},
            "spec": {"caseId": "INC-1", "target": {"instanceId": "i-0123456789abcdef0"}},
            "status": {"artifacts": [
                {"name": "manifest", "type": "Manifest", "uri": "s3://b/k/manifest.json", "sha256": "ab", "state": "Available"},
                {"name": "manifest-signature", "type": "ManifestSignature", "uri": "s3://b/k/manifest.json.sig", "state": "Available"}
            ]}
        }))
        .unwrap();
        let (uri, expect) = from_capture(&capture).unwrap();
        assert_eq!(uri, "s3://b/k/manifest.json");
        assert_eq!(expect.manifest_sha256.as_deref(), Some("ab"));
        assert!(expect.require_signature);
    }

    #[test]
    fn a_capture_without_a_manifest_says_so() {
        let capture: crate::api::ForensicCapture = serde_json::from_value(serde_json::json!({
            "apiVersion": "forensic-capture.dev/v1alpha1", "kind": "ForensicCapture",
            "metadata": {"name": "c", "namespace": "ir"},
            "spec": {"caseId": "INC-1", "target": {"instanceId": "i-0123456789abcdef0"}}
        }))
        .unwrap();
        assert!(from_capture(&capture).unwrap_err().contains("capture ir/c lists no manifest"));
    }
}
