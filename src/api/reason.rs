//! Every stable reason the controller writes: in conditions, step and containment records, release records,
//! Events and the `reason` label of the step metrics. One table, so a reason cannot be misspelt in one place
//! and a new one cannot go undocumented (tests/reference_docs.rs compares docs/reference.md with it).
//!
//! Two families of Event reasons are derived rather than listed, because they name a step or a phase:
//! `<Step>Started` / `<Step>Succeeded` (for example `MemoryStarted`) and the phase names (`Acquiring`, ...).

use std::{fmt, str::FromStr};

macro_rules! reasons {
    ($($name:ident => $meaning:literal,)*) => {
        /// A stable CamelCase reason. The wire form is the variant's name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $(#[doc = $meaning] $name,)*
        }

        impl Reason {
            /// Every reason, in the order of the table.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }

            /// One line saying what the reason means, as docs/reference.md shows it.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Reason::$name => $meaning,)*
                }
            }
        }
    };
}

reasons! {
    // The target, before any step.
    InvalidTarget => "spec.target names no instance",
    NodeNotFound => "the Node named by spec.target.nodeName does not exist in this cluster",
    NodeNotOnEc2 => "the Node's providerID does not name an EC2 instance (aws:///<zone>/<instance-id>)",
    PodNotFound => "the pod named by spec.target.podRef does not exist in this cluster",
    CheckpointNotSupported => "the pod's node cannot checkpoint containers: its kubelet has no checkpoint API (the ContainerCheckpoint feature) or its runtime does not implement CRI CheckpointContainer",
    CheckpointFailed => "the container runtime tried to checkpoint a container and failed (CRIU's error is in the message); the other containers and steps go on",
    ContainerNotRunning => "a container of the pod target was not running, so it had nothing to checkpoint",
    CheckpointLeftOnNode => "a checkpoint archive is still on the node (its upload was not verified, or its removal failed): it holds the container's memory and secrets",
    PodNotScheduled => "the pod named by spec.target.podRef is not on a node yet (no spec.nodeName): there is no instance to capture",
    InstanceNotFound => "the instance does not exist in the account and region (or disappeared during the capture)",
    InstanceTerminated => "the instance is terminated or shutting down: nothing is left to capture or contain",
    TargetLookupFailed => "EC2 refused to describe the instance or its instance type; the message has the AWS error",
    TargetAccountAccessDenied => "the role in the instance's account (spec.target.accountId) could not be assumed; the message names the account, the role and the STS error",
    AccessDenied => "AWS refused the controller's credentials or permissions; the message names the operation",
    // Why a step did not run (the planner).
    InstanceNotRunning => "volatile data and memory need a running instance; the instance is stopped or pending",
    NotSsmManaged => "the instance is not an SSM managed node with an online agent, so no command can reach it",
    UnsupportedPlatform => "the instance runs Windows; volatile data and memory acquisition exist for Linux only",
    HeldAfterAcquisitionFailure => "acquisition did not complete and onAcquisitionFailure is Hold: the instance is left as it is",
    CaptureDeleted => "the ForensicCapture was deleted before this step started",
    // The evidence bucket.
    EvidenceBucketNotConfigured => "no evidence bucket: neither spec.evidence.bucket nor --evidence-bucket is set",
    EvidenceBucketNotFound => "the evidence bucket does not exist",
    EvidenceBucketAccessDenied => "the controller may not use the evidence bucket",
    EvidenceBucketUnavailable => "S3 refused the evidence bucket check for another reason; the message has the AWS error",
    // SSM commands.
    PresignFailed => "the presigned URLs for the instance could not be made (the presign role could not be assumed)",
    InvalidCommand => "the command for the instance could not be built (a value would break the script's quoting)",
    CommandFailed => "the SSM command failed; the message has its exit code and the end of its output",
    CommandTimedOut => "the SSM command exceeded its execution timeout",
    CommandDeliveryTimedOut => "SSM could not deliver the command: the agent stayed offline",
    CommandCancelled => "the SSM command was cancelled",
    MissingResult => "the command succeeded but did not report the result line the controller checks",
    // Uploaded artifacts.
    ArtifactMissing => "an object the instance reported uploading is not in the evidence bucket",
    ArtifactChecksumMismatch => "the SHA-256 the controller computed from S3 differs from the one the instance streamed",
    UploadFailed => "the memory image's multipart upload or upload plan could not be created",
    UploadIncomplete => "the memory upload's parts do not add up to what the instance streamed",
    // Memory acquisition on the instance (reported by scripts/memory.sh).
    AvmlNotConfigured => "no AVML location and SHA-256 are configured for the instance's architecture",
    AvmlDownloadFailed => "the instance could not download AVML",
    AvmlChecksumMismatch => "the AVML the instance downloaded has the wrong SHA-256, so it was not run",
    UnsupportedArchitecture => "the instance's architecture is not one AVML runs on (x86_64, arm64), or not the one configured",
    MemorySizeUnknown => "the instance type's memory size is unknown, so the upload cannot be planned",
    MemoryExceedsUploadLimits => "the instance's memory image would not fit the upload plan (S3's 10,000 parts of at most 5 GiB, with the plan's margin)",
    KernelLockdown => "kernel lockdown closes every memory source to every tool",
    NoMemorySource => "none of /proc/kcore, /dev/crash and /dev/mem can be read",
    ToolNotExecutable => "AVML could not be executed on the instance (noexec /dev/shm and no tmpfs /run)",
    AcquisitionFailed => "AVML failed or wrote no data; the message has its error output",
    PlanInvalid => "the upload plan the instance read lacks a part size, the parts URL or part URLs",
    PlanDownloadFailed => "the instance could not read its upload plan",
    PlanExpired => "the next upload plan did not appear before the current URLs expired (the controller was away too long)",
    PlanExhausted => "the memory image is larger than the parts planned for the instance type",
    PartUploadFailed => "a memory part could not be uploaded",
    PartsListUploadFailed => "the list of uploaded parts could not be written",
    // The memory image quality gate.
    ImageMalformed => "the memory image is not a LiME image",
    ImageTruncated => "the memory image ends inside a LiME range",
    ImageMostlyZero => "nearly every captured page is zeros: the image holds no memory contents",
    KernelBannerMissing => "the image does not hold the kernel banner the instance reported",
    ImageIncomplete => "the image holds less of the instance's memory than --memory-min-coverage-percent",
    // Disk.
    SnapshotFailed => "CreateSnapshots was refused, or a snapshot ended in state error",
    NoVolumes => "the instance has no EBS volumes to snapshot",
    // Forensic-account copies.
    NoSnapshotsToCopy => "the disk step did not complete, so no snapshot was copied to the forensic account",
    ForensicCopyNotConfigured => "spec.disk.forensicCopy asks for copies but names no forensic account or KMS key, and the controller sets no default",
    ForensicAccountAccessDenied => "the forensic account's role could not be assumed",
    SnapshotShareFailed => "a snapshot could not be re-encrypted to the share key, or shared with the forensic account",
    ForensicCopyFailed => "the forensic account could not copy a snapshot, or its copy ended in state error",
    // Write-once protection (the evidence is stored, not locked).
    ObjectLockFailed => "S3 refused the configured Object Lock retention or legal hold",
    SnapshotLockFailed => "EC2 refused the configured EBS Snapshot Lock",
    // Containment.
    ContainmentIncomplete => "at least one containment action failed; the message lists what was applied and what was not",
    NoVpc => "the instance is not in a VPC, so security groups cannot isolate it",
    AwsRequestRejected => "AWS rejected a request for a reason other than permissions or a missing object; the message has the AWS error code",
    // Sealing (Warning Events; the capture still completes).
    ManifestNotWritten => "the manifest could not be written",
    ManifestSigningFailed => "the manifest could not be signed with KMS, or its signature not written",
    VolatilitySymbolsNotBuilt => "no Volatility symbols could be built from the kernel's symbol material",
    // Waiting (the Ready condition while the capture cannot progress).
    WaitingForInstanceLock => "another capture of the same instance is running; this one starts when it ends",
    WaitingForCapacity => "as many captures as --max-concurrent-acquisitions allows are acquiring in this account and region; this one starts when a place frees up",
    RetryingAfterError => "a transient error (throttling, 5xx, timeout, expired credentials, clock skew) recurs; retried with backoff",
    // Condition reasons while nothing is wrong.
    NotRequested => "the spec does not ask for the steps of this condition",
    NotStarted => "the steps of this condition have not started",
    InProgress => "the steps of this condition are running",
    Acquired => "volatile data and memory were acquired",
    Snapshotted => "every EBS snapshot is complete",
    Isolated => "containment was applied",
    ForensicCopied => "every snapshot was copied into the forensic account under its key",
    Completed => "every requested step completed",
    NoFailure => "no requested step failed",
    // Dry runs (spec.dryRun).
    Planned => "a dry run recorded its plan in status.plan; nothing in AWS was changed",
    DryRun => "a dry run runs no step: status.plan says what this condition's steps would do",
    // Finding-driven captures (CapturePolicy, CaptureApproval).
    AwaitingApproval => "the capture was created by a CapturePolicy in Approval mode and waits for a CaptureApproval naming it; nothing is done in AWS until then",
    ApprovalNotRequired => "the CaptureApproval names a capture that does not wait for approval (created by hand or by an Automatic policy)",
    AlreadyApproved => "the CaptureApproval names a capture that another approval already let start",
    // Readiness (ForensicReadiness, forensic-capture readiness).
    ContainmentStateUnknown => "readiness: a read containment needs was refused (the message names the operation and the AWS error)",
    VersioningNotEnabled => "readiness: the evidence bucket does not have versioning enabled",
    ObjectLockNotEnabled => "readiness: Object Lock is configured (--object-lock-mode) but the evidence bucket does not have it enabled",
    SigningKeyUnusable => "readiness: the manifest signing key cannot be described, or offers no SHA-256 signing algorithm",
    PermissionsMissing => "readiness: an action the controller's IAM policy grants (or the target role's, in another account) is not allowed to that identity; the message lists each one with the simulation's decision or the dry run's error, and says which method was used",
    PermissionsUnverified => "readiness: the permissions could be neither simulated (iam:SimulatePrincipalPolicy) nor dry-run (no instance to run EC2 dry runs against); the message says why",
    // ContainmentRelease (CaptureNotFound also for CaptureApproval).
    CaptureNotFound => "the ForensicCapture to release or approve does not exist",
    CaptureInProgress => "the capture is still running; the release waits until it ends",
    NothingToRelease => "the capture ended without applying containment",
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> Self {
        reason.as_str().to_string()
    }
}

/// A name that is not in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a known reason")]
pub struct UnknownReason(pub String);

impl FromStr for Reason {
    type Err = UnknownReason;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == s).ok_or_else(|| UnknownReason(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for reason in Reason::ALL {
            assert_eq!(reason.as_str().parse::<Reason>(), Ok(*reason));
            assert!(!reason.meaning().is_empty());
        }
        let mut names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Reason::ALL.len());
        assert!("Nonsense".parse::<Reason>().is_err());
    }

    #[test]
    fn every_reason_the_scripts_report_is_known() {
        let mut checked = 0;
        for script in [crate::acquisition::MEMORY_SCRIPT, crate::acquisition::VOLATILE_SCRIPT] {
            for word in script.split_whitespace().collect::<Vec<_>>().windows(2) {
                if word[0] == "fail" && word[1].starts_with(|c: char| c.is_ascii_uppercase()) {
                    let reported = crate::acquisition::script_reason(word[1]);
                    assert_ne!(reported, Reason::CommandFailed, "the script's reason {} is not in the table", word[1]);
                    checked += 1;
                }
            }
        }
        assert!(checked >= 10, "the scripts' `fail <Reason>` calls were found ({checked})");
    }
}
