//! S3: the evidence bucket, presigned URLs for the instance, multipart upload bookkeeping.
//!
//! Presigned URLs are the only way evidence reaches S3 from an instance, and they end up in SSM command history.
//! A URL carries the signing key's ID (and, for temporary credentials, its session token), though never the
//! secret. So that the controller's own key ID and token never appear there, URLs are signed with a short
//! session assumed from `presign_role_arn` whose session policy allows exactly the objects of one step.

use std::{future::Future, time::Duration};

use aws_sdk_s3::{
    presigning::PresigningConfig,
    types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockLegalHold, ObjectLockLegalHoldStatus, ObjectLockRetention, ObjectLockRetentionMode},
};
use sha2::{Digest, Sha256};

use super::AwsError;
use crate::{acquisition::ReportedPart, custody::ObjectProtection};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presign {
    Get { bucket: String, key: String },
    Put { bucket: String, key: String },
    UploadPart { bucket: String, key: String, upload_id: String, part_number: i32 },
}

impl Presign {
    fn object_arn(&self) -> String {
        let (Presign::Get { bucket, key } | Presign::Put { bucket, key } | Presign::UploadPart { bucket, key, .. }) = self;
        format!("arn:aws:s3:::{bucket}/{key}")
    }
}


/// The S3 calls the controller makes.
pub trait EvidenceStore: Send + Sync {
    fn check_bucket(&self, bucket: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// The bucket's versioning status (Enabled, Suspended; None when never set) and whether Object Lock is
    /// enabled on it.
    fn bucket_protection(&self, bucket: &str) -> impl Future<Output = Result<(Option<String>, bool), AwsError>> + Send;
    /// Presigned URLs for exactly these objects, valid for `ttl`.
    fn presign(&self, requests: &[Presign], ttl: Duration, session_name: &str) -> impl Future<Output = Result<Vec<String>, AwsError>> + Send;
    /// Writes an object the controller itself produced, with its SHA-256 as an S3 additional checksum (S3
    /// rejects the PUT if the bytes it received differ).
    fn put_object(&self, bucket: &str, key: &str, body: Vec<u8>, content_type: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Like `put_object`, but only if no object exists at the key yet (If-None-Match: *), so that a record
    /// written once is never replaced, even by this controller after a restart.
    fn put_object_once(&self, bucket: &str, key: &str, body: Vec<u8>, content_type: &str) -> impl Future<Output = Result<Written, AwsError>> + Send;
    /// Sets Object Lock retention and/or legal hold on the current version of an object.
    fn protect_object(&self, bucket: &str, key: &str, protection: &ObjectProtection) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn get_object(&self, bucket: &str, key: &str) -> impl Future<Output = Result<Vec<u8>, AwsError>> + Send;
    fn object_size(&self, bucket: &str, key: &str) -> impl Future<Output = Result<Option<i64>, AwsError>> + Send;
    /// Streams the object through SHA-256, showing every chunk to `observe` on the way (the memory image's
    /// quality gate parses it in the same pass); returns (hex digest, size).
    fn object_sha256(&self, bucket: &str, key: &str, observe: impl FnMut(&[u8]) + Send) -> impl Future<Output = Result<(String, i64), AwsError>> + Send;
    fn find_multipart_upload(&self, bucket: &str, key: &str) -> impl Future<Output = Result<Option<String>, AwsError>> + Send;
    fn create_multipart_upload(&self, bucket: &str, key: &str) -> impl Future<Output = Result<String, AwsError>> + Send;
    fn complete_multipart_upload(&self, bucket: &str, key: &str, upload_id: &str, parts: &[ReportedPart]) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// Outcome of a write-once PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    /// An object already existed at the key; nothing was written.
    AlreadyExists,
}

fn sha256_base64(body: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
}

#[derive(Clone)]
pub struct SdkEvidenceStore {
    pub s3: aws_sdk_s3::Client,
    pub sts: aws_sdk_sts::Client,
    pub presign_role_arn: Option<String>,
}

impl SdkEvidenceStore {
    /// An S3 client whose credentials may only touch the objects named in `requests`.
    async fn signing_client(&self, requests: &[Presign], ttl: Duration, session_name: &str) -> Result<aws_sdk_s3::Client, AwsError> {
        let Some(role_arn) = &self.presign_role_arn else {
            return Ok(self.s3.clone());
        };
        let mut resources: Vec<String> = requests.iter().map(Presign::object_arn).collect();
        resources.sort();
        resources.dedup();
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": resources}]
        });
        let assumed = self
            .sts
            .assume_role()
            .role_arn(role_arn)
            .role_session_name(session_name)
            .policy(policy.to_string())
            // STS's minimum; the URLs themselves expire sooner or at the same time.
            .duration_seconds(ttl.as_secs().max(900) as i32)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sts:AssumeRole", e))?;
        let c = assumed.credentials().ok_or_else(|| AwsError::local("sts:AssumeRole", "MissingCredentials", "the response carried no credentials"))?;
        let credentials = aws_sdk_s3::config::Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            None,
            "forensic-capture-presign",
        );
        let config = self.s3.config().to_builder().credentials_provider(credentials).build();
        Ok(aws_sdk_s3::Client::from_conf(config))
    }
}

impl SdkEvidenceStore {
    /// A PutObject carrying the body's SHA-256 as an S3 additional checksum.
    fn checked_put(&self, bucket: &str, key: &str, body: Vec<u8>, content_type: &str) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            // Both headers: the algorithm header is what Object Lock buckets (and moto) look for on a PUT.
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(sha256_base64(&body))
            .body(body.into())
    }
}

fn presigning(ttl: Duration) -> Result<PresigningConfig, AwsError> {
    PresigningConfig::expires_in(ttl).map_err(|e| AwsError::local("s3:Presign", "InvalidExpiry", e.to_string()))
}

fn presign_error(operation: &'static str, e: impl std::fmt::Display) -> AwsError {
    AwsError::local(operation, "PresignFailed", e.to_string())
}

impl EvidenceStore for SdkEvidenceStore {
    async fn check_bucket(&self, bucket: &str) -> Result<(), AwsError> {
        self.s3.head_bucket().bucket(bucket).send().await.map_err(|e| AwsError::from_sdk("s3:HeadBucket", e))?;
        Ok(())
    }

    async fn bucket_protection(&self, bucket: &str) -> Result<(Option<String>, bool), AwsError> {
        let versioning = self.s3.get_bucket_versioning().bucket(bucket).send().await.map_err(|e| AwsError::from_sdk("s3:GetBucketVersioning", e))?;
        let lock = match self.s3.get_object_lock_configuration().bucket(bucket).send().await {
            Ok(output) => output.object_lock_configuration().and_then(|c| c.object_lock_enabled()).is_some_and(|e| e.as_str() == "Enabled"),
            Err(e) => {
                let e = AwsError::from_sdk("s3:GetObjectLockConfiguration", e);
                // A bucket without Object Lock answers with this error rather than an empty configuration.
                if e.code != "ObjectLockConfigurationNotFoundError" {
                    return Err(e);
                }
                false
            }
        };
        Ok((versioning.status().map(|s| s.as_str().to_string()), lock))
    }

    async fn presign(&self, requests: &[Presign], ttl: Duration, session_name: &str) -> Result<Vec<String>, AwsError> {
        let client = self.signing_client(requests, ttl, session_name).await?;
        let mut urls = Vec::with_capacity(requests.len());
        for request in requests {
            let presigned = match request {
                Presign::Get { bucket, key } => client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .presigned(presigning(ttl)?)
                    .await
                    .map_err(|e| presign_error("s3:GetObject", e))?,
                Presign::Put { bucket, key } => client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .presigned(presigning(ttl)?)
                    .await
                    .map_err(|e| presign_error("s3:PutObject", e))?,
                Presign::UploadPart { bucket, key, upload_id, part_number } => client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(*part_number)
                    .presigned(presigning(ttl)?)
                    .await
                    .map_err(|e| presign_error("s3:UploadPart", e))?,
            };
            urls.push(presigned.uri().to_string());
        }
        Ok(urls)
    }

    async fn put_object(&self, bucket: &str, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), AwsError> {
        self.checked_put(bucket, key, body, content_type).send().await.map_err(|e| AwsError::from_sdk("s3:PutObject", e))?;
        Ok(())
    }

    async fn put_object_once(&self, bucket: &str, key: &str, body: Vec<u8>, content_type: &str) -> Result<Written, AwsError> {
        match self.checked_put(bucket, key, body, content_type).if_none_match("*").send().await {
            Ok(_) => Ok(Written::Created),
            Err(e) => {
                let e = AwsError::from_sdk("s3:PutObject", e);
                if e.http_status == Some(412) || e.code == "PreconditionFailed" { Ok(Written::AlreadyExists) } else { Err(e) }
            }
        }
    }

    async fn protect_object(&self, bucket: &str, key: &str, protection: &ObjectProtection) -> Result<(), AwsError> {
        if let Some((mode, until)) = protection.retention {
            let retention = ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::from(mode.as_str()))
                .retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(until.as_second()))
                .build();
            self.s3
                .put_object_retention()
                .bucket(bucket)
                .key(key)
                .retention(retention)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("s3:PutObjectRetention", e))?;
        }
        if protection.legal_hold {
            self.s3
                .put_object_legal_hold()
                .bucket(bucket)
                .key(key)
                .legal_hold(ObjectLockLegalHold::builder().status(ObjectLockLegalHoldStatus::On).build())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("s3:PutObjectLegalHold", e))?;
        }
        Ok(())
    }

    async fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>, AwsError> {
        let object = self.s3.get_object().bucket(bucket).key(key).send().await.map_err(|e| AwsError::from_sdk("s3:GetObject", e))?;
        let bytes = object.body.collect().await.map_err(|e| AwsError::local("s3:GetObject", "Transport", e.to_string()))?;
        Ok(bytes.to_vec())
    }

    async fn object_size(&self, bucket: &str, key: &str) -> Result<Option<i64>, AwsError> {
        match self.s3.head_object().bucket(bucket).key(key).send().await {
            Ok(o) => Ok(o.content_length()),
            Err(e) => {
                let e = AwsError::from_sdk("s3:HeadObject", e);
                if e.http_status == Some(404) { Ok(None) } else { Err(e) }
            }
        }
    }

    async fn object_sha256(&self, bucket: &str, key: &str, mut observe: impl FnMut(&[u8]) + Send) -> Result<(String, i64), AwsError> {
        let object = self.s3.get_object().bucket(bucket).key(key).send().await.map_err(|e| AwsError::from_sdk("s3:GetObject", e))?;
        let mut body = object.body;
        let mut hasher = Sha256::new();
        let mut size = 0i64;
        while let Some(chunk) = body.try_next().await.map_err(|e| AwsError::local("s3:GetObject", "Transport", e.to_string()))? {
            size += chunk.len() as i64;
            hasher.update(&chunk);
            observe(&chunk);
        }
        Ok((hex::encode(hasher.finalize()), size))
    }

    async fn find_multipart_upload(&self, bucket: &str, key: &str) -> Result<Option<String>, AwsError> {
        let output = self
            .s3
            .list_multipart_uploads()
            .bucket(bucket)
            .prefix(key)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("s3:ListMultipartUploads", e))?;
        Ok(output.uploads().iter().find(|u| u.key() == Some(key)).and_then(|u| u.upload_id()).map(str::to_string))
    }

    async fn create_multipart_upload(&self, bucket: &str, key: &str) -> Result<String, AwsError> {
        let output = self
            .s3
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type("application/octet-stream")
            .customize()
            .config_override(aws_sdk_s3::config::Builder::default().retry_config(super::clients::single_attempt()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("s3:CreateMultipartUpload", e))?;
        output.upload_id().map(str::to_string).ok_or_else(|| AwsError::local("s3:CreateMultipartUpload", "MissingUploadId", "the response carried no upload ID"))
    }

    async fn complete_multipart_upload(&self, bucket: &str, key: &str, upload_id: &str, parts: &[ReportedPart]) -> Result<(), AwsError> {
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts.iter().map(|p| CompletedPart::builder().part_number(p.number).e_tag(&p.etag).build()).collect(),
            ))
            .build();
        self.s3
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(completed)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("s3:CompleteMultipartUpload", e))?;
        Ok(())
    }
}
