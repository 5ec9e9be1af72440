//! Leader election with two real controller processes on one stack: only the Lease holder acts on AWS; a
//! leader killed mid-capture is replaced once its Lease expires, a leader stopped with SIGTERM hands the
//! Lease over at once, and either way the capture finishes with every side effect exactly once.

mod support;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use support::{
    controller::ControllerProcess,
    endpoint::{self, Scrape},
    fixtures::{CaptureEnv, capture_yaml, set_instance_memory},
    leader::{self, LEASE_DURATION, RETRY_PERIOD},
};

const MIB: u64 = 1024 * 1024;

struct Pair {
    leader: ControllerProcess,
    leader_name: &'static str,
    standby: ControllerProcess,
    standby_name: &'static str,
}

/// Starts controllers `a` and `b`, waits for one of them to hold the Lease and both to be ready.
async fn elect(env: &CaptureEnv) -> Pair {
    let a = leader::candidate(env, "controller-a", &[]);
    let b = leader::candidate(env, "controller-b", &[]);
    let (holder, _) = leader::wait_for_holder(env, Duration::from_secs(30), |h| !h.is_empty()).await;
    let pair = if holder.starts_with("controller-a_") {
        Pair { leader: a, leader_name: "controller-a", standby: b, standby_name: "controller-b" }
    } else {
        assert!(holder.starts_with("controller-b_"), "holder {holder:?} is neither controller");
        Pair { leader: b, leader_name: "controller-b", standby: a, standby_name: "controller-a" }
    };
    for process in [&pair.leader, &pair.standby] {
        // A standby is ready too (docs/operations.md says why).
        endpoint::wait_status(address(process), "/readyz", 200, Duration::from_secs(30)).await;
    }
    pair
}

fn address(process: &ControllerProcess) -> SocketAddr {
    process.metrics_address(Duration::from_secs(30))
}

/// AWS calls and reconciles this process has made, from its own /metrics.
async fn activity(process: &ControllerProcess) -> (Scrape, f64, f64) {
    let scrape = endpoint::scrape(address(process)).await;
    let aws = scrape.sum("forensic_capture_aws_calls_total", &[]);
    let reconciles = scrape.sum("forensic_capture_reconciles_total", &[]);
    (scrape, aws, reconciles)
}

/// A capture that has started acting on AWS (its volatile data command was sent) and is not done.
async fn capture_in_flight(env: &CaptureEnv, name: &str) -> String {
    let ec2 = support::stack().ec2().await;
    let instance = support::run_instance(&ec2, 1, &[]).await.instance_id;
    set_instance_memory(&instance, 24 * MIB + 5);
    env.apply(&capture_yaml(name, &instance, "")).await;
    env.wait_for(name, Duration::from_secs(60), |c| {
        c.status.as_ref().and_then(|s| s.steps.volatile.as_ref()).is_some_and(|v| v.command_id.is_some())
    })
    .await;
    instance
}

/// Only the leader acts: the standby has made no AWS call and run no reconcile, and says it is standing by.
async fn assert_only_the_leader_acted(pair: &Pair) {
    let (leader_scrape, leader_aws, leader_reconciles) = activity(&pair.leader).await;
    let (standby_scrape, standby_aws, standby_reconciles) = activity(&pair.standby).await;
    assert_eq!(leader_scrape.value("forensic_capture_leader", &[]), Some(1.0));
    assert_eq!(standby_scrape.value("forensic_capture_leader", &[]), Some(0.0));
    assert!(leader_aws > 0.0 && leader_reconciles > 0.0, "the leader acted: {leader_aws} AWS calls, {leader_reconciles} reconciles");
    assert_eq!((standby_aws, standby_reconciles), (0.0, 0.0), "the standby acted:\n{}", standby_scrape.text);
    // A standby that lost the race to create the Lease says so at its next round (one retry period later).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let standby_log = loop {
        let log = std::fs::read_to_string(pair.standby.log_path()).unwrap();
        if log.contains("standby; another process leads") || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(standby_log.contains("standby; another process leads"), "{standby_log}");
    assert!(!standby_log.contains("reconcile"), "the standby logged reconciles:\n{standby_log}");
}

/// Two controllers, one leading, in the middle of capture `name` that only the leader has acted on.
async fn leader_mid_capture(prefix: &str, name: &str) -> (CaptureEnv, Pair, String) {
    let env = CaptureEnv::new(prefix).await;
    let pair = elect(&env).await;
    let instance = capture_in_flight(&env, name).await;
    assert_only_the_leader_acted(&pair).await;
    (env, pair, instance)
}

#[tokio::test]
async fn a_killed_leader_is_replaced_after_its_lease_expires_and_the_capture_finishes_once() {
    let (env, mut pair, instance) = leader_mid_capture("leader-kill", "failover").await;

    pair.leader.kill();
    let (holder, failover) = leader::wait_for_holder(&env, LEASE_DURATION * 3, |h| h.starts_with(&format!("{}_", pair.standby_name))).await;
    println!(
        "leader fail-over after SIGKILL: {:.1} s from the kill of {} to {holder} holding the Lease (lease duration {}s, retry period {}s)",
        failover.as_secs_f64(),
        pair.leader_name,
        LEASE_DURATION.as_secs(),
        RETRY_PERIOD.as_secs()
    );
    // The standby waited for the Lease to go unrenewed for a whole lease duration as it observed it: at
    // least the duration less one retry period (the last renewal may precede the kill by that much), at
    // most the duration plus two retry periods (one for it to see the last renewal, one to see expiry).
    assert!(failover >= LEASE_DURATION - RETRY_PERIOD, "took over too early: {failover:?}");
    assert!(failover <= LEASE_DURATION + RETRY_PERIOD * 2 + Duration::from_secs(1), "took over too late: {failover:?}");
    let lease = leader::lease(&env).await.unwrap().spec.unwrap();
    assert_eq!(lease.lease_transitions, Some(1), "one change of holder");

    let capture = env.wait_completed("failover").await;
    support::side_effects::assert_each_side_effect_once(&instance, &capture).await;
    let (scrape, aws, _) = activity(&pair.standby).await;
    assert_eq!(scrape.value("forensic_capture_leader", &[]), Some(1.0));
    assert!(aws > 0.0, "the new leader finished the capture");
}

#[tokio::test]
async fn sigterm_hands_the_lease_to_the_standby_at_once_and_the_capture_finishes_once() {
    let (env, mut pair, instance) = leader_mid_capture("leader-term", "handover").await;

    let sent = Instant::now();
    let exit = pair.leader.terminate(Duration::from_secs(30)).expect("the leader exits after SIGTERM");
    let exited = sent.elapsed();
    assert!(exit.success(), "the leader exited with {exit}");
    let (holder, _) = leader::wait_for_holder(&env, LEASE_DURATION, |h| h.starts_with(&format!("{}_", pair.standby_name))).await;
    let handover = sent.elapsed();
    println!(
        "leader hand-over after SIGTERM: {} exited 0 in {:.1} s, {holder} held the Lease {:.1} s after the signal",
        pair.leader_name,
        exited.as_secs_f64(),
        handover.as_secs_f64()
    );
    let leader_log = std::fs::read_to_string(pair.leader.log_path()).unwrap();
    assert!(leader_log.contains("Lease released"), "{leader_log}");
    // Released, so the standby did not wait for the lease duration: it took over at its next retry.
    assert!(handover <= exited + RETRY_PERIOD + Duration::from_secs(1), "hand-over took {handover:?}");
    assert!(handover < LEASE_DURATION / 2, "hand-over took {handover:?}");

    let capture = env.wait_completed("handover").await;
    support::side_effects::assert_each_side_effect_once(&instance, &capture).await;
}

#[tokio::test]
async fn a_leader_that_finds_the_lease_taken_exits_at_once() {
    let env = CaptureEnv::new("leader-lost").await;
    let mut only = leader::candidate(&env, "controller-a", &[]);
    leader::wait_for_holder(&env, Duration::from_secs(30), |h| h.starts_with("controller-a_")).await;
    // Another holder appears (a split brain, or an operator taking the Lease away).
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> = kube::Api::namespaced(env.kube.clone(), &env.namespace);
    let taken = serde_json::json!({"spec": {"holderIdentity": "intruder", "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(k8s_openapi::jiff::Timestamp::now())}});
    leases.patch(leader::LEASE_NAME, &Default::default(), &kube::api::Patch::Merge(taken)).await.unwrap();
    let patched = Instant::now();

    let status = loop {
        if let Some(status) = only.exited() {
            break status;
        }
        assert!(patched.elapsed() < RETRY_PERIOD * 3, "the former leader still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("leader stopped {:.1} s after losing the Lease", patched.elapsed().as_secs_f64());
    assert_eq!(status.code(), Some(1), "exits non-zero so that Kubernetes restarts it as a standby");
    let log = std::fs::read_to_string(only.log_path()).unwrap();
    assert!(log.contains("lost the Lease"), "{log}");
    assert_eq!(leader::holder(&env).await, "intruder", "it did not fight for the Lease on the way out");
}

#[tokio::test]
async fn a_leader_killed_with_fifty_captures_in_flight_leaves_all_of_them_to_the_standby_each_done_once() {
    const CAPTURES: usize = 50;
    let env = CaptureEnv::new("leader-fifty").await;
    let mut pair = elect(&env).await;
    let ec2 = support::stack().ec2().await;
    // Made first, in one call: one RunInstances per instance kept moto busy for minutes on a long-lived stack.
    let instances: Vec<String> = support::run_instances(&ec2, CAPTURES, 1).await.into_iter().map(|i| i.instance_id).collect();
    for (i, instance) in instances.iter().enumerate() {
        set_instance_memory(instance, 9 * MIB + 3);
        env.apply(&capture_yaml(&format!("c{i}"), instance, "")).await;
    }
    // Killed once every capture has acted on AWS (its volatile data command sent) and before most have finished.
    let deadline = Instant::now() + Duration::from_secs(300);
    let (acting, done) = loop {
        let list = env.captures().list(&Default::default()).await.unwrap().items;
        let acting = list.iter().filter(|c| c.status.as_ref().and_then(|s| s.steps.volatile.as_ref()).is_some_and(|v| v.command_id.is_some())).count();
        let done = list.iter().filter(|c| c.status.as_ref().is_some_and(|s| s.completed_at.is_some())).count();
        if acting == CAPTURES || done > 0 {
            break (acting, done);
        }
        assert!(Instant::now() < deadline, "only {acting} of {CAPTURES} captures acted on AWS in 300 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    pair.leader.kill();
    println!("leader killed with {acting} of {CAPTURES} captures acting on AWS and {done} complete");
    assert!(done < CAPTURES / 2, "most captures were still in flight at the kill: {done} complete");
    leader::wait_for_holder(&env, LEASE_DURATION * 3, |h| h.starts_with(&format!("{}_", pair.standby_name))).await;

    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let list = env.captures().list(&Default::default()).await.unwrap().items;
        if list.iter().filter(|c| c.status.as_ref().is_some_and(|s| s.completed_at.is_some())).count() == CAPTURES {
            break;
        }
        assert!(Instant::now() < deadline, "the standby did not finish every capture");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (i, instance) in instances.iter().enumerate() {
        let capture = env.captures().get(&format!("c{i}")).await.unwrap();
        support::side_effects::assert_each_side_effect_once(instance, &capture).await;
    }
    let (_, aws, _) = activity(&pair.standby).await;
    assert!(aws > 0.0, "the new leader finished the captures");
}
