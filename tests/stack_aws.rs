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
