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

/// What the killed capture is of.
enum Scenario {
    /// An instance with one extra volume.
    Plain,
    /// An instance whose root is under the AWS managed key for EBS, its snapshots handed to a forensic account
    /// in another region (re-encrypted, shared, copied, unshared).
    ForensicCopies,
}

const FORENSIC_ACCOUNT: &str = "666677778888";

async fn capture_with_kills(prefix: &str, kill: KillWhen, scenario: Scenario) {
    let stack = support::stack();
    let env = CaptureEnv::new(prefix).await;
    let ec2 = stack.ec2().await;
    let copies = matches!(scenario, Scenario::ForensicCopies);
    let (instance, extra, vars) = match scenario {
        Scenario::Plain => (support::run_instance(&ec2, 1, &[]).await.instance_id, String::new(), env.controller_env()),
        Scenario::ForensicCopies => {
            let region = if stack.region() == "eu-central-1" { "eu-west-1" } else { "eu-central-1" };
            let config = stack.aws_in(FORENSIC_ACCOUNT).await.to_builder().region(aws_config::Region::new(region)).build();
            let key = aws_sdk_kms::Client::new(&config).create_key().send().await.unwrap();
            let key = key.key_metadata().unwrap().arn().unwrap().to_string();
            let mut vars = env.controller_env();
            vars.extend([("FC_FORENSIC_ACCOUNT_ID", FORENSIC_ACCOUNT.to_string()), ("FC_FORENSIC_REGION", region.into()), ("FC_FORENSIC_KMS_KEY_ID", key)]);
            (support::run_instance_with_an_encrypted_root(&ec2).await, "  disk:\n    forensicCopy: {}\n".to_string(), vars)
        }
    };
    set_instance_memory(&instance, 20 * 1024 * 1024 + 7);
    let mut controller = support::controller::ControllerProcess::start(&vars, &format!("{}-{prefix}", env.namespace));
    env.apply(&capture_yaml("crashy", &instance, &extra)).await;

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
        // The hand-over comes last: its kills are kept for it, or the earlier steps would use them all up.
        let in_scope = !copies || capture.status.as_ref().is_some_and(|s| s.steps.forensic_copy.is_some());
        let kill_now = controller.starts <= MAX_KILLS
            && in_scope
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
    if copies {
        let status = final_capture.status.as_ref().unwrap();
        let record = status.steps.forensic_copy.as_ref().expect("the forensicCopy step ran");
        assert_eq!(record.state, forensic_capture::api::StepState::Succeeded, "{status:#?}");
        let purposes: Vec<&str> =
            status.artifacts.iter().filter_map(|a| a.copy.as_ref()).map(|c| c.purpose.as_str()).collect();
        assert_eq!(purposes.iter().filter(|p| **p == "Forensic").count(), 2, "{purposes:?}");
        assert_eq!(purposes.iter().filter(|p| **p == "Shareable").count(), 1, "only the encrypted root is re-encrypted: {purposes:?}");
    }
}

#[tokio::test]
async fn kill_after_every_status_change_duplicates_nothing() {
    capture_with_kills("crash-status", KillWhen::EveryStatusChange, Scenario::Plain).await;
}

#[tokio::test]
async fn kill_after_every_status_change_of_a_hand_over_to_a_forensic_account_duplicates_nothing() {
    capture_with_kills("crash-copies", KillWhen::EveryStatusChange, Scenario::ForensicCopies).await;
}

#[tokio::test]
async fn kill_on_a_fixed_beat_duplicates_nothing() {
    capture_with_kills("crash-beat", KillWhen::Every(Duration::from_millis(400)), Scenario::Plain).await;
}
