//! IAM enforcement in the proof environment: moto, started through dev/moto-server, checks the Rust SDK's
//! signatures (query bodies with spaces, presigned URLs) and judges each call by the caller's policies; the
//! switch is confined to a test's own server, so the shared stack keeps accepting its admin keys.

mod support;

use aws_sdk_ec2::{error::ProvideErrorMetadata, types::Tag};
use support::iam::{EnforcedAws, Keys};

const TAGGER: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [{"Effect": "Allow", "Action": ["ec2:CreateTags", "ec2:DescribeTags"], "Resource": "*"}]
}"#;

#[tokio::test]
async fn query_bodies_with_spaces_pass_the_signature_check_and_the_policy_decides() {
    let aws = EnforcedAws::start("spaces").await;
    let admin = aws_sdk_ec2::Client::new(&aws.admin_config().await);
    let vpc = admin.create_vpc().cidr_block("10.40.0.0/16").send().await.unwrap().vpc().unwrap().vpc_id().unwrap().to_string();
    let tagger = aws_sdk_ec2::Client::new(&aws.config(&aws.user("tagger", TAGGER).await).await);

    // Allowed, with spaces in the form-encoded body (the Rust SDK writes them as %20).
    tagger
        .create_tags()
        .resources(&vpc)
        .tags(Tag::builder().key("case note").value("held for incident response").build())
        .send()
        .await
        .expect("an allowed call whose body has spaces is accepted");
    let described = tagger
        .describe_tags()
        .filters(aws_sdk_ec2::types::Filter::builder().name("value").values("held for incident response").build())
        .send()
        .await
        .expect("describe with a space in a filter value");
    assert_eq!(described.tags().iter().filter_map(|t| t.resource_id()).collect::<Vec<_>>(), vec![vpc.as_str()]);

    // Not in the policy: refused for lack of permission, not for a bad signature.
    let denied = tagger
        .delete_tags()
        .resources(&vpc)
        .tags(Tag::builder().key("case note").value("held for incident response").build())
        .send()
        .await
        .expect_err("DeleteTags is not in the policy");
    let code = denied.code().unwrap_or_default();
    assert!(matches!(code, "AccessDenied" | "UnauthorizedOperation"), "{code}: {:?}", denied.message());
    assert!(denied.message().unwrap_or_default().contains("ec2:DeleteTags"), "{:?}", denied.message());

    // Other query services too: a policy document full of spaces and newlines, through IAM.
    let iam = aws_sdk_iam::Client::new(&aws.admin_config().await);
    iam.put_user_policy().user_name("tagger").policy_name("pretty").policy_document(TAGGER).send().await.expect("IAM body with spaces");
}

#[tokio::test]
async fn enforcement_is_confined_to_the_tests_own_server_and_switches_both_ways() {
    let aws = EnforcedAws::start("switch").await;
    let stack = support::stack();
    let stack_keys = Keys { access_key_id: stack.var("AWS_ACCESS_KEY_ID").into(), secret_access_key: stack.var("AWS_SECRET_ACCESS_KEY").into() };
    let stranger = aws_sdk_ec2::Client::new(&aws.config(&stack_keys).await);

    let refused = stranger.describe_vpcs().send().await.expect_err("keys of no IAM user are refused while enforcing");
    assert_eq!(refused.code(), Some("AuthFailure"), "{:?}", refused.message());
    stack.ec2().await.describe_vpcs().send().await.expect("the shared stack still accepts its admin keys meanwhile");

    aws.enforce(false).await;
    stranger.describe_vpcs().send().await.expect("accepted once enforcement is off");
    aws.enforce(true).await;
    stranger.describe_vpcs().send().await.expect_err("refused again once it is back on");
}

#[tokio::test]
async fn presigned_urls_are_verified_and_judged_by_the_signers_policy() {
    let aws = EnforcedAws::start("presign").await;
    let bucket = support::fixtures::bucket(&aws.s3(&aws.admin).await).await;
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:PutObject", "Resource": format!("arn:aws:s3:::{bucket}/evidence/*")},
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": format!("arn:aws:s3:::{bucket}")}
        ]
    });
    let uploader = aws.s3(&aws.user("uploader", &policy.to_string()).await).await;
    uploader.head_bucket().bucket(&bucket).send().await.expect("HeadBucket is allowed by s3:ListBucket, as in AWS");

    let presign = |key: &'static str| {
        let (uploader, bucket) = (uploader.clone(), bucket.clone());
        async move {
            let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(std::time::Duration::from_secs(300)).unwrap();
            uploader.put_object().bucket(bucket).key(key).presigned(config).await.unwrap().uri().to_string()
        }
    };
    let http = reqwest::Client::new();
    let put = async |url: &str| http.put(url).body("evidence").send().await.unwrap().status().as_u16();

    assert_eq!(put(&presign("evidence/volatile.tar.gz").await).await, 200, "inside the policy");
    assert_eq!(put(&presign("elsewhere/volatile.tar.gz").await).await, 403, "outside the policy");
    let tampered = presign("evidence/other.tar.gz").await.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    assert_eq!(put(&tampered).await, 403, "a signature that does not match");
    let stored = aws.s3(&aws.admin).await.get_object().bucket(&bucket).key("evidence/volatile.tar.gz").send().await.unwrap();
    assert_eq!(stored.body.collect().await.unwrap().to_vec(), b"evidence");
}
