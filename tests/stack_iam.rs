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

/// dev/moto-server's SimulatePrincipalPolicy (fix 9): a user's inline policy, its group's managed policy and the
/// decisions AWS documents, on the same statement matching moto's enforcement uses (the verdicts agree with
/// what the user's own requests meet), the simulation itself authorized on the principal simulated.
#[tokio::test]
async fn simulate_principal_policy_evaluates_the_principals_policies_as_enforcement_does() {
    use aws_sdk_iam::types::{PolicyEvaluationDecisionType as Decision, PolicySourceType};
    let aws = EnforcedAws::start("simulate").await;
    let admin = aws.admin_config().await;
    let iam = aws_sdk_iam::Client::new(&admin);
    let user = support::iam::user_arn("simulated");
    let inline = format!(
        r#"{{
  "Version": "2012-10-17",
  "Statement": [
    {{"Effect": "Allow", "Action": ["ec2:DescribeVpcs", "ec2:CreateVpc"], "Resource": "*"}},
    {{"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::evidence/cases/*"}},
    {{"Effect": "Allow", "Action": "iam:SimulatePrincipalPolicy", "Resource": "{user}"}}
  ]
}}"#
    );
    let keys = aws.user("simulated", &inline).await;
    let deny = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "ec2:CreateVpc", "Resource": "*"}]}"#;
    let managed = iam.create_policy().policy_name("no-vpcs").policy_document(deny).send().await.unwrap().policy().unwrap().arn().unwrap().to_string();
    iam.create_group().group_name("responders").send().await.unwrap();
    iam.attach_group_policy().group_name("responders").policy_arn(&managed).send().await.unwrap();
    iam.add_user_to_group().group_name("responders").user_name("simulated").send().await.unwrap();

    let simulated = iam
        .simulate_principal_policy()
        .policy_source_arn(&user)
        .action_names("ec2:DescribeVpcs")
        .action_names("ssm:SendCommand")
        .action_names("ec2:CreateVpc")
        .send()
        .await
        .expect("moto answers SimulatePrincipalPolicy");
    let results = simulated.evaluation_results();
    let decisions: Vec<(&str, &Decision, Option<&str>)> = results.iter().map(|r| (r.eval_action_name(), r.eval_decision(), r.eval_resource_name())).collect();
    assert_eq!(
        decisions,
        [("ec2:DescribeVpcs", &Decision::Allowed, Some("*")), ("ssm:SendCommand", &Decision::ImplicitDeny, Some("*")), ("ec2:CreateVpc", &Decision::ExplicitDeny, Some("*"))]
    );
    let allowed_by = &results[0].matched_statements()[0];
    assert_eq!((allowed_by.source_policy_id(), allowed_by.source_policy_type()), (Some("simulated"), Some(&PolicySourceType::User)));
    // The statement's place in the document: from its opening brace (line 4, column 5) to its closing one.
    let (start, end) = (allowed_by.start_position().unwrap(), allowed_by.end_position().unwrap());
    assert_eq!((start.line(), start.column(), end.line(), end.column()), (4, 5, 4, 89), "{allowed_by:?}");
    assert!(results[1].matched_statements().is_empty(), "nothing decides an implicit deny");
    let denied_by: Vec<(Option<&str>, Option<&PolicySourceType>)> =
        results[2].matched_statements().iter().map(|s| (s.source_policy_id(), s.source_policy_type())).collect();
    assert_eq!(denied_by, [(Some("no-vpcs"), Some(&PolicySourceType::UserManaged))], "only the Deny, from the group's managed policy");

    // The verdicts are what enforcement does with the user's own requests.
    let ec2 = aws_sdk_ec2::Client::new(&aws.config(&keys).await);
    ec2.describe_vpcs().send().await.expect("allowed");
    let refused = ec2.create_vpc().cidr_block("10.50.0.0/16").send().await.expect_err("explicitly denied");
    assert!(matches!(refused.code(), Some("AccessDenied" | "UnauthorizedOperation")), "{:?}", refused.code());

    // Resources: each judged on its own; the resource default "*" does not match a statement naming objects.
    let on_objects = iam
        .simulate_principal_policy()
        .policy_source_arn(&user)
        .action_names("s3:PutObject")
        .resource_arns("arn:aws:s3:::evidence/cases/1/memory.lime")
        .resource_arns("arn:aws:s3:::evidence/elsewhere/memory.lime")
        .send()
        .await
        .unwrap();
    let result = &on_objects.evaluation_results()[0];
    assert_eq!(result.eval_decision(), &Decision::ImplicitDeny, "not allowed on every resource");
    let per_resource: Vec<(&str, &Decision)> = result.resource_specific_results().iter().map(|r| (r.eval_resource_name(), r.eval_resource_decision())).collect();
    assert_eq!(per_resource, [("arn:aws:s3:::evidence/cases/1/memory.lime", &Decision::Allowed), ("arn:aws:s3:::evidence/elsewhere/memory.lime", &Decision::ImplicitDeny)]);
    let anywhere = iam.simulate_principal_policy().policy_source_arn(&user).action_names("s3:PutObject").send().await.unwrap();
    assert_eq!(anywhere.evaluation_results()[0].eval_decision(), &Decision::ImplicitDeny);

    // Pages of MaxItems results.
    let first = iam.simulate_principal_policy().policy_source_arn(&user).action_names("ec2:DescribeVpcs").action_names("ec2:CreateVpc").max_items(1).send().await.unwrap();
    assert!(first.is_truncated() && first.evaluation_results().len() == 1);
    let rest = iam
        .simulate_principal_policy()
        .policy_source_arn(&user)
        .action_names("ec2:DescribeVpcs")
        .action_names("ec2:CreateVpc")
        .max_items(1)
        .marker(first.marker().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!((rest.is_truncated(), rest.evaluation_results()[0].eval_action_name()), (false, "ec2:CreateVpc"));

    // An unknown principal is NoSuchEntity, as IAM answers.
    let unknown = iam.simulate_principal_policy().policy_source_arn(support::iam::user_arn("nobody")).action_names("ec2:DescribeVpcs").send().await.unwrap_err();
    assert_eq!(unknown.code(), Some("NoSuchEntity"), "{:?}", unknown.message());

    // The simulation is authorized on the principal simulated: the user may simulate itself, not the admin.
    let own = aws_sdk_iam::Client::new(&aws.config(&keys).await);
    own.simulate_principal_policy().policy_source_arn(&user).action_names("ec2:DescribeVpcs").send().await.expect("itself");
    let other = own.simulate_principal_policy().policy_source_arn(support::iam::user_arn("fc-test-admin")).action_names("ec2:DescribeVpcs").send().await.unwrap_err();
    assert_eq!(other.code(), Some("AccessDenied"), "{:?}", other.message());
}
