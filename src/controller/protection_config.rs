//! Settings that make the evidence record tamper-evident and write-once: the manifest's KMS signature, S3
//! Object Lock on every artifact, EBS Snapshot Lock on every snapshot. All off by default: each needs set-up
//! outside the controller (an asymmetric KMS key, a bucket created with Object Lock, IAM grants).

use crate::custody::{ObjectLockMode, SnapshotLockMode};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ProtectionConfig {
    /// KMS asymmetric key (ID, ARN or alias) that signs each capture's manifest (KMS Sign, digest mode). The
    /// signature is stored beside the manifest as manifest.json.sig. Unset: manifests are not signed.
    #[arg(long, env = "FC_KMS_SIGNING_KEY_ID")]
    pub kms_signing_key_id: Option<String>,

    /// S3 Object Lock retention mode for every artifact and the manifest (GOVERNANCE or COMPLIANCE). The
    /// bucket must have been created with Object Lock enabled. Unset: no retention is set by the controller.
    #[arg(long, env = "FC_OBJECT_LOCK_MODE", value_enum, ignore_case = true)]
    pub object_lock_mode: Option<ObjectLockMode>,

    /// Object Lock retention period, in days from when each object is recorded.
    #[arg(long, env = "FC_OBJECT_LOCK_RETENTION_DAYS", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub object_lock_retention_days: u32,

    /// Put an Object Lock legal hold on every artifact and the manifest (independent of retention).
    #[arg(long, env = "FC_OBJECT_LOCK_LEGAL_HOLD", default_value_t = false)]
    pub object_lock_legal_hold: bool,

    /// EBS Snapshot Lock mode for every snapshot (governance or compliance). Unset: snapshots are not locked.
    #[arg(long, env = "FC_SNAPSHOT_LOCK_MODE", value_enum, ignore_case = true)]
    pub snapshot_lock_mode: Option<SnapshotLockMode>,

    /// EBS Snapshot Lock duration in days (1 to 36,500).
    #[arg(long, env = "FC_SNAPSHOT_LOCK_DURATION_DAYS", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub snapshot_lock_duration_days: u32,

    /// Cooling-off period for compliance-mode snapshot locks, in hours (0 to 72): during it the lock can still
    /// be changed by an authorised user, after it nobody can. 0 locks at once.
    #[arg(long, env = "FC_SNAPSHOT_LOCK_COOL_OFF_HOURS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=72))]
    pub snapshot_lock_cool_off_hours: u32,
}
