//! `ForensicCapture`: the request (spec, immutable) and the audit record (status).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{StepSpecs, Steps};

/// Preserve evidence from one EC2 instance (volatile data, memory, EBS snapshots), then contain it.
///
/// The spec is a record of what was asked and cannot change after creation; create a new capture instead.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "forensic-capture.dev",
    version = "v1alpha1",
    kind = "ForensicCapture",
    namespaced,
    shortname = "fc",
    status = "ForensicCaptureStatus",
    doc = "Preserve evidence from an EC2 instance (volatile data, memory, EBS snapshots), then isolate it. The resource is the audit record of what was done and where the evidence is.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Progress of the capture"),
    printcolumn(name = "Instance", type_ = "string", json_path = ".status.target.instanceId", description = "EC2 instance"),
    printcolumn(name = "Case", type_ = "string", json_path = ".spec.caseId", description = "Incident or case identifier"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Every requested step completed"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1, description = "Why the capture is (not) ready"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: a capture is a record; create a new ForensicCapture instead"))]
#[x_kube(validation = Rule::new("!has(self.pod) || has(self.target.podRef)").message("spec.pod applies to a pod target: set target.podRef, or leave spec.pod out"))]
#[serde(rename_all = "camelCase")]
pub struct ForensicCaptureSpec {
    /// Incident or case identifier. Used in S3 keys and AWS tags, so limited to letters, digits, '.', '_'
    /// and '-' (1 to 64 characters, starting with a letter or digit).
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub case_id: String,

    /// The EC2 instance to capture.
    pub target: Target,

    /// The steps to run and their settings: memory, volatile, disk, isolation (see step.rs).
    #[serde(flatten)]
    pub steps: StepSpecs,

    /// Where evidence is stored; the controller's defaults apply to fields left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidenceLocation>,

    /// Plan only: resolve the target and record in status.plan every step and containment action a capture
    /// would run, with the state it would change, reading AWS without changing anything (no command, no
    /// snapshot, no group, no tag, no manifest). The capture ends in phase Planned. Like the rest of the spec
    /// it cannot change: to capture for real, create a new ForensicCapture.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,

    /// Wait for a CaptureApproval naming this capture before doing anything in AWS (phase Pending, reason
    /// AwaitingApproval). Set by a CapturePolicy in Approval mode; a capture created by hand leaves it out and
    /// never waits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requires_approval: bool,

    /// The finding that led to this capture, when a CapturePolicy created it; recorded in the manifest as the
    /// capture's trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<super::FindingTrigger>,

    /// For a target.podRef: container checkpoints, cordoning, and whether the node's instance is contained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodCaptureSpec>,
}

/// Which instance to capture: exactly one of `instanceId`, `nodeName` or `podRef`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("[has(self.instanceId), has(self.nodeName), has(self.podRef)].filter(x, x).size() == 1").message("set exactly one of target.instanceId, target.nodeName and target.podRef"))]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// EC2 instance ID, for example i-0123456789abcdef0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^i-([0-9a-f]{8}|[0-9a-f]{17})$"))]
    pub instance_id: Option<String>,

    /// Name of a Node of this cluster; its instance is found from the Node's spec.providerID
    /// (aws:///<zone>/<instance-id>).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub node_name: Option<String>,

    /// A pod of this cluster: its Node's instance is captured, with the pod's context (its containers, their
    /// images and IDs, its processes, cgroups and writable layers), and containment applies to the pod
    /// (spec.pod says how).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_ref: Option<PodRef>,

    /// AWS region of the instance; the controller's default region when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-\d$"))]
    pub region: Option<String>,

    /// AWS account of the instance, when it is not the controller's own: the controller reaches it through
    /// the target role it assumes there (--target-role-arn-template, --target-role). Left out: the
    /// controller's own account, with its own identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^\d{12}$"))]
    pub account_id: Option<String>,
}

/// A pod, by namespace and name.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    /// The pod's namespace.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// The pod's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What to do about a pod target, besides capturing its node's evidence.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodCaptureSpec {
    /// Checkpoint each container through the kubelet's checkpoint API (its memory, open files and writable
    /// layer) and keep the archives as ContainerCheckpoint artifacts (default false). They hold the
    /// container's secrets; each is removed from the node once its upload is verified.
    #[serde(default)]
    pub checkpoint: bool,
    /// Cordon the node during containment (default false), so nothing new is scheduled beside the pod;
    /// uncordoned on release if this capture cordoned it.
    #[serde(default)]
    pub cordon: bool,
    /// Also contain the node's EC2 instance (security groups, load balancers, Auto Scaling and the rest of the
    /// playbook). Default false: isolating a node cuts every pod on it, not just this one.
    #[serde(default)]
    pub isolate_node: bool,
}

/// Turns one evidence step on or off.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepToggle {
    /// Whether to run this step (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for StepToggle {
    fn default() -> Self {
        StepToggle { enabled: true }
    }
}

/// Disk evidence.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.forensicCopy) || self.enabled").message("forensicCopy copies the capture's snapshots: it needs disk.enabled"))]
pub struct DiskSpec {
    /// Whether to snapshot the instance's EBS volumes (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Leave the root (boot) volume out of the snapshot set (default false).
    #[serde(default)]
    pub exclude_boot_volume: bool,
    /// Hand the snapshots to a forensic account: once they complete (after containment, so that copying never
    /// delays it), each is copied into that account and region and encrypted with its KMS key. A snapshot
    /// encrypted with another key is first re-encrypted in the instance's account to the share key, shared
    /// with the forensic account, copied there, and unshared. Fields left out come from the controller
    /// (--forensic-account-id, --forensic-region, --forensic-kms-key-id); `forensicCopy: {}` uses them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forensic_copy: Option<ForensicCopySpec>,
}

impl Default for DiskSpec {
    fn default() -> Self {
        DiskSpec { enabled: true, exclude_boot_volume: false, forensic_copy: None }
    }
}

/// Where the disk evidence is handed over to.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ForensicCopySpec {
    /// The forensic account (12 digits), reached through --forensic-role-arn-template unless it is the
    /// controller's own. Default: --forensic-account-id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^\d{12}$"))]
    pub account_id: Option<String>,
    /// Region the copies are made in. Default: --forensic-region, else the instance's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-\d$"))]
    pub region: Option<String>,
    /// KMS key (ARN, or ID or alias in the forensic account and region) the copies are encrypted with.
    /// Default: --forensic-kms-key-id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub kms_key_id: Option<String>,
    /// Customer managed KMS key (ARN) that snapshots under any other key are re-encrypted to in the instance's
    /// account before they are shared; its key policy must let the instance's account encrypt with it and the
    /// forensic account decrypt with it. Default: --forensic-share-kms-key-id, else kmsKeyId when it is an ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub share_kms_key_id: Option<String>,
}

/// Network containment.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IsolationSpec {
    /// Whether to isolate the instance after the evidence steps (default true).
    #[serde(default = "yes")]
    pub enabled: bool,

    /// Source CIDRs allowed in (responder access), all ports: IPv4 or IPv6 (such as 203.0.113.7/32 or
    /// 2001:db8:1234::/48), with no host bits set. A prefix length of 0 (0.0.0.0/0, ::/0) is refused: it admits
    /// every address, and isolation that admits everyone is no isolation. Empty: no ingress at all. Egress is
    /// always denied.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c) && cidr(c) == cidr(c).masked())").message("each entry must be a CIDR with no host bits set, such as 203.0.113.7/32"))]
    #[x_kube(validation = Rule::new("self.all(c, !isCIDR(c) || cidr(c).prefixLength() != 0)").message("an ingress CIDR with prefix length 0 (0.0.0.0/0, ::/0) admits every address: isolation that admits everyone is no isolation; name the responder networks instead"))]
    #[schemars(length(max = 20), inner(length(max = 43)))]
    pub allow_ingress_cidrs: Vec<String>,

    /// What to do when volatile or memory acquisition fails: Isolate (default: containment wins over
    /// evidence completeness) or Hold (leave the instance as it is for a responder to decide).
    #[serde(default)]
    pub on_acquisition_failure: AcquisitionFailurePolicy,

    /// How to take the instance out of its Auto Scaling group, if it has one: Standby (default; it stays a
    /// member, out of service) or Detach (it leaves the group). Either way the desired capacity is lowered by
    /// one, on record, so the group launches no replacement, and scale-in protection is set first.
    #[serde(default)]
    pub auto_scaling: AutoScalingExit,

    /// Also disassociate the instance's Elastic IPs (recorded, and re-associated on release). Default false:
    /// the address is then free for someone else to take until release.
    #[serde(default)]
    pub disassociate_elastic_ips: bool,

    /// Containment of the instance role's credentials (opt-in: it can break things a responder still needs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialContainment>,
}

/// What to do about credentials the instance holds.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CredentialContainment {
    /// ARN of an instance profile (prepared by the operator, with a deny-all role) to swap in for the
    /// instance's own; the previous one is recorded and restored on release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::\d{12}:instance-profile/.+$"))]
    pub replace_instance_profile: Option<String>,
    /// Add a deny-all policy to the instance's role for sessions issued before containment
    /// (aws:TokenIssueTime), so credentials already taken from the instance stop working. Kept on release:
    /// new sessions are unaffected, and stolen old ones should stay dead.
    #[serde(default)]
    pub revoke_sessions: bool,
}

impl Default for IsolationSpec {
    fn default() -> Self {
        IsolationSpec {
            enabled: true,
            allow_ingress_cidrs: vec![],
            on_acquisition_failure: Default::default(),
            auto_scaling: AutoScalingExit::Standby,
            disassociate_elastic_ips: false,
            credentials: None,
        }
    }
}

/// How containment takes an instance out of its Auto Scaling group.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AutoScalingExit {
    /// EnterStandby: the instance stays in the group, out of service.
    #[default]
    Standby,
    /// DetachInstances: the instance leaves the group.
    Detach,
}

/// What isolation does after a failed acquisition step.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AcquisitionFailurePolicy {
    /// Isolate anyway.
    #[default]
    Isolate,
    /// Do not isolate; a responder decides.
    Hold,
}

/// S3 location for the artifacts.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceLocation {
    /// Evidence bucket; the controller's --evidence-bucket when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))]
    pub bucket: Option<String>,
    /// Key prefix; the controller's --evidence-prefix when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9!_.*'()/-]{0,200}$"))]
    pub prefix: Option<String>,
}

fn yes() -> bool {
    true
}

/// What the controller did and found. Written only by the controller.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ForensicCaptureStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Progress, derived from the conditions: Pending, Acquiring, Snapshotted, Isolated, Completed or Failed;
    /// Planned for a dry run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Acquired, Snapshotted, Isolated, Ready and Failed, with stable CamelCase reasons.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Facts about the instance, resolved before any step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetFacts>,

    /// Every piece of evidence: S3 objects and EBS snapshots.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub artifacts: Vec<Artifact>,

    /// Per-step progress, written before each side effect whose result cannot be looked up again.
    #[serde(default)]
    pub steps: Steps,

    /// Containment applied, with the prior state needed to release it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<IsolationRecord>,

    /// Container checkpoints of a pod target (spec.pod.checkpoint), one per container, from the request to
    /// the kubelet to the archive's removal from the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["container"]))]
    pub checkpoints: Vec<CheckpointRecord>,

    /// When the controller started acting on this capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// When every step had reached an end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,

    /// The CaptureApproval that let a capture with spec.requiresApproval start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<super::ApprovalRecord>,

    /// A dry run's plan (spec.dryRun): what a capture would do, and the state it would change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<super::CapturePlan>,
}

/// Progress of a capture, for people; conditions carry the detail.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not started, or waiting (for the instance lock, for example).
    Pending,
    /// Volatile data and memory are being acquired.
    Acquiring,
    /// Disk snapshots are complete.
    Snapshotted,
    /// The instance is isolated.
    Isolated,
    /// Every requested step completed and isolation was not requested.
    Completed,
    /// The capture stopped or ended with a requested step not done; see the Failed condition.
    Failed,
    /// A dry run (spec.dryRun) ended: status.plan says what a capture would do; nothing was changed.
    Planned,
}

/// Instance facts, as resolved from EC2.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetFacts {
    /// EC2 instance ID.
    pub instance_id: String,
    /// AWS account that owns the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Region.
    pub region: String,
    /// Availability zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// VPC of the primary network interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    /// CPU architecture (x86_64, arm64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Platform (Linux/UNIX, Windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Instance type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Memory of the instance type, in MiB; sizes the memory image upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<i64>,
    /// Instance state when resolved (running, stopped, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The kernel banner the instance reported (/proc/version) in the volatile step: the kernel to analyse
    /// its memory with, and the banner the memory image is expected to hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_banner: Option<String>,
    /// Whether the instance is an SSM managed node with an online agent; absent when no requested step needs
    /// the agent (SSM is then not asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssm_managed: Option<bool>,
    /// Why SSM could not be asked whether the instance is a managed node, when it refused the controller
    /// (the operation and the AWS error): volatile data and memory are then skipped as AccessDenied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssm_access_denied: Option<String>,
    /// The Node this instance was resolved from, for nodeName and podRef targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The pod, for podRef targets, as it was when the capture resolved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodFacts>,
}

/// A pod target as the API server described it.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodFacts {
    pub namespace: String,
    pub name: String,
    /// The pod's UID: its cgroups and its containers' sandbox are named by it on the node.
    pub uid: String,
    /// Pod phase when resolved (Pending, Running, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The pod's IP addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// Its ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Every container (init and ephemeral ones included), with what the kubelet reports of it.
    #[serde(default)]
    pub containers: Vec<ContainerFacts>,
}

/// One container of a pod target.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerFacts {
    pub name: String,
    /// The image as the pod spec names it.
    pub image: String,
    /// The image the runtime runs, by digest (containerStatuses[].imageID), once it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The runtime's container ID (containerd://<id>), once it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Running, Waiting or Terminated, as the kubelet last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Init, Regular or Ephemeral.
    pub kind: String,
}

/// One piece of evidence.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Unique name within the capture (memory, volatile, symbols, snapshot-vol-...).
    pub name: String,
    /// Kind of evidence.
    #[serde(rename = "type")]
    pub kind: ArtifactType,
    /// s3://bucket/key, or the snapshot ARN.
    pub uri: String,
    /// SHA-256 of the object's bytes (hex), computed while streaming on the instance and checked by the
    /// controller. Absent for snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Size in bytes (for snapshots: the volume size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// When the acquisition of the artifact began (the step's start; for snapshots, EC2's start time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the artifact was complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    /// Available, or Pending while a snapshot completes.
    pub state: String,
    /// For snapshots: the source volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_volume_id: Option<String>,
    /// Write-once protection the controller applied (S3 Object Lock, EBS Snapshot Lock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<ArtifactLock>,
    /// For signatures: the KMS key (ARN) that signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// For memory images: what the quality gate found while re-hashing the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageQuality>,
    /// For snapshot copies: what was copied, where the copy is and under which key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<SnapshotCopy>,
    /// For container checkpoints: the pod's container it was taken of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ArtifactContainer>,
}

/// A snapshot copy: the forensic account's copy, or the re-encrypted copy made to share it.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotCopy {
    /// Forensic (the evidence handed over) or Shareable (re-encrypted in the instance's account to the share
    /// key, so that it could be shared; kept, never deleted by the controller).
    pub purpose: String,
    /// The evidence snapshot (in the instance's account) that this copy holds.
    pub source_snapshot_id: String,
    /// The snapshot CopySnapshot was given, when it is not the evidence snapshot itself: its Shareable copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_from_snapshot_id: Option<String>,
    /// The account the copy is in (absent: the controller's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The region the copy is in.
    pub region: String,
    /// The KMS key the copy is encrypted with, as EC2 reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// For Forensic copies: when the share of the snapshot copied from, with the forensic account, was
    /// removed (absent while it may still be shared, and when the forensic account is the instance's own, so
    /// that nothing was shared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_removed_at: Option<Time>,
}

/// What a memory image holds, measured by the controller's quality gate as it re-hashes the uploaded image.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageQuality {
    /// LiME ranges in the image.
    pub ranges: i64,
    /// Bytes of physical memory the image holds (headers excluded).
    pub captured_bytes: i64,
    /// Memory of the instance type, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
    /// capturedBytes as a share of memoryBytes, in percent (one decimal). AVML leaves out 16 MiB blocks that are
    /// all zeros, so this is below 100 on most instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage_percent: Option<f64>,
    /// Share of the captured 4 KiB pages that are all zeros, in percent (one decimal).
    pub zero_page_percent: f64,
    /// The kernel banner found in the image ("Linux version ..."): the kernel to analyse it with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_banner: Option<String>,
}

impl Artifact {
    /// An S3 object, complete now, with its SHA-256 and size.
    pub fn s3_object(name: &str, kind: ArtifactType, uri: String, sha256: String, size_bytes: i64) -> Self {
        Artifact {
            name: name.into(),
            kind,
            uri,
            sha256: Some(sha256),
            size_bytes: Some(size_bytes),
            started_at: None,
            created_at: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            state: "Available".into(),
            source_volume_id: None,
            lock: None,
            key_id: None,
            image: None,
            copy: None,
            container: None,
        }
    }
}

/// One container's checkpoint.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRecord {
    /// The container's name in the pod.
    pub container: String,
    /// The runtime's container ID (containerd://...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The image it runs, by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// When the kubelet was asked for the checkpoint (saved before asking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<Time>,
    /// The archive the kubelet wrote on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_path: Option<String>,
    /// Why there is no checkpoint of this container, when there is none (a stable reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the kubelet or the runtime said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The artifact the archive became, once its upload was verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    /// When the archive was removed from the node (only after its upload was verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<Time>,
}

/// The container a ContainerCheckpoint artifact was taken of.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactContainer {
    /// Namespace/name of the pod.
    pub pod: String,
    /// The container's name.
    pub name: String,
    /// The runtime's container ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The image it ran, by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

/// Write-once protection of one artifact.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactLock {
    /// Object Lock retention mode (GOVERNANCE, COMPLIANCE) or the snapshot lock state EC2 reported
    /// (governance, compliance, compliance-cooloff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// When the retention or lock ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Time>,
    /// S3 Object Lock legal hold is on.
    #[serde(default)]
    pub legal_hold: bool,
}

/// Kind of artifact.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArtifactType {
    /// LiME memory image.
    MemoryImage,
    /// Volatile data archive.
    VolatileData,
    /// Kernel symbol material (uname, os-release, System.map, BTF).
    KernelSymbols,
    /// EBS snapshot.
    EbsSnapshot,
    /// Copy of an EBS snapshot (see `copy`): in the forensic account, or re-encrypted to be shared with it.
    EbsSnapshotCopy,
    /// Per-capture evidence manifest.
    Manifest,
    /// KMS signature of the manifest.
    ManifestSignature,
    /// A container's checkpoint archive (CRIU image, its writable layer and spec), taken through the
    /// kubelet's checkpoint API; `container` and `imageId` name it.
    ContainerCheckpoint,
    /// Volatility 3 symbols (ISF, xz-compressed JSON) for exactly the captured kernel, built by the controller
    /// from the kernel's own BTF, symbol addresses and banner.
    VolatilitySymbols,
}

/// Where one step stands.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// Running, Succeeded, Failed or Skipped.
    pub state: StepState,
    /// Stable reason for Failed or Skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail, naming the instance and the AWS error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// SSM command ID, when the step runs a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// S3 multipart upload ID of the memory image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    /// Part size of the memory upload, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_size_bytes: Option<i64>,
    /// When the controller asked AWS to create what this step's result is found by (its SSM command, its
    /// snapshot set), saved before the call: after a restart the result is looked up again, and not created a
    /// second time, until EC2's and SSM's eventually consistent lookups have had time to show it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_requested_at: Option<Time>,
    /// Memory only: the newest upload plan written (plan N holds fresh presigned URLs and names plan N+1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_generation: Option<i32>,
    /// Memory only: when the controller writes the next upload plan, if the upload is still running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_renew_at: Option<Time>,
    /// When the step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the step ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

/// State of one step.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StepState {
    /// Started and not finished.
    #[default]
    Running,
    /// Done.
    Succeeded,
    /// Ended without its result.
    Failed,
    /// Not attempted, because it could not work (the reason says why).
    Skipped,
}

impl StepState {
    pub fn is_terminal(self) -> bool {
        !matches!(self, StepState::Running)
    }
}

/// Containment record: what was applied and what was there before, so it can be released.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IsolationRecord {
    /// The isolation security group (no egress, ingress only from allowIngressCidrs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_id: Option<String>,
    /// The allow-all group each interface passes through first, so connections tracked under the old rules
    /// become untracked and are then cut by the isolation group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition_group_id: Option<String>,
    /// Security groups of each network interface before isolation, recorded before the change.
    #[serde(default)]
    pub previous: Vec<InterfaceGroups>,
    /// Termination settings before the safeguards were applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination: Option<TerminationRecord>,
    /// Auto Scaling membership before the instance was taken out of service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_scaling: Option<AutoScalingRecord>,
    /// Load balancer target groups the instance was registered in, before deregistration.
    #[serde(default)]
    pub target_groups: Vec<TargetRegistration>,
    /// Classic Load Balancers the instance was registered with, before deregistration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classic_load_balancers: Vec<String>,
    /// Elastic IPs disassociated (when the spec asks), to re-associate on release.
    #[serde(default)]
    pub elastic_ips: Vec<ElasticIpAssociation>,
    /// Credential containment applied, with the instance profile that was there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialRecord>,
    /// Pod quarantine (pod targets): the label and NetworkPolicy applied, and the label value before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_quarantine: Option<PodQuarantineRecord>,
    /// The node cordoned (pod targets with spec.pod.cordon), and whether it was already unschedulable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_cordon: Option<NodeCordonRecord>,
    /// Each containment action in playbook order, with its outcome.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub actions: Vec<ContainmentAction>,
    /// When isolation was complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<Time>,
}

/// A pod's quarantine: what was applied, and the state before, for release.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodQuarantineRecord {
    pub namespace: String,
    pub name: String,
    /// The pod's UID: release touches this pod only, not a later one of the same name.
    pub uid: String,
    /// The label set on the pod (forensic-capture.dev/quarantine=<capture UID>).
    pub label: String,
    /// That label's value before, when the pod already had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_before: Option<String>,
    /// The NetworkPolicy that selects the pod by that label and denies everything but ingress from
    /// allowIngressCidrs.
    pub network_policy: String,
    /// Other NetworkPolicies that also select the pod when it was quarantined: policies add up, so what
    /// they admit is still admitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_policies: Vec<String>,
}

/// A node cordoned by containment.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeCordonRecord {
    pub node_name: String,
    /// spec.unschedulable before: a node that was already cordoned is left cordoned on release.
    pub was_unschedulable: bool,
}

/// Termination settings as they were.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TerminationRecord {
    /// DisableApiTermination before.
    pub disable_api_termination: bool,
    /// InstanceInitiatedShutdownBehavior before (stop or terminate).
    pub shutdown_behavior: String,
    /// DeleteOnTermination of each attached EBS volume before.
    #[serde(default)]
    pub volumes: Vec<VolumeTermination>,
}

/// One attached volume's DeleteOnTermination flag.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VolumeTermination {
    /// Device name, for example /dev/xvda.
    pub device_name: String,
    /// EBS volume ID.
    pub volume_id: String,
    /// Whether the volume was deleted with the instance.
    pub delete_on_termination: bool,
}

/// Auto Scaling membership as it was.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AutoScalingRecord {
    /// Auto Scaling group name.
    pub group_name: String,
    /// Lifecycle state before (InService, ...).
    pub lifecycle_state: String,
    /// Scale-in protection before.
    pub protected_from_scale_in: bool,
    /// Desired capacity before; Standby or Detach with decrement lowers it by one, on record.
    pub desired_capacity: i32,
    /// How the instance was taken out: Standby or Detach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<AutoScalingExit>,
}

/// A target group registration as it was.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetRegistration {
    /// Target group ARN.
    pub target_group_arn: String,
    /// Registered port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// An Elastic IP association as it was.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ElasticIpAssociation {
    /// Allocation ID of the address.
    pub allocation_id: String,
    /// The public IP.
    pub public_ip: String,
    /// Network interface it was associated with.
    pub network_interface_id: String,
    /// Private IP it mapped to.
    pub private_ip_address: String,
}

/// Credential containment as applied.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRecord {
    /// The instance profile associated before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_instance_profile_arn: Option<String>,
    /// The role whose older sessions were revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_name: Option<String>,
    /// Name of the inline deny policy added to that role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_policy_name: Option<String>,
    /// Sessions issued before this instant are denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_before: Option<Time>,
}

/// One containment action and its outcome.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainmentAction {
    /// TerminationSafeguards, InstanceTags, AutoScaling, LoadBalancers, ElasticIps, SecurityGroups or Credentials.
    pub name: String,
    /// Applied, Failed or NotNeeded (containment); Restored, NotNeeded or Failed (release).
    pub state: ActionState,
    /// Stable reason when Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What was done, or the AWS error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the action reached this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
}

/// Where one containment action (or its release) stands.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ActionState {
    /// The change was made (its prior state is recorded).
    #[default]
    Applied,
    /// Nothing to change (not requested, or nothing of that kind on the instance).
    NotNeeded,
    /// The change was refused; the reason and message say why and what was already done.
    Failed,
    /// Release put the recorded prior state back.
    Restored,
}

impl ActionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Applied => "Applied",
            ActionState::NotNeeded => "NotNeeded",
            ActionState::Failed => "Failed",
            ActionState::Restored => "Restored",
        }
    }
}

impl std::fmt::Display for ActionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ActionState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A network interface and its security groups.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceGroups {
    /// Network interface ID.
    pub network_interface_id: String,
    /// Security group IDs.
    pub security_group_ids: Vec<String>,
}
