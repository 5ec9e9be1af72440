//! The control plane goes away mid-capture: the kube-apiserver killed for 20 s and started again, and
//! separately etcd under a running API server. Captures in flight complete, each side effect once. Each test
//! has a control plane of its own (tests/support/control_plane.rs); AWS is the shared stack's.

mod support;

use std::time::{Duration, Instant};

use support::{
    control_plane::ControlPlane,
    fixtures::{CaptureEnv, capture_yaml, set_instance_memory},
};

const CAPTURES: usize = 5;
const OUTAGE: Duration = Duration::from_secs(20);

enum Outage {
    ApiServer,
    Etcd,
}

async fn captures_survive(prefix: &str, outage: Outage) {
    let mut plane = ControlPlane::start().await;
    let env = CaptureEnv::on(plane.kube().await, prefix).await;
    let ec2 = support::stack().ec2().await;
    let mut vars = env.controller_env();
    vars.push(("KUBECONFIG", plane.kubeconfig.display().to_string()));
    let controller = support::controller::ControllerProcess::start(&vars, &format!("{}-controller", env.namespace));
    let mut instances = Vec::new();
    for i in 0..CAPTURES {
        let instance = support::run_instance(&ec2, 1, &[]).await.instance_id;
        // Large enough that the memory steps are still uploading when the control plane goes.
        set_instance_memory(&instance, 40 * 1024 * 1024 + 9);
        env.apply(&capture_yaml(&format!("c{i}"), &instance, "")).await;
        instances.push(instance);
    }
    env.wait_for("c0", Duration::from_secs(120), |c| c.status.as_ref().and_then(|s| s.steps.memory.as_ref()).is_some_and(|m| m.command_id.is_some())).await;
    let before = env.captures().list(&Default::default()).await.unwrap().items;
    let done_before = before.iter().filter(|c| c.status.as_ref().is_some_and(|s| s.completed_at.is_some())).count();

    match outage {
        Outage::ApiServer => plane.stop_apiserver(),
        Outage::Etcd => plane.stop_etcd(),
    }
    tokio::time::sleep(OUTAGE).await;
    match outage {
        Outage::ApiServer => plane.start_apiserver().await,
        Outage::Etcd => plane.start_etcd().await,
    }
    let back = Instant::now();
    let env = CaptureEnv { kube: plane.kube().await, ..env };
    let deadline = back + Duration::from_secs(300);
    loop {
        let list = env.captures().list(&Default::default()).await;
        if let Ok(list) = list {
            if list.items.iter().filter(|c| c.status.as_ref().is_some_and(|s| s.completed_at.is_some())).count() == CAPTURES {
                break;
            }
        }
        assert!(Instant::now() < deadline, "captures did not complete after the control plane came back");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("{CAPTURES} captures, {done_before} complete before a {OUTAGE:?} outage, all complete {:.1} s after it", back.elapsed().as_secs_f64());
    assert!(done_before < CAPTURES, "the outage came while captures were in flight");
    drop(controller);
    for (i, instance) in instances.iter().enumerate() {
        let capture = env.captures().get(&format!("c{i}")).await.unwrap();
        support::side_effects::assert_each_side_effect_once(instance, &capture).await;
    }
}

#[tokio::test]
async fn captures_in_flight_complete_once_after_the_api_server_is_down_for_20_s() {
    captures_survive("apiserver-down", Outage::ApiServer).await;
}

#[tokio::test]
async fn captures_in_flight_complete_once_after_etcd_is_down_for_20_s() {
    captures_survive("etcd-down", Outage::Etcd).await;
}
