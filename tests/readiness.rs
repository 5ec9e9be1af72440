//! Readiness: a ForensicReadiness over instances selected by tag — one healthy, one whose SSM agent is
//! offline, one arm64 instance with no arm64 AVML configured, one in an Auto Scaling group behind a target
//! group — reports exactly those reasons and containment needs, the metrics show the counts, every request
//! the controller sent was a read, and `forensic-capture readiness` gives the same answer from a terminal.
//!
//! The Permissions check: on the shared stack (whose moto knows no IAM identity for its keys, so nothing can be
//! simulated) it falls back to EC2 dry runs and passes, and the dry runs count as reads; under moto's IAM
//! enforcement, credentials bound to exactly iam/controller-policy.json pass by simulation, credentials that
//! lack an action (or are denied one) fail with PermissionsMissing naming it with the simulation's decision,
//! and credentials that may not simulate fall back to dry runs, which name a denied EC2 call.
//!
//! The fifth case of the issue, memory beyond the upload plan's limits, is not here: the limit is about 40 TiB
//! (S3's parts), more than any EC2 instance type has (the largest is 32 TiB; moto knows fewer still), so no
//! instance can be made that exceeds it. Its rule is tested in src/readiness.rs, against a 48 TiB target.

mod support;

use std::time::{Duration, Instant};

use forensic_capture::api::ForensicReadiness;
use kube::Api;
use serde_json::{Value, json};
use support::{
    controller::ControllerProcess,
    endpoint,
    faults::{self, FaultProxy},
    fixtures::CaptureEnv,
    iam::{CONTROLLER_USER, EnforcedAws, Keys, controller_policy, fleet_behind_a_load_balancer, user_arn},
    run_instance, unique,
};

async fn tag(ec2: &aws_sdk_ec2::Client, instances: &[&str], key: &str, value: &str) {
    let mut request = ec2.create_tags().tags(aws_sdk_ec2::types::Tag::builder().key(key).value(value).build());
    for i in instances {
        request = request.resources(*i);
    }
    request.send().await.unwrap();
}

/// An arm64 Linux instance (moto's Architecture comes from the AMI).
async fn arm64_instance(ec2: &aws_sdk_ec2::Client, subnet_id: &str) -> String {
    let images = ec2.describe_images().owners("amazon").send().await.unwrap();
    let image = images
        .images()
        .iter()
        .find(|i| i.architecture().map(|a| a.as_str()) == Some("arm64") && i.platform().is_none())
        .and_then(|i| i.image_id())
        .expect("an arm64 Linux AMI in moto")
        .to_string();
    let run = ec2.run_instances().image_id(image).instance_type(aws_sdk_ec2::types::InstanceType::T4gMicro).min_count(1).max_count(1).subnet_id(subnet_id).send().await.unwrap();
    run.instances()[0].instance_id().unwrap().to_string()
}

#[tokio::test]
async fn readiness_over_four_kinds_of_instance_reports_exactly_their_reasons_and_changes_nothing() {
    let stack = support::stack();
    let aws = stack.aws().await;
    let ec2 = stack.ec2().await;
    let env = CaptureEnv::new("readiness").await;
    let healthy = run_instance(&ec2, 0, &[]).await;
    let offline = run_instance(&ec2, 0, &[("ssm-simulator:agent", "offline")]).await.instance_id;
    let arm = arm64_instance(&ec2, &healthy.subnet_id).await;
    let fleet = fleet_behind_a_load_balancer(&aws).await;
    let in_group = fleet.instances[0].clone();
    let selector = unique("ready");
    tag(&ec2, &[&healthy.instance_id, &offline, &arm, &in_group], "readiness-test", &selector).await;

    let proxy = FaultProxy::start(json!({})).await;
    let mut vars = env.controller_env();
    vars.extend(proxy.controller_env());
    let controller = ControllerProcess::start(&vars, &format!("{}-readiness", env.namespace));
    let readiness: ForensicReadiness = serde_yaml::from_str(&format!(
        "apiVersion: forensic-capture.dev/v1alpha1\nkind: ForensicReadiness\nmetadata:\n  name: fleet\nspec:\n  instanceTags: {{readiness-test: {selector}}}\n  intervalMinutes: 30\n"
    ))
    .unwrap();
    let api: Api<ForensicReadiness> = Api::namespaced(env.kube.clone(), &env.namespace);
    api.create(&Default::default(), &readiness).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        let current = api.get("fleet").await.unwrap();
        if let Some(status) = current.status.filter(|s| s.checked_at.is_some()) {
            break status;
        }
        assert!(Instant::now() < deadline, "no readiness check in 90 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    assert_eq!((status.instances, status.ready, status.not_ready), (4, 2, 2), "{status:#?}");
    let reasons: Vec<(&str, u32)> = status.reasons.iter().map(|(r, n)| (r.as_str(), *n)).collect();
    assert_eq!(reasons, [("AvmlNotConfigured", 1), ("NotSsmManaged", 1)], "{status:#?}");
    let by_instance: Vec<(&str, Vec<&str>)> =
        status.not_ready_instances.iter().map(|i| (i.instance_id.as_str(), i.problems.iter().map(|p| p.reason.as_str()).collect())).collect();
    let mut expected = vec![(offline.as_str(), vec!["NotSsmManaged"]), (arm.as_str(), vec!["AvmlNotConfigured"])];
    expected.sort();
    let mut by_instance_sorted = by_instance.clone();
    by_instance_sorted.sort();
    assert_eq!(by_instance_sorted, expected);
    let arm_problem = &status.not_ready_instances.iter().find(|i| i.instance_id == arm).unwrap().problems[0];
    assert!(arm_problem.message.contains("arm64"), "{}", arm_problem.message);
    let needs: Vec<(&str, u32)> = status.containment_needs.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    assert_eq!(needs, [("AutoScalingGroup", 1), ("LoadBalancers", 1)], "only the fleet instance needs them: {status:#?}");
    let checks: Vec<(&str, bool)> = status.accounts.iter().flat_map(|a| a.checks.iter().map(|c| (c.name.as_str(), c.ok))).collect();
    assert_eq!(checks, [("EvidenceBucket", true), ("PresignRole", true), ("Permissions", true)], "{status:#?}");
    // The stack's keys are no IAM user moto knows, so nothing could be simulated: dry runs, and the message says so.
    let permissions = &status.accounts[0].checks[2].message;
    assert!(permissions.contains("EC2 DryRun") && permissions.contains("is allowed all 5 action(s)"), "{permissions}");
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "NotReady"));
    assert!(ready.message.contains("2 of 4"), "{}", ready.message);

    // The metrics show the counts.
    let scrape = endpoint::scrape(controller.metrics_address(Duration::from_secs(20))).await;
    let name = format!("{}/fleet", env.namespace);
    let gauge = |state: &str, reason: &str| scrape.value("forensic_capture_readiness_instances", &[("readiness", &name), ("state", state), ("reason", reason)]);
    assert_eq!(gauge("ready", ""), Some(2.0), "{}", scrape.text);
    assert_eq!(gauge("not_ready", "NotSsmManaged"), Some(1.0));
    assert_eq!(gauge("not_ready", "AvmlNotConfigured"), Some(1.0));
    assert_eq!(scrape.value("forensic_capture_readiness_containment_needs", &[("readiness", &name), ("need", "AutoScalingGroup")]), Some(1.0));

    // Nothing was changed: every request the controller sent was a read (and the presign role's session).
    let operations = proxy.operations_seen().await;
    assert!(operations.iter().any(|o| o == "ssm:DescribeInstanceInformation"), "{operations:?}");
    let writes = faults::writes(&operations);
    assert!(writes.is_empty(), "readiness changed something: {writes:?}");
    let dry_run = format!("ec2:CreateSnapshots{}", faults::DRY_RUN);
    assert!(operations.contains(&dry_run), "the Permissions check's dry runs reached EC2 as dry runs: {operations:?}");

    // The same check from a terminal: the two instances by ID, as JSON, exit status 1 (one is not ready).
    let readiness_command = |format: &str, extra: &[(&str, &str)]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_forensic-capture"));
        command.args(["readiness", "--instance-id", &healthy.instance_id, "--instance-id", &offline, "-o", format]).env_clear();
        command.env("PATH", std::env::var("PATH").unwrap_or_default()).envs(stack.vars()).env("FC_S3_FORCE_PATH_STYLE", "true");
        command.envs(env.controller_env()).envs(extra.iter().copied());
        command.output().unwrap()
    };
    let output = readiness_command("json", &[]);
    assert_eq!(output.status.code(), Some(1), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!((printed["instances"].clone(), printed["ready"].clone(), printed["notReady"].clone()), (json!(2), json!(1), json!(1)), "{printed}");
    assert_eq!(printed["notReadyInstances"][0]["instanceId"], json!(offline));
    let table = readiness_command("table", &[]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains(&offline) && text.contains("NotSsmManaged") && text.contains("NotReady: 1 of 2 instance(s) not ready"), "{text}");

    // A signing key that does not exist fails its account check, naming the key and KMS's error.
    let output = readiness_command("json", &[("FC_KMS_SIGNING_KEY_ID", "alias/no-such-key")]);
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let signing = printed["accounts"][0]["checks"].as_array().unwrap().iter().find(|c| c["name"] == "SigningKey").cloned().expect("a SigningKey check");
    assert_eq!((signing["ok"].clone(), signing["reason"].clone()), (json!(false), json!("SigningKeyUnusable")), "{signing}");
    assert!(signing["message"].as_str().unwrap().contains("alias/no-such-key"), "{signing}");
}

/// `forensic-capture readiness` for one instance, as `keys`, against an enforcing moto; its JSON status.
fn readiness_as(aws: &EnforcedAws, env: &CaptureEnv, keys: &Keys, instance_id: &str) -> Value {
    let stack = support::stack();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_forensic-capture"));
    command.args(["readiness", "--instance-id", instance_id, "-o", "json"]).env_clear();
    command.env("PATH", std::env::var("PATH").unwrap_or_default()).envs(stack.vars()).env("FC_S3_FORCE_PATH_STYLE", "true");
    command.envs(env.controller_env());
    command.envs([
        ("AWS_ENDPOINT_URL", aws.endpoint.as_str()),
        ("AWS_ENDPOINT_URL_SSM", aws.ssm_endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", keys.access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", keys.secret_access_key.as_str()),
    ]);
    let output = command.output().unwrap();
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\nstderr: {}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

/// The Permissions check of the controller's own account.
fn permissions_check(status: &Value) -> Value {
    status["accounts"][0]["checks"].as_array().unwrap().iter().find(|c| c["name"] == "Permissions").cloned().unwrap_or_else(|| panic!("a Permissions check: {status}"))
}

/// iam/controller-policy.json for the user `name` (its CheckOwnPermissions statement names that user), with the
/// statements `drop` left out and `add` added.
fn policy_for(env: &CaptureEnv, name: &str, drop: &[&str], add: &[Value]) -> String {
    let full = controller_policy(env).replace(&user_arn(CONTROLLER_USER), &user_arn(name));
    let mut policy: Value = serde_json::from_str(&full).unwrap();
    let statements = policy["Statement"].as_array_mut().unwrap();
    let before = statements.len();
    statements.retain(|s| !drop.contains(&s["Sid"].as_str().unwrap_or_default()));
    assert_eq!(statements.len(), before - drop.len(), "every statement to drop is in the policy");
    statements.extend(add.iter().cloned());
    policy.to_string()
}

fn deny(action: &str) -> Value {
    json!({"Effect": "Deny", "Action": action, "Resource": "*"})
}

#[tokio::test]
async fn the_permissions_check_simulates_the_controllers_policy_and_names_what_it_lacks() {
    let aws = EnforcedAws::start("readiness-permissions").await;
    let admin = aws.admin_config().await;
    let instance = run_instance(&aws_sdk_ec2::Client::new(&admin), 0, &[]).await.instance_id;
    let env = aws.capture_env("readiness-permissions").await;

    // Exactly the controller's policy: every action simulated, all allowed.
    let keys = aws.controller_identity(&env, &controller_policy(&env)).await;
    let status = readiness_as(&aws, &env, &keys, &instance);
    let check = permissions_check(&status);
    let message = check["message"].as_str().unwrap();
    assert_eq!(check["ok"], json!(true), "{check}");
    assert!(message.contains(&user_arn(CONTROLLER_USER)) && message.contains("by iam:SimulatePrincipalPolicy") && !message.contains("DryRun"), "{message}");
    assert!(message.contains("not checked: SignManifests (no SigningKeyArn configured)"), "no signing key is configured here: {message}");

    // Without ssm:SendCommand, and with ec2:CreateSnapshots explicitly denied: both named, with their decisions.
    let lacking = "fc-lacking-send-command";
    let keys = aws.user(lacking, &policy_for(&env, lacking, &["RunAcquisitionScripts"], &[deny("ec2:CreateSnapshots")])).await;
    let check = permissions_check(&readiness_as(&aws, &env, &keys, &instance));
    let message = check["message"].as_str().unwrap();
    assert_eq!((check["ok"].clone(), check["reason"].clone()), (json!(false), json!("PermissionsMissing")), "{check}");
    // ssm:SendCommand is simulated on the statement's resources (the document and the account's instances).
    assert!(message.contains("ssm:SendCommand (implicitDeny on arn:aws:ssm:") && message.contains("ec2:CreateSnapshots (explicitDeny)"), "{message}");
    assert!(message.contains("not allowed 2 of") && message.contains("by iam:SimulatePrincipalPolicy"), "nothing else is missing: {message}");

    // May not simulate, and may not create security groups: the dry runs find the group, and the simulation's
    // refusal is itself a missing permission.
    let blind = "fc-no-simulation";
    let keys = aws.user(blind, &policy_for(&env, blind, &["CheckOwnPermissions"], &[deny("ec2:CreateSecurityGroup")])).await;
    let check = permissions_check(&readiness_as(&aws, &env, &keys, &instance));
    let message = check["message"].as_str().unwrap();
    assert_eq!((check["ok"].clone(), check["reason"].clone()), (json!(false), json!("PermissionsMissing")), "{check}");
    assert!(message.contains("by EC2 DryRun, as iam:SimulatePrincipalPolicy could not be used"), "{message}");
    assert!(message.contains("iam:SimulatePrincipalPolicy (AccessDenied)") && message.contains("ec2:CreateSecurityGroup (AccessDenied)"), "{message}");
    assert!(message.contains("not allowed 2 of the 6 action(s)"), "the other four dry runs were allowed: {message}");

    // Nothing was created by the dry runs.
    let ec2 = aws_sdk_ec2::Client::new(&admin);
    let groups = ec2.describe_security_groups().send().await.unwrap();
    assert!(groups.security_groups().iter().all(|g| g.group_name() != Some("forensic-capture-readiness-dry-run")), "{groups:?}");
    let tagged = aws_sdk_ec2::types::Filter::builder().name("tag-key").values(forensic_capture::aws::ec2::tags::CAPTURE_UID).build();
    let snapshots = ec2.describe_snapshots().owner_ids("self").filters(tagged).send().await.unwrap();
    assert!(snapshots.snapshots().is_empty(), "no snapshot was taken: {snapshots:?}");
}
