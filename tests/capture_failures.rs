//! Bad input and failures: each ends in a specific reason and a message naming the instance and the error.

mod support;

use std::time::Duration;

use forensic_capture::api::{ForensicCapture, Phase, StepState};
use support::fixtures::{CaptureEnv, capture_yaml, set_instance_memory, set_instance_memory_with};

fn condition(capture: &ForensicCapture, type_: &str) -> (String, String, String) {
    let c = capture.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == type_).unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn step(capture: &ForensicCapture, name: &str) -> (StepState, String, String) {
    let steps = &capture.status.as_ref().unwrap().steps;
    let r = match name {
        "volatile" => &steps.volatile,
        "memory" => &steps.memory,
        "disk" => &steps.disk,
        _ => &steps.isolation,
    }
    .clone()
    .unwrap_or_else(|| panic!("no {name} record"));
    (r.state, r.reason.unwrap_or_default(), r.message.unwrap_or_default())
}

#[tokio::test]
async fn instance_not_found_fails_with_no_side_effects() {
    let env = CaptureEnv::new("notfound").await;
    let _controller = env.start_controller("notfound");
    env.apply(&capture_yaml("ghost", "i-0123456789abcdef0", "")).await;
    let capture = env.wait_completed("ghost").await;
    let (status, reason, message) = condition(&capture, "Failed");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InstanceNotFound"));
    assert!(message.contains("i-0123456789abcdef0"), "{message}");
    assert_eq!(capture.status.as_ref().unwrap().phase, Some(Phase::Failed));
    for name in ["volatile", "memory", "disk", "isolation"] {
        assert_eq!(step(&capture, name).0, StepState::Skipped, "{name}");
    }
    assert!(capture.status.unwrap().artifacts.is_empty());
}

#[tokio::test]
async fn terminated_and_stopped_instances_get_specific_reasons() {
    let stack = support::stack();
    let env = CaptureEnv::new("states").await;
    let ec2 = stack.ec2().await;
    let terminated = support::run_instance(&ec2, 0, &[]).await.instance_id;
    ec2.terminate_instances().instance_ids(&terminated).send().await.unwrap();
    let stopped = support::run_instance(&ec2, 0, &[]).await.instance_id;
    ec2.stop_instances().instance_ids(&stopped).send().await.unwrap();
    let _controller = env.start_controller("states");
    env.apply(&capture_yaml("terminated", &terminated, "")).await;
    env.apply(&capture_yaml("stopped", &stopped, "")).await;

    let capture = env.wait_completed("terminated").await;
    let (_, reason, message) = condition(&capture, "Failed");
    assert_eq!(reason, "InstanceTerminated");
    assert!(message.contains(&terminated));

    let capture = env.wait_completed("stopped").await;
    assert_eq!(step(&capture, "volatile").1, "InstanceNotRunning");
    assert_eq!(step(&capture, "memory").1, "InstanceNotRunning");
    assert!(step(&capture, "memory").2.contains(&stopped));
    assert_eq!(step(&capture, "disk").0, StepState::Succeeded, "a stopped instance's disks are still snapshotted");
    assert_eq!(step(&capture, "isolation").0, StepState::Succeeded);
}

#[tokio::test]
async fn unmanaged_instance_skips_acquisition_and_still_gets_disk_and_isolation() {
    let stack = support::stack();
    let env = CaptureEnv::new("unmanaged").await;
    let instance = support::run_instance(&stack.ec2().await, 1, &[("ssm-simulator:agent", "absent")]).await.instance_id;
    let _controller = env.start_controller("unmanaged");
    env.apply(&capture_yaml("unmanaged", &instance, "")).await;
    let capture = env.wait_completed("unmanaged").await;
    for name in ["volatile", "memory"] {
        let (state, reason, message) = step(&capture, name);
        assert_eq!((state, reason.as_str()), (StepState::Skipped, "NotSsmManaged"));
        assert!(message.contains(&instance));
    }
    assert_eq!(step(&capture, "disk").0, StepState::Succeeded);
    assert_eq!(step(&capture, "isolation").0, StepState::Succeeded);
    assert_eq!(condition(&capture, "Isolated").0, "True");
    assert_eq!(condition(&capture, "Ready").1, "NotSsmManaged");
}

#[tokio::test]
async fn hold_policy_leaves_an_unacquired_instance_unisolated() {
    let stack = support::stack();
    let env = CaptureEnv::new("hold").await;
    let instance = support::run_instance(&stack.ec2().await, 0, &[("ssm-simulator:agent", "absent")]).await.instance_id;
    let groups_of = |described: aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput| -> Vec<String> {
        described.reservations()[0].instances()[0].network_interfaces()[0].groups().iter().filter_map(|g| g.group_id().map(String::from)).collect()
    };
    let before = groups_of(stack.ec2().await.describe_instances().instance_ids(&instance).send().await.unwrap());
    let _controller = env.start_controller("hold");
    env.apply(&capture_yaml("hold", &instance, "  isolation:\n    onAcquisitionFailure: Hold\n")).await;
    let capture = env.wait_completed("hold").await;
    assert_eq!(step(&capture, "isolation").1, "HeldAfterAcquisitionFailure");
    let after = groups_of(stack.ec2().await.describe_instances().instance_ids(&instance).send().await.unwrap());
    assert_eq!(after, before, "the interface keeps its own security groups");
    assert!(capture.status.unwrap().isolation.is_none(), "nothing was changed");
}

#[tokio::test]
async fn avml_checksum_mismatch_fails_memory_and_runs_nothing() {
    let stack = support::stack();
    let mut env = CaptureEnv::new("avmlsum").await;
    env.avml_sha256 = "0".repeat(64);
    let instance = support::run_instance(&stack.ec2().await, 0, &[]).await.instance_id;
    set_instance_memory(&instance, 9 * 1024 * 1024);
    let _controller = env.start_controller("avmlsum");
    env.apply(&capture_yaml("avmlsum", &instance, "")).await;
    let capture = env.wait_completed("avmlsum").await;
    let (state, reason, message) = step(&capture, "memory");
    assert_eq!((state, reason.as_str()), (StepState::Failed, "AvmlChecksumMismatch"));
    assert!(message.contains(&instance) && message.contains("expected 0000"), "{message}");
    assert_eq!(step(&capture, "volatile").0, StepState::Succeeded);
    assert_eq!(step(&capture, "isolation").0, StepState::Succeeded, "default policy isolates anyway");
}

#[tokio::test]
async fn missing_evidence_bucket_fails_the_s3_steps_with_its_reason() {
    let stack = support::stack();
    let mut env = CaptureEnv::new("nobucket").await;
    env.bucket = "forensic-capture-no-such-bucket".into();
    let instance = support::run_instance(&stack.ec2().await, 0, &[]).await.instance_id;
    let _controller = env.start_controller("nobucket");
    env.apply(&capture_yaml("nobucket", &instance, "")).await;
    let capture = env.wait_completed("nobucket").await;
    for name in ["volatile", "memory"] {
        let (state, reason, message) = step(&capture, name);
        assert_eq!((state, reason.as_str()), (StepState::Failed, "EvidenceBucketNotFound"), "{name}");
        assert!(message.contains("forensic-capture-no-such-bucket") && message.contains(&instance), "{message}");
    }
    assert_eq!(step(&capture, "disk").0, StepState::Succeeded);
}

#[tokio::test]
async fn command_failure_and_timeout_are_reported_with_the_command() {
    let stack = support::stack();
    let mut env = CaptureEnv::new("cmdfail").await;
    let instance = support::run_instance(&stack.ec2().await, 0, &[]).await.instance_id;
    // An AVML that fails as the real one does under kernel lockdown.
    let failing = b"#!/bin/sh\necho 'cannot read /proc/kcore: Operation not permitted (kernel lockdown)' >&2\nexit 1\n".to_vec();
    env.avml_sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&failing));
    let s3 = stack.s3().await;
    s3.put_object().bucket(&env.bucket).key("tools/avml-failing").body(failing.into()).send().await.unwrap();
    env.avml_uri = format!("s3://{}/tools/avml-failing", env.bucket);
    // A collector that hangs, as `who` does on a locked utmp or `lsof` on a dead NFS mount: the volatile script
    // cannot finish within its one-second execution timeout however fast the machine (it once finished in time
    // on an idle one), so the timeout ends it.
    hang_collector(&instance, "who");
    let mut controller_env = env.controller_env();
    controller_env.push(("FC_VOLATILE_TIMEOUT_SECONDS", "1".into()));
    let _controller = support::controller::ControllerProcess::start(&controller_env, &format!("{}-cmdfail", env.namespace));
    env.apply(&capture_yaml("cmdfail", &instance, "")).await;
    let capture = env.wait_for("cmdfail", Duration::from_secs(240), |c| c.status.as_ref().is_some_and(|s| s.completed_at.is_some())).await;
    let (state, reason, message) = step(&capture, "volatile");
    assert_eq!((state, reason.as_str()), (StepState::Failed, "CommandTimedOut"), "{message}");
    assert!(message.contains(&instance) && message.contains("command"), "{message}");
    let (state, reason, message) = step(&capture, "memory");
    assert_eq!((state, reason.as_str()), (StepState::Failed, "AcquisitionFailed"), "{message}");
    assert!(message.contains("kernel lockdown") && message.contains(&instance), "{message}");
}

/// Puts a `tool` that never returns first on the instance agent's PATH (the simulator's sandbox sees the host's
/// root read-only, the instance's directory included).
fn hang_collector(instance_id: &str, tool: &str) {
    let dir = support::stack().ssm_state_dir().join("instances").join(instance_id);
    let bin = dir.join("hung-tools");
    std::fs::create_dir_all(&bin).unwrap();
    let path = bin.join(tool);
    std::fs::write(&path, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let search = format!("PATH={}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n", bin.display());
    std::fs::write(dir.join("agent.env"), search).unwrap();
}

#[tokio::test]
async fn second_capture_of_an_instance_waits_for_the_first() {
    let stack = support::stack();
    let env = CaptureEnv::new("lock").await;
    let instance = support::run_instance(&stack.ec2().await, 0, &[]).await.instance_id;
    set_instance_memory(&instance, 9 * 1024 * 1024);
    let _controller = env.start_controller("lock");
    env.apply(&capture_yaml("first", &instance, "")).await;
    env.wait_for("first", Duration::from_secs(60), |c| c.status.as_ref().is_some_and(|s| s.steps.volatile.is_some())).await;
    env.apply(&capture_yaml("second", &instance, "")).await;
    let waiting = env
        .wait_for("second", Duration::from_secs(60), |c| {
            c.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.reason == "WaitingForInstanceLock"))
        })
        .await;
    let (_, _, message) = condition(&waiting, "Ready");
    assert!(message.contains("first") && message.contains(&instance), "{message}");
    let first = env.wait_completed("first").await;
    let second = env.wait_completed("second").await;
    let first_done = first.status.unwrap().completed_at.unwrap().0;
    let second_started = second.status.as_ref().unwrap().steps.volatile.as_ref().unwrap().started_at.clone().unwrap().0;
    assert!(second_started >= first_done, "the second capture acted only after the first ended");
}

/// The quality gate, on images the instance hashed and uploaded intact but that hold nothing analysable. Each is
/// refused with its reason, kept as evidence (listed, with what the gate measured), and the capture goes on to
/// disk and isolation under the default policy.
#[tokio::test]
async fn zeroed_truncated_and_bannerless_images_are_refused_by_the_quality_gate() {
    let stack = support::stack();
    let env = CaptureEnv::new("gate").await;
    let ec2 = stack.ec2().await;
    let mib = 1024 * 1024;
    let cases = [
        ("zeroed", "FAKE_AVML_DATA=zeros\n", "ImageMostlyZero", "all zeros"),
        ("truncated", "FAKE_AVML_TRUNCATE_BYTES=1000\n", "ImageTruncated", "with 1000 of its bytes missing"),
        ("bannerless", "FAKE_AVML_BANNER=\n", "KernelBannerMissing", "no kernel banner"),
    ];
    let mut instances = Vec::new();
    for (name, extra, _, _) in cases {
        let instance = support::run_instance(&ec2, 0, &[]).await.instance_id;
        set_instance_memory_with(&instance, 9 * mib, extra);
        env.apply(&capture_yaml(name, &instance, "")).await;
        instances.push(instance);
    }
    let _controller = env.start_controller("gate");
    for ((name, _, reason, detail), instance) in cases.into_iter().zip(&instances) {
        let capture = env.wait_completed(name).await;
        let (state, got, message) = step(&capture, "memory");
        assert_eq!((state, got.as_str()), (StepState::Failed, reason), "{name}: {message}");
        assert!(message.contains(instance.as_str()) && message.contains("quality gate") && message.contains(detail), "{name}: {message}");
        let status = capture.status.as_ref().unwrap();
        let memory = status.artifacts.iter().find(|a| a.name == "memory").unwrap_or_else(|| panic!("{name}: the refused image is still listed"));
        assert!(memory.sha256.is_some(), "{name}");
        if name == "zeroed" {
            assert_eq!(memory.image.as_ref().map(|q| q.zero_page_percent), Some(100.0), "{name}");
        }
        let (_, failed_reason, _) = condition(&capture, "Failed");
        assert_eq!(failed_reason, reason, "{name}");
        assert_eq!(step(&capture, "disk").0, StepState::Succeeded, "{name}");
        assert_eq!(step(&capture, "isolation").0, StepState::Succeeded, "{name}: onAcquisitionFailure defaults to Isolate");
    }
}

/// The gate's coverage check against the instance's memory, with the default minimum (1%): a 6 MiB image of a
/// 1 GiB instance is implausible.
#[tokio::test]
async fn an_image_far_smaller_than_the_instance_memory_is_refused_as_incomplete() {
    let stack = support::stack();
    let env = CaptureEnv::new("coverage").await;
    let instance = support::run_instance(&stack.ec2().await, 0, &[]).await.instance_id;
    set_instance_memory(&instance, 6 * 1024 * 1024);
    let _controller = env.start_controller_with_default_gate("coverage");
    env.apply(&capture_yaml("coverage", &instance, "")).await;
    let capture = env.wait_completed("coverage").await;
    let (state, reason, message) = step(&capture, "memory");
    assert_eq!((state, reason.as_str()), (StepState::Failed, "ImageIncomplete"), "{message}");
    assert!(message.contains("0.6%") && message.contains("the minimum is 1%"), "{message}");
}

/// A Windows instance is never sent the Linux shell scripts: volatile and memory are skipped before any command,
/// and disk and isolation follow the policy.
#[tokio::test]
async fn windows_instances_get_no_shell_script_and_are_still_snapshotted_and_isolated() {
    let stack = support::stack();
    let env = CaptureEnv::new("windows").await;
    let ec2 = stack.ec2().await;
    let instance = support::run_instance(&ec2, 0, &[]).await;
    let windows_image = support::amazon_image(&ec2, true).await;
    let run = ec2
        .run_instances()
        .image_id(windows_image)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .subnet_id(&instance.subnet_id)
        .send()
        .await
        .unwrap();
    let windows = run.instances()[0].instance_id().unwrap().to_string();
    let _controller = env.start_controller("windows");
    env.apply(&capture_yaml("windows", &windows, "")).await;
    let capture = env.wait_completed("windows").await;
    for name in ["volatile", "memory"] {
        let (state, reason, message) = step(&capture, name);
        assert_eq!((state, reason.as_str()), (StepState::Skipped, "UnsupportedPlatform"), "{name}: {message}");
        assert!(message.contains(&windows) && message.contains("Windows"), "{message}");
    }
    assert_eq!(step(&capture, "disk").0, StepState::Succeeded);
    assert_eq!(step(&capture, "isolation").0, StepState::Succeeded);
    let commands = stack.ssm().await.list_commands().instance_id(&windows).send().await.unwrap();
    assert!(commands.commands().is_empty(), "no SSM command was sent: {:?}", commands.commands());
}

/// SSM refusing the controller (no ssm:DescribeInstanceInformation) is a permissions problem, not a property of
/// the instance: the SSM steps are skipped as AccessDenied naming the operation, and disk and isolation still
/// run. The SSM simulator denies the operation to this test's own access key (dev/ssm-simulator/src/deny.rs).
#[tokio::test]
async fn an_ssm_access_denial_while_resolving_is_reported_as_access_denied_not_as_an_unmanaged_instance() {
    let stack = support::stack();
    let ec2 = stack.ec2().await;
    let instance = support::run_instance(&ec2, 0, &[]).await.instance_id;
    let key = format!("AKIAFCDENY{:010}", std::process::id());
    let denials = stack.ssm_state_dir().join("access-denied");
    std::fs::create_dir_all(&denials).unwrap();
    std::fs::write(denials.join(&key), "DescribeInstanceInformation\n").unwrap();
    let env = CaptureEnv::new("ssmdenied").await;
    let mut vars = env.controller_env();
    vars.push(("AWS_ACCESS_KEY_ID", key));
    let _controller = support::controller::ControllerProcess::start(&vars, &format!("{}-ssmdenied", env.namespace));
    env.apply(&capture_yaml("denied", &instance, "")).await;
    let capture = env.wait_completed("denied").await;
    for name in ["volatile", "memory"] {
        let (state, reason, message) = step(&capture, name);
        assert_eq!((state, reason.as_str()), (StepState::Skipped, "AccessDenied"), "{name}: {message}");
        assert!(message.contains(&instance) && message.contains("ssm:DescribeInstanceInformation: AccessDeniedException"), "{name}: {message}");
    }
    assert_eq!(step(&capture, "disk").0, StepState::Succeeded, "the snapshots do not need SSM");
    assert_eq!(step(&capture, "isolation").0, StepState::Succeeded, "containment does not need SSM");
    let target = capture.status.as_ref().unwrap().target.clone().unwrap();
    assert!(target.ssm_access_denied.as_deref().is_some_and(|d| d.contains("not authorized to perform: ssm:DescribeInstanceInformation")), "{target:?}");
    assert_eq!(condition(&capture, "Acquired").1, "AccessDenied");
}
