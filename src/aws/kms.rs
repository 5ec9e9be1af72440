//! KMS: signs manifest digests with an asymmetric key. (Verifying is `forensic-capture verify`'s, in src/verify.rs.)

use std::future::Future;

use aws_sdk_kms::{
    primitives::Blob,
    types::{MessageType, SigningAlgorithmSpec},
};

use super::AwsError;

/// A signature as KMS returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// The key's ARN (KMS resolves aliases and IDs).
    pub key_arn: String,
    pub algorithm: String,
    pub signature: Vec<u8>,
}

pub trait SignerApi: Send + Sync {
    /// The signing algorithms the key supports.
    fn signing_algorithms(&self, key_id: &str) -> impl Future<Output = Result<Vec<String>, AwsError>> + Send;
    /// Signs a SHA-256 digest (MessageType DIGEST).
    fn sign_digest(&self, key_id: &str, algorithm: &str, digest: &[u8]) -> impl Future<Output = Result<Signed, AwsError>> + Send;
}

#[derive(Clone)]
pub struct SdkKms(pub aws_sdk_kms::Client);

impl SignerApi for SdkKms {
    async fn signing_algorithms(&self, key_id: &str) -> Result<Vec<String>, AwsError> {
        let output = self.0.describe_key().key_id(key_id).send().await.map_err(|e| AwsError::from_sdk("kms:DescribeKey", e))?;
        Ok(output
            .key_metadata()
            .map(|m| m.signing_algorithms().iter().map(|a| a.as_str().to_string()).collect())
            .unwrap_or_default())
    }

    async fn sign_digest(&self, key_id: &str, algorithm: &str, digest: &[u8]) -> Result<Signed, AwsError> {
        let output = self
            .0
            .sign()
            .key_id(key_id)
            .message(Blob::new(digest))
            .message_type(MessageType::Digest)
            .signing_algorithm(SigningAlgorithmSpec::from(algorithm))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("kms:Sign", e))?;
        Ok(Signed {
            key_arn: output.key_id().unwrap_or(key_id).to_string(),
            algorithm: output.signing_algorithm().map(|a| a.as_str().to_string()).unwrap_or_else(|| algorithm.to_string()),
            signature: output.signature().map(|s| s.as_ref().to_vec()).unwrap_or_default(),
        })
    }
}
