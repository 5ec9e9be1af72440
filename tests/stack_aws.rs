//! The proof environment's AWS APIs (moto) through the real Rust SDK clients.

mod support;

use aws_sdk_ec2::types::{InstanceSpecification, ResourceType, Tag, TagSpecification};
use aws_sdk_s3::{primitives::ByteStream, types::ChecksumAlgorithm, types::ChecksumMode};
use base64::Engine;
use sha2::{Digest, Sha256};

#[tokio::test]
async fn snapshots_of_all_volumes_and_a_security_group_swap() {
    let ec2 = support::stack().ec2().await;
    let instance = support::run_instance(&ec2, 1, &[]).await;

    let described = ec2.describe_instances().instance_ids(&instance.instance_id).send().await.unwrap();
    let described = &described.reservations()[0].instances()[0];
    assert_eq!(described.block_device_mappings().len(), 2, "root plus one data volume");
    assert_eq!(described.vpc_id(), Some(instance.vpc_id.as_str()));

    let snapshots = ec2
        .create_snapshots()
        .instance_specification(InstanceSpecification::builder().instance_id(&instance.instance_id).build())
        .description("stack test")
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Snapshot)
                .tags(Tag::builder().key("stack-test").value(&instance.instance_id).build())
                .build(),
        )
        .send()
        .await
        .expect("CreateSnapshots");
    assert_eq!(snapshots.snapshots().len(), 2, "one snapshot per attached volume");
    let found = ec2
        .describe_snapshots()
        .filters(aws_sdk_ec2::types::Filter::builder().name("tag:stack-test").values(&instance.instance_id).build())
        .send()
        .await
        .unwrap();
    assert_eq!(found.snapshots().len(), 2, "snapshots are found by their tag");

    let group = ec2
        .create_security_group()
        .group_name(support::unique("isolation"))
        .description("stack test")
        .vpc_id(&instance.vpc_id)
        .send()
        .await
        .expect("CreateSecurityGroup");
    let group_id = group.group_id().unwrap();
    let eni = described.network_interfaces()[0].network_interface_id().unwrap();
    ec2.modify_network_interface_attribute().network_interface_id(eni).groups(group_id).send().await.expect("swap groups");
    let after = ec2.describe_network_interfaces().network_interface_ids(eni).send().await.unwrap();
    let groups: Vec<&str> = after.network_interfaces()[0].groups().iter().filter_map(|g| g.group_id()).collect();
    assert_eq!(groups, vec![group_id]);
}

#[tokio::test]
async fn object_put_with_a_sha256_checksum_reports_it_on_head() {
    let s3 = support::stack().s3().await;
    let bucket = support::unique("stack-test");
    s3.create_bucket()
        .bucket(&bucket)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(support::stack().region()))
                .build(),
        )
        .send()
        .await
        .expect("CreateBucket");
    let body = b"evidence bytes".repeat(1000);
    let expected = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&body));
    s3.put_object()
        .bucket(&bucket)
        .key("a/b.bin")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .expect("PutObject");
    let head = s3.head_object().bucket(&bucket).key("a/b.bin").checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
    assert_eq!(head.content_length(), Some(body.len() as i64));
    assert_eq!(head.checksum_sha256(), Some(expected.as_str()));
}

/// dev/moto-server's STS extension: AssumeRole keeps SourceIdentity and session tags as STS does, refuses
/// what STS refuses, and lists the sessions.
#[tokio::test]
async fn assume_role_keeps_and_validates_source_identity_and_session_tags() {
    use aws_sdk_sts::{error::ProvideErrorMetadata, types::Tag};
    let stack = support::stack();
    let sts = aws_sdk_sts::Client::new(&stack.aws().await);
    let session = support::unique("sts-identity");
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build().unwrap();
    let assumed = sts
        .assume_role()
        .role_arn("arn:aws:iam::222233334444:role/ForensicCaptureTarget")
        .role_session_name(&session)
        .source_identity("alice@example.com")
        .tags(tag("forensic-capture:capture-uid", "u-1"))
        .tags(tag("forensic-capture:case-id", "INC 4711/a"))
        .external_id("ext-1")
        .send()
        .await
        .expect("assume role");
    assert_eq!(assumed.source_identity(), Some("alice@example.com"), "STS returns the source identity");
    let key = assumed.credentials().unwrap().access_key_id().to_string();
    let listed = support::faults::get_json(&format!("{}/_moto-server/sts-sessions", stack.var("AWS_ENDPOINT_URL"))).await;
    let ours = listed.as_array().unwrap().iter().find(|s| s["sessionName"] == session.as_str()).expect("the session is listed");
    assert_eq!(ours["account"], "222233334444");
    assert_eq!(ours["accessKeyId"], key.as_str());
    assert_eq!(ours["sourceIdentity"], "alice@example.com");
    assert_eq!(ours["externalId"], "ext-1");
    assert_eq!(ours["tags"], serde_json::json!([{"Key": "forensic-capture:capture-uid", "Value": "u-1"}, {"Key": "forensic-capture:case-id", "Value": "INC 4711/a"}]));

    let refused = |result: Result<aws_sdk_sts::operation::assume_role::AssumeRoleOutput, _>| match result {
        Ok(_) => panic!("STS accepts it"),
        Err(e) => {
            let e: aws_sdk_sts::error::SdkError<aws_sdk_sts::operation::assume_role::AssumeRoleError> = e;
            (e.code().unwrap_or_default().to_string(), e.message().unwrap_or_default().to_string())
        }
    };
    let base = || sts.assume_role().role_arn("arn:aws:iam::222233334444:role/R").role_session_name("refused");
    let (code, message) = refused(base().source_identity("aws-internal/x").send().await);
    assert_eq!(code, "ValidationError");
    assert!(message.contains("sourceIdentity"), "{message}");
    let (code, message) = refused(base().source_identity("aws:internal").send().await);
    assert_eq!(code, "ValidationError", "{message}");
    let (code, message) = refused(base().tags(tag("Case", "1")).tags(tag("case", "2")).send().await);
    assert_eq!(code, "ValidationError");
    assert!(message.contains("Duplicate tag keys"), "{message}");
    let mut too_many = base();
    for i in 0..51 {
        too_many = too_many.tags(tag(&format!("k{i}"), "v"));
    }
    assert_eq!(refused(too_many.send().await).0, "ValidationError", "at most 50 session tags");
}

/// The error code of a refused EC2 call (panics if EC2 accepted it).
fn ec2_refusal<T: std::fmt::Debug, E: aws_sdk_ec2::error::ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<T, aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>>,
) -> (String, String) {
    use aws_sdk_ec2::error::ProvideErrorMetadata;
    let error = result.expect_err("EC2 accepts it");
    (error.code().unwrap_or_default().to_string(), error.message().unwrap_or_default().to_string())
}

async fn described_snapshot(ec2: &aws_sdk_ec2::Client, id: &str) -> aws_sdk_ec2::types::Snapshot {
    let found = ec2.describe_snapshots().snapshot_ids(id).send().await.expect("DescribeSnapshots");
    found.snapshots().first().cloned().expect("the snapshot is described")
}

/// dev/moto-server's fix 6: a snapshot keeps its volume's KMS key; one under the AWS managed key for EBS cannot be
/// shared; another account copies only what was shared with it, into its own account and Region, encrypted with
/// the key it names, tagged as asked.
#[tokio::test]
async fn snapshots_are_shared_and_copied_across_accounts_as_ec2_allows() {
    use aws_sdk_ec2::types::{CreateVolumePermission, CreateVolumePermissionModifications, OperationType, SnapshotAttributeName};
    let stack = support::stack();
    let (account_b, account_c) = ("333344445555", "666677778888");
    let region_b = stack.region().to_string();
    let region_c = if region_b == "eu-central-1" { "eu-west-1" } else { "eu-central-1" };
    let config_b = stack.aws_in(account_b).await;
    let config_c = stack.aws_in(account_c).await.to_builder().region(aws_config::Region::new(region_c)).build();
    let (ec2_b, kms_b) = (aws_sdk_ec2::Client::new(&config_b), aws_sdk_kms::Client::new(&config_b));
    let (ec2_c, kms_c) = (aws_sdk_ec2::Client::new(&config_c), aws_sdk_kms::Client::new(&config_c));

    // B: an encrypted volume with the default key, and its snapshot.
    let volume = ec2_b.create_volume().availability_zone(format!("{region_b}a")).size(1).encrypted(true).send().await.expect("CreateVolume");
    let snapshot = ec2_b.create_snapshot().volume_id(volume.volume_id().unwrap()).description("evidence").send().await.expect("CreateSnapshot");
    let snapshot_id = snapshot.snapshot_id().unwrap().to_string();
    let managed = kms_b.describe_key().key_id("alias/aws/ebs").send().await.expect("B's AWS managed key for EBS");
    let managed_arn = managed.key_metadata().and_then(|k| k.arn()).unwrap().to_string();
    let described = described_snapshot(&ec2_b, &snapshot_id).await;
    assert_eq!(described.encrypted(), Some(true));
    assert_eq!(described.kms_key_id(), Some(managed_arn.as_str()), "the snapshot keeps the volume's key");

    let share = |id: &str, operation: OperationType| {
        ec2_b
            .modify_snapshot_attribute()
            .snapshot_id(id)
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .operation_type(operation)
            .user_ids(account_c)
            .send()
    };
    let (code, message) = ec2_refusal(share(&snapshot_id, OperationType::Add).await);
    assert_eq!(code, "OperationNotPermitted", "{message}");
    assert!(message.contains("EBS default key"), "{message}");
    share(&snapshot_id, OperationType::Remove).await.expect("removing a permission is always allowed");

    let copy_into_c = |source: &str, key: Option<&str>| {
        let mut copy = ec2_c.copy_snapshot().source_region(&region_b).source_snapshot_id(source).description("evidence, in C");
        if let Some(key) = key {
            copy = copy.encrypted(true).kms_key_id(key);
        }
        copy.tag_specifications(
            TagSpecification::builder().resource_type(ResourceType::Snapshot).tags(Tag::builder().key("case").value("INC-6").build()).build(),
        )
        .send()
    };
    let (code, message) = ec2_refusal(copy_into_c(&snapshot_id, None).await);
    assert_eq!(code, "InvalidSnapshot.NotFound", "C cannot copy what B did not share: {message}");

    // B re-encrypts a copy with a customer managed key, and shares that.
    let key_b = kms_b.create_key().description("shareable evidence").send().await.expect("CreateKey in B");
    let key_b = key_b.key_metadata().and_then(|k| k.arn()).unwrap().to_string();
    let copy_in_b = |encrypted: bool| {
        ec2_b.copy_snapshot().source_region(&region_b).source_snapshot_id(&snapshot_id).kms_key_id(&key_b).set_encrypted(encrypted.then_some(true)).send()
    };
    let (code, message) = ec2_refusal(copy_in_b(false).await);
    assert_eq!(code, "InvalidParameterDependency", "KmsKeyId needs Encrypted: {message}");
    let shareable = copy_in_b(true).await.expect("CopySnapshot in B").snapshot_id().unwrap().to_string();
    let described = described_snapshot(&ec2_b, &shareable).await;
    assert_eq!((described.owner_id(), described.kms_key_id()), (Some(account_b), Some(key_b.as_str())));
    ec2_b
        .modify_snapshot_attribute()
        .snapshot_id(&shareable)
        .create_volume_permission(
            CreateVolumePermissionModifications::builder().add(CreateVolumePermission::builder().user_id(account_c).build()).build(),
        )
        .send()
        .await
        .expect("a snapshot under a customer managed key is shared");
    let permissions = ec2_b
        .describe_snapshot_attribute()
        .snapshot_id(&shareable)
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .send()
        .await
        .unwrap();
    let shared_with: Vec<_> = permissions.create_volume_permissions().iter().filter_map(|p| p.user_id()).collect();
    assert_eq!(shared_with, vec![account_c]);

    // C copies it into its own Region with its own key.
    let key_c = kms_c.create_key().description("C's evidence").send().await.expect("CreateKey in C");
    let key_c = key_c.key_metadata().and_then(|k| k.arn()).unwrap().to_string();
    assert!(key_c.contains(&format!(":{region_c}:{account_c}:")), "{key_c}");
    let copied = copy_into_c(&shareable, Some(&key_c)).await.expect("C copies the shared snapshot");
    assert_eq!(copied.tags().iter().map(|t| (t.key(), t.value())).collect::<Vec<_>>(), vec![(Some("case"), Some("INC-6"))]);
    let in_c = described_snapshot(&ec2_c, copied.snapshot_id().unwrap()).await;
    assert_eq!(in_c.owner_id(), Some(account_c), "the copy belongs to C");
    assert_eq!((in_c.encrypted(), in_c.kms_key_id()), (Some(true), Some(key_c.as_str())), "encrypted with C's key");
    assert_eq!(in_c.description(), Some("evidence, in C"));
    assert_eq!(in_c.tags().iter().map(|t| (t.key(), t.value())).collect::<Vec<_>>(), vec![(Some("case"), Some("INC-6"))]);
    assert!(ec2_b.describe_snapshots().snapshot_ids(copied.snapshot_id().unwrap()).send().await.is_err(), "the copy is not B's");

    // B may also re-encrypt to a key of another account and Region (C's, whose key policy would admit B).
    let to_c_key = ec2_b
        .copy_snapshot()
        .source_region(&region_b)
        .source_snapshot_id(&snapshot_id)
        .encrypted(true)
        .kms_key_id(&key_c)
        .send()
        .await
        .expect("CopySnapshot in B to C's key");
    let described = described_snapshot(&ec2_b, to_c_key.snapshot_id().unwrap()).await;
    assert_eq!((described.owner_id(), described.kms_key_id()), (Some(account_b), Some(key_c.as_str())), "kept as given");

    share(&shareable, OperationType::Remove).await.expect("B stops sharing");
    let (code, message) = ec2_refusal(copy_into_c(&shareable, Some(&key_c)).await);
    assert_eq!(code, "InvalidSnapshot.NotFound", "an unshared snapshot cannot be copied: {message}");
}

/// dev/moto-server's fix 7 reads a resource's tags from its own entry instead of scanning every tag: the
/// answers must be moto's own. Each of many tagged snapshots is found by its tag and lists exactly its tags in
/// the order they were given, as DescribeTags lists them; a removed tag is gone from both; describing an
/// untagged resource gives it no tags (the tag map is not written by a read).
#[tokio::test]
async fn each_resource_lists_exactly_its_own_tags_among_many() {
    use aws_sdk_ec2::types::Filter;
    let ec2 = support::stack().ec2().await;
    let run = support::unique("tags");
    let zone = format!("{}a", support::stack().region());
    let volume = ec2.create_volume().availability_zone(&zone).size(1).send().await.expect("CreateVolume");
    let volume_id = volume.volume_id().unwrap().to_string();
    let tag = |key: &str, value: &str| Tag::builder().key(key).value(value).build();
    let mut snapshots = Vec::new();
    for i in 0..12 {
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::Snapshot)
            .tags(tag("run", &run))
            .tags(tag("index", &i.to_string()))
            .tags(tag("zz-last", "given last"))
            .build();
        let made = ec2.create_snapshot().volume_id(&volume_id).tag_specifications(tags).send().await.expect("CreateSnapshot");
        snapshots.push(made.snapshot_id().unwrap().to_string());
    }
    let by_index = |i: usize| {
        ec2.describe_snapshots().owner_ids("self").filters(Filter::builder().name("tag:run").values(&run).build()).filters(
            Filter::builder().name("tag:index").values(i.to_string()).build(),
        )
    };
    for (i, id) in snapshots.iter().enumerate() {
        let found = by_index(i).send().await.unwrap();
        let ids: Vec<&str> = found.snapshots().iter().filter_map(|s| s.snapshot_id()).collect();
        assert_eq!(ids, vec![id.as_str()], "index {i} finds only its snapshot");
        let listed: Vec<(&str, &str)> = found.snapshots()[0].tags().iter().map(|t| (t.key().unwrap(), t.value().unwrap())).collect();
        let index = i.to_string();
        assert_eq!(listed, vec![("run", run.as_str()), ("index", index.as_str()), ("zz-last", "given last")], "in the order given");
        let described = ec2.describe_tags().filters(Filter::builder().name("resource-id").values(id).build()).send().await.unwrap();
        let described: Vec<(&str, &str)> = described.tags().iter().map(|t| (t.key().unwrap(), t.value().unwrap())).collect();
        assert_eq!(described, listed, "DescribeTags and DescribeSnapshots agree for {id}");
    }
    ec2.delete_tags().resources(&snapshots[3]).tags(Tag::builder().key("index").build()).send().await.expect("DeleteTags");
    assert!(by_index(3).send().await.unwrap().snapshots().is_empty(), "a removed tag no longer matches");
    let after = ec2.describe_snapshots().snapshot_ids(&snapshots[3]).send().await.unwrap();
    let keys: Vec<&str> = after.snapshots()[0].tags().iter().filter_map(|t| t.key()).collect();
    assert_eq!(keys, vec!["run", "zz-last"]);
    // The volume was never tagged: describing it (and filtering on a tag it lacks) leaves it without tags.
    let filtered = ec2.describe_volumes().volume_ids(&volume_id).filters(Filter::builder().name("tag:run").values(&run).build()).send().await.unwrap();
    assert!(filtered.volumes().is_empty());
    let untagged = ec2.describe_tags().filters(Filter::builder().name("resource-id").values(&volume_id).build()).send().await.unwrap();
    assert!(untagged.tags().is_empty(), "{:?}", untagged.tags());
}
