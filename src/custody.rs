//! Chain-of-custody decisions, kept pure so they can be tested without AWS: which Object Lock settings an
//! artifact gets, how an EBS Snapshot Lock request is built, which KMS signing algorithm signs the manifest,
//! and the signature document stored beside it.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// S3 Object Lock retention mode (S3 spells them in capitals).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[clap(rename_all = "UPPER")]
#[serde(rename_all = "UPPERCASE")]
pub enum ObjectLockMode {
    /// Users with s3:BypassGovernanceRetention can still delete or shorten it.
    Governance,
    /// Nobody, the root user included, can delete the version or shorten retention until it expires.
    Compliance,
}

impl ObjectLockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectLockMode::Governance => "GOVERNANCE",
            ObjectLockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// EBS Snapshot Lock mode (EC2 spells them in lower case).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
#[clap(rename_all = "lower")]
pub enum SnapshotLockMode {
    Governance,
    Compliance,
}

impl SnapshotLockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotLockMode::Governance => "governance",
            SnapshotLockMode::Compliance => "compliance",
        }
    }
}

/// What Object Lock protection one object gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectProtection {
    /// Retention mode and the instant it ends.
    pub retention: Option<(ObjectLockMode, Timestamp)>,
    pub legal_hold: bool,
}

/// Object Lock settings for an object recorded at `now`; None when nothing is configured.
pub fn object_protection(mode: Option<ObjectLockMode>, retention_days: u32, legal_hold: bool, now: Timestamp) -> Option<ObjectProtection> {
    let retention = mode.map(|m| (m, days_after(now, retention_days)));
    (retention.is_some() || legal_hold).then_some(ObjectProtection { retention, legal_hold })
}

/// The instant `days` whole days after `from`.
pub fn days_after(from: Timestamp, days: u32) -> Timestamp {
    from + SignedDuration::from_hours(24 * i64::from(days))
}

/// The parameters of one EC2 LockSnapshot call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotLockRequest {
    pub snapshot_id: String,
    pub mode: SnapshotLockMode,
    pub duration_days: i32,
    /// Only for compliance mode, and only when non-zero (EC2 rejects a cool-off period in governance mode).
    pub cool_off_hours: Option<i32>,
}

pub fn snapshot_lock_request(snapshot_id: &str, mode: Option<SnapshotLockMode>, duration_days: u32, cool_off_hours: u32) -> Option<SnapshotLockRequest> {
    let mode = mode?;
    let cool_off_hours = (mode == SnapshotLockMode::Compliance && cool_off_hours > 0).then_some(cool_off_hours as i32);
    Some(SnapshotLockRequest { snapshot_id: snapshot_id.into(), mode, duration_days: duration_days as i32, cool_off_hours })
}

/// KMS signing algorithms over SHA-256 digests, in order of preference. Only SHA-256 ones: the digest sent in
/// DIGEST mode must be the one the algorithm names.
const SHA256_SIGNING_ALGORITHMS: [&str; 3] = ["ECDSA_SHA_256", "RSASSA_PSS_SHA_256", "RSASSA_PKCS1_V1_5_SHA_256"];

/// Picks the algorithm for a key from those KMS says it supports.
pub fn signing_algorithm<S: AsRef<str>>(supported: &[S]) -> Option<&'static str> {
    SHA256_SIGNING_ALGORITHMS.into_iter().find(|wanted| supported.iter().any(|s| s.as_ref() == *wanted))
}

pub const SIGNATURE_FORMAT: &str = "forensic-capture-signature/1";
pub const SIGNATURE_SUFFIX: &str = ".sig";

/// The signature stored beside a manifest (`manifest.json.sig`). It names everything needed to check it with
/// KMS Verify (or offline, with the key's public key) without trusting the controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureDocument {
    pub format: String,
    /// The manifest this signs.
    pub manifest_uri: String,
    /// SHA-256 (hex) of the manifest's exact bytes: the digest that was signed.
    pub manifest_sha256: String,
    /// The key's ARN as KMS reported it at signing.
    pub key_id: String,
    pub signing_algorithm: String,
    /// Always DIGEST: KMS signed the SHA-256 above, not the manifest bytes.
    pub message_type: String,
    /// The signature, base64.
    pub signature: String,
    pub signed_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn retention_runs_from_when_the_object_is_recorded() {
        let p = object_protection(Some(ObjectLockMode::Compliance), 30, false, at("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(p.retention, Some((ObjectLockMode::Compliance, at("2026-01-31T00:00:00Z"))));
        assert!(!p.legal_hold);
    }

    #[test]
    fn legal_hold_alone_is_protection_and_nothing_configured_is_none() {
        let p = object_protection(None, 30, true, at("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(p, ObjectProtection { retention: None, legal_hold: true });
        assert_eq!(object_protection(None, 30, false, at("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn snapshot_lock_requests_carry_a_cool_off_only_in_compliance_mode() {
        assert_eq!(snapshot_lock_request("snap-1", None, 30, 24), None);
        let governance = snapshot_lock_request("snap-1", Some(SnapshotLockMode::Governance), 30, 24).unwrap();
        assert_eq!(governance, SnapshotLockRequest { snapshot_id: "snap-1".into(), mode: SnapshotLockMode::Governance, duration_days: 30, cool_off_hours: None });
        let compliance = snapshot_lock_request("snap-1", Some(SnapshotLockMode::Compliance), 3650, 24).unwrap();
        assert_eq!(compliance.cool_off_hours, Some(24));
        assert_eq!(compliance.duration_days, 3650);
        assert_eq!(snapshot_lock_request("snap-1", Some(SnapshotLockMode::Compliance), 1, 0).unwrap().cool_off_hours, None);
    }

    #[test]
    fn signing_prefers_ecdsa_and_refuses_keys_without_a_sha256_algorithm() {
        assert_eq!(signing_algorithm(&["RSASSA_PSS_SHA_512", "RSASSA_PSS_SHA_256", "RSASSA_PKCS1_V1_5_SHA_256"]), Some("RSASSA_PSS_SHA_256"));
        assert_eq!(signing_algorithm(&["ECDSA_SHA_256"]), Some("ECDSA_SHA_256"));
        assert_eq!(signing_algorithm(&["ECDSA_SHA_384"]), None);
        assert_eq!(signing_algorithm::<&str>(&[]), None);
    }

    #[test]
    fn lock_modes_parse_as_operators_write_them() {
        use clap::ValueEnum;
        assert_eq!(ObjectLockMode::from_str("COMPLIANCE", true), Ok(ObjectLockMode::Compliance));
        assert_eq!(ObjectLockMode::from_str("governance", true), Ok(ObjectLockMode::Governance));
        assert_eq!(SnapshotLockMode::from_str("compliance", true), Ok(SnapshotLockMode::Compliance));
        assert_eq!(ObjectLockMode::Governance.as_str(), "GOVERNANCE");
    }
}
