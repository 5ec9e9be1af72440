//! Crash safety: a controller SIGKILLed at any instant and restarted produces no duplicate SSM command,
//! snapshot set or security group, and loses no artifact.

mod support;

use std::time::{Duration, Instant};

use forensic_capture::api::ForensicCapture;
use support::fixtures::{CaptureEnv, capture_yaml, set_instance_memory};

enum KillWhen {
    /// Right after every status change the test observes: just after intent was recorded, or just after a
    /// side effect's result was.
    EveryStatusChange,
    /// On a beat unrelated to what the controller is doing: between an AWS call and its record.
    Every(Duration),
}

/// After this many kills the controller is left alone to finish: on a slow machine a beat shorter than a
/// controller's start-up would otherwise never let it make progress.
const MAX_KILLS: u32 = 12;

async fn capture_with_kills(prefix: &str, kill: KillWhen) {
    let stack = support::stack();
    let env = CaptureEnv::new(prefix).await;
    let ec2 = stack.ec2().await;
    let instance = support::run_instance(&ec2, 1, &[]).await.instance_id;
    set_instance_memory(&instance, 20 * 1024 * 1024 + 7);
    let mut controller = env.start_controller(prefix);
    env.apply(&capture_yaml("crashy", &instance, "")).await;

    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last_status = String::new();
    let mut last_kill = Instant::now();
    let final_capture: ForensicCapture = loop {
        assert!(Instant::now() < deadline, "capture did not complete under repeated kills");
        let capture = env.captures().get("crashy").await.unwrap();
        if capture.status.as_ref().is_some_and(|s| s.completed_at.is_some()) {
            break capture;
        }
        let now_status = serde_json::to_string(&capture.status).unwrap();
        let kill_now = controller.starts <= MAX_KILLS
            && match kill {
                KillWhen::EveryStatusChange => now_status != last_status,
                // Varied a little, so kills do not line up with the controller's own rhythm.
                KillWhen::Every(beat) => last_kill.elapsed() >= beat + Duration::from_millis(97 * u64::from(controller.starts % 7)),
            };
        if kill_now {
            controller.restart();
            last_kill = Instant::now();
        }
        last_status = now_status;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(controller.starts >= 4, "only {} controller starts: the test did not exercise restarts", controller.starts);

    support::side_effects::assert_each_side_effect_once(&instance, &final_capture).await;
}

#[tokio::test]
async fn kill_after_every_status_change_duplicates_nothing() {
    capture_with_kills("crash-status", KillWhen::EveryStatusChange).await;
}

#[tokio::test]
async fn kill_on_a_fixed_beat_duplicates_nothing() {
    capture_with_kills("crash-beat", KillWhen::Every(Duration::from_millis(400))).await;
}
