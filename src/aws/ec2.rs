//! EC2: instance facts, EBS snapshots and the isolation security group.

use std::future::Future;

use aws_sdk_ec2::types::{
    Filter, InstanceSpecification, IpPermission, IpRange, Ipv6Range, ResourceType, Tag, TagSpecification,
};

use super::AwsError;

/// Tags put on every AWS object the controller creates, so it can be found again after a restart.
pub mod tags {
    pub const CAPTURE_UID: &str = "forensic-capture.dev/capture-uid";
    pub const CASE_ID: &str = "forensic-capture.dev/case-id";
    pub const CAPTURE: &str = "forensic-capture.dev/capture";
    pub const INSTANCE_ID: &str = "forensic-capture.dev/instance-id";
    pub const ROLE: &str = "forensic-capture.dev/role";
}

#[derive(Debug, Clone, PartialEq)]
pub struct InstanceInfo {
    pub instance_id: String,
    pub owner_id: Option<String>,
    pub state: String,
    pub availability_zone: Option<String>,
    pub vpc_id: Option<String>,
    pub architecture: Option<String>,
    pub platform: String,
    pub instance_type: Option<String>,
    pub interfaces: Vec<InterfaceInfo>,
    /// The EBS block devices: (device name, volume ID, delete on termination).
    pub volumes: Vec<(String, String, bool)>,
    /// The root device's name (the boot volume is the block device of that name).
    pub root_device_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InterfaceInfo {
    pub network_interface_id: String,
    pub security_group_ids: Vec<String>,
}

/// Termination-related settings of an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct TerminationSettings {
    pub disable_api_termination: bool,
    pub shutdown_behavior: String,
    /// (device name, volume ID, delete on termination)
    pub volumes: Vec<(String, String, bool)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    pub snapshot_id: String,
    pub volume_id: String,
    pub state: String,
    pub volume_size_gib: Option<i32>,
    pub owner_id: Option<String>,
    /// When EC2 started the snapshot (RFC 3339).
    pub start_time: Option<String>,
}

/// The EC2 calls the controller makes.
pub trait Ec2Api: Send + Sync {
    /// IDs of the instances (not terminated) that have one of `ids` (any when empty) and every tag in `tags`.
    fn instances_selected(&self, ids: &[String], tags: &[(String, String)]) -> impl Future<Output = Result<Vec<String>, AwsError>> + Send;
    fn describe_instance(&self, instance_id: &str) -> impl Future<Output = Result<Option<InstanceInfo>, AwsError>> + Send;
    fn instance_type_memory_mib(&self, instance_type: &str) -> impl Future<Output = Result<Option<i64>, AwsError>> + Send;
    fn snapshots_tagged(&self, capture_uid: &str) -> impl Future<Output = Result<Vec<SnapshotInfo>, AwsError>> + Send;
    fn create_snapshots(
        &self,
        instance_id: &str,
        exclude_boot_volume: bool,
        description: &str,
        tags: &[(String, String)],
    ) -> impl Future<Output = Result<Vec<SnapshotInfo>, AwsError>> + Send;
    /// Creates the isolation group by its deterministic name, or finds the one a repeated create collides with.
    fn create_isolation_group(
        &self,
        vpc_id: &str,
        name: &str,
        tags: &[(String, String)],
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
    fn ensure_isolation_rules(&self, group_id: &str, allow_ingress_cidrs: &[String]) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn set_interface_groups(&self, network_interface_id: &str, group_ids: &[String]) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// The instance's termination protection and shutdown behaviour, with its volumes as `instance` describes them.
    fn termination_settings(&self, instance: &InstanceInfo) -> impl Future<Output = Result<TerminationSettings, AwsError>> + Send;
    /// Sets DisableApiTermination, the shutdown behaviour and each volume's DeleteOnTermination: containment
    /// sets true / stop / false, release puts back what was recorded.
    fn set_termination_settings(&self, instance_id: &str, settings: &TerminationSettings) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn tag(&self, resource_id: &str, tags: &[(String, String)]) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Elastic IPs associated with the instance: (association ID, record).
    fn elastic_ips(&self, instance_id: &str) -> impl Future<Output = Result<Vec<(String, crate::api::ElasticIpAssociation)>, AwsError>> + Send;
    fn disassociate_address(&self, association_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn associate_address(&self, association: &crate::api::ElasticIpAssociation) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// The instance's IAM instance profile association: (association ID, profile ARN).
    fn instance_profile(&self, instance_id: &str) -> impl Future<Output = Result<Option<(String, String)>, AwsError>> + Send;
    fn replace_instance_profile(&self, association_id: &str, instance_profile_arn: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// The allow-all group used for the first half of the two-step swap: created, or found by its name.
    fn transition_group(&self, vpc_id: &str, name: &str, tags: &[(String, String)]) -> impl Future<Output = Result<String, AwsError>> + Send;
}

#[derive(Clone)]
pub struct SdkEc2(pub aws_sdk_ec2::Client);

/// Whether a CIDR (already validated by the CRD's CEL rule) is an IPv6 one: only IPv6 notation has colons.
fn is_ipv6_cidr(cidr: &str) -> bool {
    cidr.contains(':')
}

/// Whether two CIDRs name the same network, however they are spelled (IPv6 has many spellings of one address,
/// and EC2 may answer with another than the one asked for).
fn same_cidr(a: &str, b: &str) -> bool {
    fn parse(cidr: &str) -> Option<(std::net::IpAddr, u8)> {
        let (address, length) = cidr.split_once('/')?;
        Some((address.parse().ok()?, length.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

/// A rule change that EC2 refuses with `code` because the rule is already as asked (added, or removed) is
/// done: this happens when an earlier attempt of the same call succeeded but its answer was lost, and the SDK
/// (or the next reconcile) sent it again.
fn already(code: &'static str) -> impl FnOnce(AwsError) -> Result<(), AwsError> {
    move |e| if e.code == code { Ok(()) } else { Err(e) }
}

pub(crate) fn tag_spec(resource: ResourceType, tags: &[(String, String)]) -> TagSpecification {
    tags.iter()
        .fold(TagSpecification::builder().resource_type(resource), |b, (k, v)| b.tags(Tag::builder().key(k).value(v).build()))
        .build()
}

pub(crate) fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder().name(format!("tag:{key}")).values(value).build()
}

fn snapshot_info(s: &aws_sdk_ec2::types::Snapshot) -> Option<SnapshotInfo> {
    Some(SnapshotInfo {
        snapshot_id: s.snapshot_id()?.to_string(),
        volume_id: s.volume_id().unwrap_or_default().to_string(),
        state: s.state().map(|s| s.as_str().to_string()).unwrap_or_default(),
        volume_size_gib: s.volume_size(),
        owner_id: s.owner_id().map(str::to_string),
        start_time: s.start_time().and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok()),
    })
}

fn attribute_error(e: aws_sdk_ec2::error::SdkError<aws_sdk_ec2::operation::describe_instance_attribute::DescribeInstanceAttributeError>) -> AwsError {
    AwsError::from_sdk("ec2:DescribeInstanceAttribute", e)
}

fn modify_error(e: aws_sdk_ec2::error::SdkError<aws_sdk_ec2::operation::modify_instance_attribute::ModifyInstanceAttributeError>) -> AwsError {
    AwsError::from_sdk("ec2:ModifyInstanceAttribute", e)
}

impl SdkEc2 {
    /// After CreateSecurityGroup failed with `error`: when it says the name is taken (a create repeated after a
    /// restart, before the lookup by tag showed the first group), the group of that name is the one to use.
    /// Names are unique per VPC and ours carry the capture's UID, so it is this capture's group.
    async fn existing_group(&self, vpc_id: &str, name: &str, error: AwsError) -> Result<String, AwsError> {
        if error.code != "InvalidGroup.Duplicate" {
            return Err(error);
        }
        let found = self
            .0
            .describe_security_groups()
            .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
            .filters(Filter::builder().name("group-name").values(name).build())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeSecurityGroups", e))?;
        match found.security_groups().first().and_then(|g| g.group_id()) {
            Some(id) => Ok(id.to_string()),
            None => Err(AwsError::local(
                "ec2:DescribeSecurityGroups",
                "NotYetVisible",
                format!("security group {name} exists (InvalidGroup.Duplicate) but is not listed yet"),
            )),
        }
    }
}

impl Ec2Api for SdkEc2 {
    async fn instances_selected(&self, ids: &[String], tags: &[(String, String)]) -> Result<Vec<String>, AwsError> {
        // IDs as a filter rather than InstanceIds: an ID that does not exist selects nothing instead of failing
        // the whole call.
        let mut filters = vec![Filter::builder().name("instance-state-name").set_values(Some(["pending", "running", "stopping", "stopped"].map(String::from).to_vec())).build()];
        if !ids.is_empty() {
            filters.push(Filter::builder().name("instance-id").set_values(Some(ids.to_vec())).build());
        }
        filters.extend(tags.iter().map(|(k, v)| tag_filter(k, v)));
        let mut pages = self.0.describe_instances().set_filters(Some(filters)).into_paginator().send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("ec2:DescribeInstances", e))?;
            found.extend(page.reservations().iter().flat_map(|r| r.instances()).filter_map(|i| i.instance_id().map(str::to_string)));
        }
        found.sort();
        Ok(found)
    }

    async fn instance_profile(&self, instance_id: &str) -> Result<Option<(String, String)>, AwsError> {
        let output = self
            .0
            .describe_iam_instance_profile_associations()
            .filters(Filter::builder().name("instance-id").values(instance_id).build())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeIamInstanceProfileAssociations", e))?;
        Ok(output
            .iam_instance_profile_associations()
            .iter()
            .filter(|a| a.state().map(|s| s.as_str()) != Some("disassociated"))
            .find_map(|a| Some((a.association_id()?.to_string(), a.iam_instance_profile()?.arn()?.to_string()))))
    }

    async fn replace_instance_profile(&self, association_id: &str, instance_profile_arn: &str) -> Result<(), AwsError> {
        self.0
            .replace_iam_instance_profile_association()
            .association_id(association_id)
            .iam_instance_profile(aws_sdk_ec2::types::IamInstanceProfileSpecification::builder().arn(instance_profile_arn).build())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:ReplaceIamInstanceProfileAssociation", e))?;
        Ok(())
    }

    async fn elastic_ips(&self, instance_id: &str) -> Result<Vec<(String, crate::api::ElasticIpAssociation)>, AwsError> {
        let output = self
            .0
            .describe_addresses()
            .filters(Filter::builder().name("instance-id").values(instance_id).build())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeAddresses", e))?;
        Ok(output
            .addresses()
            .iter()
            .filter_map(|a| {
                Some((
                    a.association_id()?.to_string(),
                    crate::api::ElasticIpAssociation {
                        allocation_id: a.allocation_id()?.to_string(),
                        public_ip: a.public_ip().unwrap_or_default().to_string(),
                        network_interface_id: a.network_interface_id().unwrap_or_default().to_string(),
                        private_ip_address: a.private_ip_address().unwrap_or_default().to_string(),
                    },
                ))
            })
            .collect())
    }

    async fn disassociate_address(&self, association_id: &str) -> Result<(), AwsError> {
        self.0
            .disassociate_address()
            .association_id(association_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DisassociateAddress", e))?;
        Ok(())
    }

    async fn associate_address(&self, association: &crate::api::ElasticIpAssociation) -> Result<(), AwsError> {
        self.0
            .associate_address()
            .allocation_id(&association.allocation_id)
            .network_interface_id(&association.network_interface_id)
            .private_ip_address(&association.private_ip_address)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:AssociateAddress", e))?;
        Ok(())
    }

    async fn termination_settings(&self, instance: &InstanceInfo) -> Result<TerminationSettings, AwsError> {
        use aws_sdk_ec2::types::InstanceAttributeName;
        let instance_id = instance.instance_id.as_str();
        let protection = self
            .0
            .describe_instance_attribute()
            .instance_id(instance_id)
            .attribute(InstanceAttributeName::DisableApiTermination)
            .send()
            .await
            .map_err(attribute_error)?;
        let shutdown = self
            .0
            .describe_instance_attribute()
            .instance_id(instance_id)
            .attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
            .send()
            .await
            .map_err(attribute_error)?;
        let volumes = instance.volumes.clone();
        Ok(TerminationSettings {
            disable_api_termination: protection.disable_api_termination().and_then(|v| v.value()).unwrap_or(false),
            shutdown_behavior: shutdown.instance_initiated_shutdown_behavior().and_then(|v| v.value()).unwrap_or("stop").to_string(),
            volumes,
        })
    }

    async fn set_termination_settings(&self, instance_id: &str, settings: &TerminationSettings) -> Result<(), AwsError> {
        use aws_sdk_ec2::types::{AttributeBooleanValue, AttributeValue, EbsInstanceBlockDeviceSpecification, InstanceBlockDeviceMappingSpecification};
        self.0
            .modify_instance_attribute()
            .instance_id(instance_id)
            .disable_api_termination(AttributeBooleanValue::builder().value(settings.disable_api_termination).build())
            .send()
            .await
            .map_err(modify_error)?;
        self.0
            .modify_instance_attribute()
            .instance_id(instance_id)
            .instance_initiated_shutdown_behavior(AttributeValue::builder().value(&settings.shutdown_behavior).build())
            .send()
            .await
            .map_err(modify_error)?;
        if !settings.volumes.is_empty() {
            let mappings = settings
                .volumes
                .iter()
                .map(|(device, _, delete)| {
                    InstanceBlockDeviceMappingSpecification::builder()
                        .device_name(device)
                        .ebs(EbsInstanceBlockDeviceSpecification::builder().delete_on_termination(*delete).build())
                        .build()
                })
                .collect();
            self.0
                .modify_instance_attribute()
                .instance_id(instance_id)
                .set_block_device_mappings(Some(mappings))
                .send()
                .await
                .map_err(modify_error)?;
        }
        Ok(())
    }

    async fn tag(&self, resource_id: &str, tags: &[(String, String)]) -> Result<(), AwsError> {
        self.0
            .create_tags()
            .resources(resource_id)
            .set_tags(Some(tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:CreateTags", e))?;
        Ok(())
    }

    async fn transition_group(&self, vpc_id: &str, name: &str, group_tags: &[(String, String)]) -> Result<String, AwsError> {
        // Created by its deterministic name first: a group made before a restart answers InvalidGroup.Duplicate
        // and is then looked up, so the common path asks EC2 nothing before creating.
        let created = self
            .0
            .create_security_group()
            .vpc_id(vpc_id)
            .group_name(name)
            .description("forensic-capture: allow-all step of the two-step swap, so tracked connections become untracked")
            .tag_specifications(tag_spec(ResourceType::SecurityGroup, group_tags))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:CreateSecurityGroup", e));
        let (group_id, created_now) = match created {
            Ok(output) => (output.group_id().unwrap_or_default().to_string(), true),
            Err(e) => (self.existing_group(vpc_id, name, e).await?, false),
        };
        // A new group has no ingress (and allows all egress already); one found again is looked at first.
        let has_ingress = !created_now && {
            let described = self
                .0
                .describe_security_groups()
                .group_ids(&group_id)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ec2:DescribeSecurityGroups", e))?;
            described.security_groups().first().is_some_and(|g| !g.ip_permissions().is_empty())
        };
        if !has_ingress {
            // A duplicate (an earlier attempt's answer lost) is harmless.
            self.0
                .authorize_security_group_ingress()
                .group_id(&group_id)
                .ip_permissions(IpPermission::builder().ip_protocol("-1").ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build()).build())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| AwsError::from_sdk("ec2:AuthorizeSecurityGroupIngress", e))
                .or_else(already("InvalidPermission.Duplicate"))?;
        }
        Ok(group_id)
    }

    async fn describe_instance(&self, instance_id: &str) -> Result<Option<InstanceInfo>, AwsError> {
        let result = self.0.describe_instances().instance_ids(instance_id).send().await;
        let output = match result {
            Ok(o) => o,
            Err(e) => {
                let e = AwsError::from_sdk("ec2:DescribeInstances", e);
                return if e.code.starts_with("InvalidInstanceID") { Ok(None) } else { Err(e) };
            }
        };
        let Some((reservation, instance)) =
            output.reservations().iter().find_map(|r| r.instances().first().map(|i| (r, i)))
        else {
            return Ok(None);
        };
        Ok(Some(InstanceInfo {
            instance_id: instance_id.to_string(),
            owner_id: reservation.owner_id().map(str::to_string),
            state: instance.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default(),
            availability_zone: instance.placement().and_then(|p| p.availability_zone()).map(str::to_string),
            vpc_id: instance.vpc_id().map(str::to_string),
            root_device_name: instance.root_device_name().map(str::to_string),
            architecture: instance.architecture().map(|a| a.as_str().to_string()),
            // `Platform` is set (to "windows") only for Windows instances and is the authoritative flag;
            // `PlatformDetails` names the rest ("Linux/UNIX", "Red Hat Enterprise Linux", ...).
            platform: match instance.platform() {
                Some(p) if p.as_str().eq_ignore_ascii_case("windows") => instance.platform_details().filter(|d| d.contains("Windows")).unwrap_or("Windows").to_string(),
                _ => instance.platform_details().unwrap_or("Linux/UNIX").to_string(),
            },
            instance_type: instance.instance_type().map(|t| t.as_str().to_string()),
            interfaces: instance
                .network_interfaces()
                .iter()
                .filter_map(|n| {
                    Some(InterfaceInfo {
                        network_interface_id: n.network_interface_id()?.to_string(),
                        security_group_ids: n.groups().iter().filter_map(|g| g.group_id().map(str::to_string)).collect(),
                    })
                })
                .collect(),
            volumes: instance
                .block_device_mappings()
                .iter()
                .filter_map(|m| {
                    let ebs = m.ebs()?;
                    Some((m.device_name()?.to_string(), ebs.volume_id()?.to_string(), ebs.delete_on_termination().unwrap_or(false)))
                })
                .collect(),
        }))
    }

    async fn instance_type_memory_mib(&self, instance_type: &str) -> Result<Option<i64>, AwsError> {
        let output = self
            .0
            .describe_instance_types()
            .instance_types(instance_type.into())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeInstanceTypes", e))?;
        Ok(output.instance_types().first().and_then(|t| t.memory_info()).and_then(|m| m.size_in_mib()))
    }

    async fn snapshots_tagged(&self, capture_uid: &str) -> Result<Vec<SnapshotInfo>, AwsError> {
        let output = self
            .0
            .describe_snapshots()
            .owner_ids("self")
            .filters(tag_filter(tags::CAPTURE_UID, capture_uid))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeSnapshots", e))?;
        // The capture's copies carry its tag too (src/aws/snapshot_copy.rs): they are not part of the set.
        let is_copy = |s: &&aws_sdk_ec2::types::Snapshot| s.tags().iter().any(|t| t.key() == Some(super::snapshot_copy::tags::COPY_OF));
        Ok(output.snapshots().iter().filter(|s| !is_copy(s)).filter_map(snapshot_info).collect())
    }

    async fn create_snapshots(
        &self,
        instance_id: &str,
        exclude_boot_volume: bool,
        description: &str,
        tags: &[(String, String)],
    ) -> Result<Vec<SnapshotInfo>, AwsError> {
        let output = self
            .0
            .create_snapshots()
            .instance_specification(
                InstanceSpecification::builder().instance_id(instance_id).exclude_boot_volume(exclude_boot_volume).build(),
            )
            .description(description)
            .tag_specifications(tag_spec(ResourceType::Snapshot, tags))
            .customize()
            .config_override(aws_sdk_ec2::config::Builder::default().retry_config(super::clients::single_attempt()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:CreateSnapshots", e))?;
        Ok(output
            .snapshots()
            .iter()
            .filter_map(|s| {
                Some(SnapshotInfo {
                    snapshot_id: s.snapshot_id()?.to_string(),
                    volume_id: s.volume_id().unwrap_or_default().to_string(),
                    state: s.state().map(|s| s.as_str().to_string()).unwrap_or_default(),
                    volume_size_gib: s.volume_size(),
                    owner_id: s.owner_id().map(str::to_string),
                    start_time: s.start_time().and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok()),
                })
            })
            .collect())
    }

    async fn create_isolation_group(&self, vpc_id: &str, name: &str, tags: &[(String, String)]) -> Result<String, AwsError> {
        let output = self
            .0
            .create_security_group()
            .vpc_id(vpc_id)
            .group_name(name)
            .description("forensic-capture isolation: no egress, ingress only from the responder CIDRs")
            .tag_specifications(tag_spec(ResourceType::SecurityGroup, tags))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:CreateSecurityGroup", e));
        match output {
            Ok(output) => output
                .group_id()
                .map(str::to_string)
                .ok_or_else(|| AwsError::local("ec2:CreateSecurityGroup", "MissingGroupId", "the response carried no group ID")),
            Err(e) => self.existing_group(vpc_id, name, e).await,
        }
    }

    /// Makes the group's rules exactly: no egress, all-protocol ingress from each allowed CIDR (IPv4 ones as
    /// `IpRanges`, IPv6 ones as `Ipv6Ranges`: EC2 refuses an IPv6 CIDR given as `CidrIp`). Idempotent, so a
    /// restart between creating the group and setting its rules repairs it.
    async fn ensure_isolation_rules(&self, group_id: &str, allow_ingress_cidrs: &[String]) -> Result<(), AwsError> {
        let described = self
            .0
            .describe_security_groups()
            .group_ids(group_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeSecurityGroups", e))?;
        let Some(group) = described.security_groups().first() else { return Ok(()) };
        let egress: Vec<IpPermission> = group.ip_permissions_egress().to_vec();
        if !egress.is_empty() {
            self.0
                .revoke_security_group_egress()
                .group_id(group_id)
                .set_ip_permissions(Some(egress))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| AwsError::from_sdk("ec2:RevokeSecurityGroupEgress", e))
                .or_else(already("InvalidPermission.NotFound"))?;
        }
        let present: Vec<String> = group
            .ip_permissions()
            .iter()
            .filter(|p| p.ip_protocol() == Some("-1"))
            .flat_map(|p| {
                let v4 = p.ip_ranges().iter().filter_map(|r| r.cidr_ip());
                let v6 = p.ipv6_ranges().iter().filter_map(|r| r.cidr_ipv6());
                v4.chain(v6).map(str::to_string)
            })
            .collect();
        let missing: Vec<&String> = allow_ingress_cidrs.iter().filter(|c| !present.iter().any(|p| same_cidr(p, c))).collect();
        if !missing.is_empty() {
            const DESCRIPTION: &str = "forensic-capture responder access";
            let permission = missing
                .iter()
                .fold(IpPermission::builder().ip_protocol("-1"), |b, c| {
                    if is_ipv6_cidr(c) {
                        b.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(c.as_str()).description(DESCRIPTION).build())
                    } else {
                        b.ip_ranges(IpRange::builder().cidr_ip(c.as_str()).description(DESCRIPTION).build())
                    }
                })
                .build();
            self.0
                .authorize_security_group_ingress()
                .group_id(group_id)
                .ip_permissions(permission)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| AwsError::from_sdk("ec2:AuthorizeSecurityGroupIngress", e))
                .or_else(already("InvalidPermission.Duplicate"))?;
        }
        Ok(())
    }

    async fn set_interface_groups(&self, network_interface_id: &str, group_ids: &[String]) -> Result<(), AwsError> {
        self.0
            .modify_network_interface_attribute()
            .network_interface_id(network_interface_id)
            .set_groups(Some(group_ids.to_vec()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:ModifyNetworkInterfaceAttribute", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_told_apart_by_family_and_compared_as_networks() {
        assert!(!is_ipv6_cidr("203.0.113.7/32"));
        assert!(is_ipv6_cidr("2001:db8:1234::/48"));
        assert!(is_ipv6_cidr("::ffff:203.0.113.7/128"));
        assert!(same_cidr("2001:db8:1234::/48", "2001:DB8:1234:0:0::/48"));
        assert!(same_cidr("203.0.113.7/32", "203.0.113.7/32"));
        assert!(!same_cidr("2001:db8:1234::/48", "2001:db8:1234::/64"));
        assert!(!same_cidr("203.0.113.7/32", "203.0.113.8/32"));
        assert!(!same_cidr("::ffff:203.0.113.7/128", "203.0.113.7/32"), "an IPv4-mapped IPv6 range is an IPv6 rule");
    }
}
