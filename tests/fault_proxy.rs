//! The fault-injecting proxy itself, through the real AWS SDK clients: each service throttled in its own
//! protocol (and recognised as throttling by the SDK, which retries it), 500 and 503 errors, a reset that lets
//! the side effect happen while the client loses the answer, seeded replay, latency and bandwidth.

mod support;

use std::time::{Duration, Instant};

use aws_sdk_s3::error::ProvideErrorMetadata;
use serde_json::json;
use support::faults::{FaultProxy, count};

fn every_request(faults: &[&str]) -> serde_json::Value {
    json!({"seed": 1, "rules": [{"share": 1.0, "faults": faults}]})
}

/// The error code and HTTP status an SDK call ended with.
fn code_of<E: ProvideErrorMetadata, R: std::fmt::Debug>(result: Result<R, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>) -> (String, Option<u16>) {
    match result {
        Ok(r) => panic!("the call succeeded through a proxy that fails everything: {r:?}"),
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            (e.code().unwrap_or("none").to_string(), status)
        }
    }
}

#[tokio::test]
async fn each_service_is_throttled_in_its_own_protocol_and_the_sdk_retries_it_as_throttling() {
    let proxy = FaultProxy::start(every_request(&["throttle"])).await;
    // Three attempts: the SDK retries only what it recognises as throttling or transient.
    let config = proxy.aws(3).await;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build());
    let ssm = aws_sdk_ssm::Client::new(&config);
    let got = [
        ("ec2:DescribeVpcs", code_of(aws_sdk_ec2::Client::new(&config).describe_vpcs().send().await)),
        ("s3:ListObjectsV2", code_of(s3.list_objects_v2().bucket("no-such-bucket-fault-proxy").send().await)),
        ("ssm:DescribeInstanceInformation", code_of(ssm.describe_instance_information().send().await)),
        ("kms:ListKeys", code_of(aws_sdk_kms::Client::new(&config).list_keys().send().await)),
        ("sts:GetCallerIdentity", code_of(aws_sdk_sts::Client::new(&config).get_caller_identity().send().await)),
        ("iam:ListRoles", code_of(aws_sdk_iam::Client::new(&config).list_roles().send().await)),
        ("autoscaling:DescribeAutoScalingGroups", code_of(aws_sdk_autoscaling::Client::new(&config).describe_auto_scaling_groups().send().await)),
        (
            "elasticloadbalancing:DescribeLoadBalancers",
            code_of(aws_sdk_elasticloadbalancingv2::Client::new(&config).describe_load_balancers().send().await),
        ),
    ];
    let expected = [
        ("RequestLimitExceeded", 503),
        ("SlowDown", 503),
        ("ThrottlingException", 400),
        ("ThrottlingException", 400),
        ("Throttling", 400),
        ("Throttling", 400),
        ("Throttling", 400),
        ("Throttling", 400),
    ];
    let counters = proxy.counters().await;
    for ((key, (code, status)), (want_code, want_status)) in got.iter().zip(expected) {
        assert_eq!((code.as_str(), *status), (want_code, Some(want_status)), "{key}");
        assert_eq!(count(&counters, key, "requests"), 3, "{key}: the SDK retried the throttle twice: {counters:#}");
        assert_eq!(count(&counters, key, "faults.throttle"), 3, "{key}");
        assert_eq!(count(&counters, key, "forwarded"), 0, "{key}: a throttled request never reaches the emulator");
    }
}

#[tokio::test]
async fn internal_and_unavailable_errors_are_answered_in_the_protocol_with_their_status() {
    let proxy = FaultProxy::start(every_request(&["internal"])).await;
    let config = proxy.aws(1).await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let ssm = aws_sdk_ssm::Client::new(&config);
    assert_eq!(code_of(ec2.describe_vpcs().send().await), ("InternalError".into(), Some(500)));
    assert_eq!(code_of(ssm.list_commands().send().await), ("InternalServerError".into(), Some(500)));
    proxy.set_plan(every_request(&["unavailable"])).await;
    assert_eq!(code_of(ec2.describe_vpcs().send().await), ("Unavailable".into(), Some(503)));
    assert_eq!(code_of(ssm.list_commands().send().await), ("ServiceUnavailable".into(), Some(503)));
    let counters = proxy.counters().await;
    assert_eq!(count(&counters, "ec2:DescribeVpcs", "faults.internal"), 1);
    assert_eq!(count(&counters, "ec2:DescribeVpcs", "faults.unavailable"), 1);
    assert_eq!(count(&counters, "ssm:ListCommands", "faults.unavailable"), 1);
}

#[tokio::test]
async fn a_reset_lets_the_side_effect_happen_while_the_client_loses_the_answer() {
    let stack = support::stack();
    let proxy = FaultProxy::start(json!({"rules": [{"service": "ec2", "operation": "CreateVpc", "share": 1.0, "faults": ["reset"]}]})).await;
    let name = support::unique("reset-vpc");
    let tag = aws_sdk_ec2::types::TagSpecification::builder()
        .resource_type(aws_sdk_ec2::types::ResourceType::Vpc)
        .tags(aws_sdk_ec2::types::Tag::builder().key("Name").value(&name).build())
        .build();
    let through_proxy = aws_sdk_ec2::Client::new(&proxy.aws(1).await);
    let result = through_proxy.create_vpc().cidr_block("10.77.0.0/16").tag_specifications(tag).send().await;
    assert!(result.is_err(), "a reset mid-response is an error to the client: {result:?}");
    let by_name = aws_sdk_ec2::types::Filter::builder().name("tag:Name").values(&name).build();
    let vpcs = stack.ec2().await.describe_vpcs().filters(by_name).send().await.unwrap();
    assert_eq!(vpcs.vpcs().len(), 1, "the emulator acted on the request before the connection was cut");
    let counters = proxy.counters().await;
    assert_eq!(count(&counters, "ec2:CreateVpc", "forwarded"), 1);
    assert_eq!(count(&counters, "ec2:CreateVpc", "faults.reset"), 1);

    // An empty answer (PutObject's) is cut too: the client never sees the end of the response.
    proxy.set_plan(json!({"rules": [{"service": "s3", "operation": "PutObject", "share": 1.0, "faults": ["reset"]}]})).await;
    let bucket = support::fixtures::bucket(&stack.s3().await).await;
    let config = proxy.aws(1).await;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build());
    let put = s3.put_object().bucket(&bucket).key("k").body(b"evidence".to_vec().into()).send().await;
    assert!(put.is_err(), "{put:?}");
    assert_eq!(support::fixtures::download(&stack.s3().await, &format!("s3://{bucket}/k")).await, b"evidence");

    // A HEAD answer has no body to cut: it goes through whole, its Content-Length (the object's size) intact.
    proxy.set_plan(json!({"rules": [{"service": "s3", "operation": "HeadObject", "share": 1.0, "faults": ["reset"]}]})).await;
    let head = s3.head_object().bucket(&bucket).key("k").send().await.unwrap();
    assert_eq!(head.content_length(), Some(8));
    assert_eq!(count(&proxy.counters().await, "s3:HeadObject", "faults.reset"), 0);
}

#[tokio::test]
async fn the_same_seed_replays_the_same_faults() {
    async fn pattern(seed: u64) -> Vec<bool> {
        let proxy = FaultProxy::start(json!({"seed": seed, "rules": [{"service": "ec2", "share": 0.3, "faults": ["throttle", "internal"]}]})).await;
        let ec2 = aws_sdk_ec2::Client::new(&proxy.aws(1).await);
        let mut outcomes = Vec::new();
        for _ in 0..40 {
            outcomes.push(ec2.describe_vpcs().send().await.is_ok());
        }
        outcomes
    }
    let first = pattern(11).await;
    assert!(first.iter().any(|ok| !ok) && first.iter().any(|ok| *ok), "a share of 0.3 fails some of 40 calls and not all: {first:?}");
    assert_eq!(first, pattern(11).await, "the same seed and the same calls meet the same faults");
    assert_ne!(first, pattern(12).await, "another seed draws other faults");
}

#[tokio::test]
async fn latency_and_a_bandwidth_cap_slow_requests_down_by_at_least_what_they_say() {
    let stack = support::stack();
    let bucket = support::fixtures::bucket(&stack.s3().await).await;
    let proxy = FaultProxy::start(json!({"bandwidth_bytes_per_second": 1 << 20, "rules": [{"service": "s3", "operation": "HeadObject", "latency_ms": 400}]})).await;
    let config = proxy.aws(1).await;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build());
    let body = vec![7u8; 2 << 20];
    let started = Instant::now();
    s3.put_object().bucket(&bucket).key("big").body(body.clone().into()).send().await.unwrap();
    let up = started.elapsed();
    let started = Instant::now();
    let got = s3.get_object().bucket(&bucket).key("big").send().await.unwrap().body.collect().await.unwrap().to_vec();
    let down = started.elapsed();
    assert_eq!(got, body, "the capped streams carry every byte");
    // Lower bounds only: 2 MiB at 1 MiB/s cannot move in less than about 2 s, either way.
    assert!(up >= Duration::from_millis(1800), "upload took {up:?}");
    assert!(down >= Duration::from_millis(1800), "download took {down:?}");
    let started = Instant::now();
    s3.head_object().bucket(&bucket).key("big").send().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(count(&proxy.counters().await, "s3:HeadObject", "delayed"), 1);
}

#[tokio::test]
async fn a_plan_that_makes_no_sense_is_refused_with_the_reason() {
    let proxy = FaultProxy::start(json!({})).await;
    for (plan, reason) in [
        (json!({"rules": [{"share": 2.0}]}), "share 2 is not between 0 and 1"),
        (json!({"rules": [{"shares": 0.1}]}), "unknown field"),
        (json!({"bandwidth_bytes_per_second": 0}), "must be positive"),
    ] {
        let response = support::faults::put_plan(&proxy.url, &plan).await;
        assert_eq!(response.status().as_u16(), 400, "{plan}");
        let text = response.text().await.unwrap();
        assert!(text.contains(reason), "{plan}: {text}");
    }
}

#[tokio::test]
async fn the_request_log_names_who_signed_each_request_and_for_which_region() {
    let proxy = FaultProxy::start(json!({})).await;
    let config = proxy.aws(1).await;
    let key = support::stack().var("AWS_ACCESS_KEY_ID").to_string();
    aws_sdk_ec2::Client::from_conf(aws_sdk_ec2::config::Builder::from(&config).region(aws_sdk_ec2::config::Region::new("eu-west-1")).build())
        .describe_vpcs()
        .send()
        .await
        .unwrap();
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build());
    let presigned = s3
        .get_object()
        .bucket("no-such-bucket-fault-proxy-log")
        .key("k")
        .presigned(aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    let _ = reqwest::get(presigned.uri()).await.unwrap();
    let log = support::faults::get_json(&format!("{}/_fault-proxy/requests", proxy.url)).await;
    let entries = log.as_array().unwrap();
    let ec2 = entries.iter().find(|e| e["operation"] == "ec2:DescribeVpcs").expect("the EC2 call is logged");
    assert_eq!(ec2["access_key"], key.as_str());
    assert_eq!(ec2["region"], "eu-west-1");
    let get = entries.iter().find(|e| e["operation"] == "s3:GetObject").expect("the presigned GET is logged");
    assert_eq!(get["access_key"], key.as_str(), "from the presigned URL's X-Amz-Credential");
    assert_eq!(get["region"], support::stack().region());
}
