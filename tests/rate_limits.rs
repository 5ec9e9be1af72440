//! Respecting AWS's limits on purpose: the controller's requests paced per API family through the real SDK
//! clients, and at most --max-concurrent-acquisitions captures acquiring at once, the others waiting with
//! WaitingForCapacity.

mod support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use forensic_capture::aws::{
    clients::{ClientOptions, RegionClients},
    pacing::{self, RateSetting},
};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use support::{
    faults::{FaultProxy, count},
    fixtures::{CaptureEnv, capture_yaml, set_instance_memory},
};

#[tokio::test]
async fn requests_over_a_familys_rate_wait_for_their_turn_and_other_families_do_not() {
    let proxy = FaultProxy::start(json!({})).await;
    let settings: Vec<RateSetting> = vec!["ec2-describe=2/1".parse().unwrap()];
    let rates = pacing::rates(&settings);
    let options = ClientOptions { s3_force_path_style: true, presign_role_arn: None, observe: None, pacer: Some(forensic_capture::aws::pacing::Pacer::new(&rates)), credentials: None };
    let clients = RegionClients::new(&proxy.aws(1).await, None, &options);

    // Ten Describe calls at once at 2 per second, one at a time: the last goes 4.5 s after the first.
    let started = Instant::now();
    let calls = (0..10).map(|_| clients.ec2.0.describe_vpcs().send());
    let results = futures::future::join_all(calls).await;
    let paced = started.elapsed();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(paced >= Duration::from_millis(4400), "10 requests at 2/s took {paced:?}");
    assert_eq!(count(&proxy.counters().await, "ec2:DescribeVpcs", "requests"), 10);

    // Another family has its own bucket (ec2-mutate's default 10/s with a burst of 50): ten at once go at once.
    let started = Instant::now();
    let tag = |i: usize| aws_sdk_ec2::types::Tag::builder().key("fc-pacing").value(i.to_string()).build();
    let vpc = clients.ec2.0.create_vpc().cidr_block("10.66.0.0/16").send().await.unwrap().vpc().unwrap().vpc_id().unwrap().to_string();
    let calls = (0..10).map(|i| clients.ec2.0.create_tags().resources(&vpc).tags(tag(i)).send());
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    println!("10 Describe calls paced at 2/s: {paced:?}; 11 mutating calls within their burst: {:?}", started.elapsed());
}

/// When the capture's first evidence step started and its last one ended.
fn acquiring(capture: &forensic_capture::api::ForensicCapture) -> (Timestamp, Timestamp) {
    let steps = &capture.status.as_ref().unwrap().steps;
    let records = [steps.volatile.as_ref(), steps.memory.as_ref(), steps.disk.as_ref()];
    let started = records.iter().flatten().filter_map(|r| r.started_at.as_ref()).map(|t| t.0).min().unwrap();
    let ended = records.iter().flatten().filter_map(|r| r.completed_at.as_ref()).map(|t| t.0).max().unwrap();
    (started, ended)
}

#[tokio::test]
async fn captures_over_the_acquisition_bound_wait_with_a_reason_and_all_complete() {
    let stack = support::stack();
    let env = CaptureEnv::new("capacity").await;
    let ec2 = stack.ec2().await;
    let mut vars = env.controller_env();
    vars.push(("FC_MAX_CONCURRENT_ACQUISITIONS", "1".into()));
    let _controller = support::controller::ControllerProcess::start(&vars, &format!("{}-controller", env.namespace));
    let mut instances = Vec::new();
    for i in 0..3 {
        let instance = support::run_instance(&ec2, 0, &[]).await.instance_id;
        set_instance_memory(&instance, 9 * 1024 * 1024);
        env.apply(&capture_yaml(&format!("c{i}"), &instance, "")).await;
        instances.push(instance);
    }
    let mut waited = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let captures = loop {
        let list = env.captures().list(&Default::default()).await.unwrap().items;
        for capture in &list {
            let ready = capture.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
            if let Some(ready) = ready.filter(|r| r.reason == "WaitingForCapacity") {
                waited.insert(capture.metadata.name.clone().unwrap(), ready.message.clone());
            }
        }
        if list.len() == 3 && list.iter().all(|c| c.status.as_ref().is_some_and(|s| s.completed_at.is_some())) {
            break list;
        }
        assert!(Instant::now() < deadline, "the captures did not all complete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(waited.len() >= 2, "two of three captures waited for the one place: {waited:?}");
    let message = waited.values().next().unwrap();
    assert!(message.contains("--max-concurrent-acquisitions") && message.contains(stack.region()), "{message}");
    // One at a time: no two captures' acquisitions overlap (times are recorded to the second).
    let mut spans: Vec<(Timestamp, Timestamp)> = captures.iter().map(acquiring).collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "acquisitions overlapped: {spans:?}");
    }
    for capture in &captures {
        let status = capture.status.as_ref().unwrap();
        assert_eq!(status.phase, Some(forensic_capture::api::Phase::Isolated), "{status:#?}");
    }
}
