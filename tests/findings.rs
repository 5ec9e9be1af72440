//! Finding-driven captures, end to end: findings in AWS's documented shapes published to EventBridge (moto),
//! matched by the shipped template's rule patterns, delivered to SQS, read by the controller's intake and
//! turned into ForensicCaptures by CapturePolicies; approval of waiting captures by CaptureApproval; and a
//! controller killed between creating a capture and deleting its message.

mod support;

use std::time::{Duration, Instant};

use forensic_capture::api::{CaptureApproval, CapturePolicy, ForensicCapture, Phase, Reason};
use kube::{Api, api::ListParams};
use serde_json::{Value, json};
use support::{
    controller::ControllerProcess,
    endpoint,
    faults::FaultProxy,
    findings::{FindingQueue, as_delivered, fixture, install_rules, publish},
    fixtures::CaptureEnv,
    run_instance,
};

const POLICY_LABEL: &str = "forensic-capture.dev/policy";
const INSTANCE_LABEL: &str = "forensic-capture.dev/instance-id";

fn custom_action_arn() -> String {
    format!("arn:aws:securityhub:{}:{}:action/custom/ForensicCapture", support::stack().region(), support::findings::ACCOUNT_ID)
}

/// A GuardDuty finding ID: 32 hex characters.
fn finding_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

async fn apply_policy(env: &CaptureEnv, name: &str, spec: &str) {
    let yaml = format!("apiVersion: forensic-capture.dev/v1alpha1\nkind: CapturePolicy\nmetadata:\n  name: {name}\nspec:\n{spec}");
    let policy: CapturePolicy = serde_yaml::from_str(&yaml).unwrap();
    Api::<CapturePolicy>::namespaced(env.kube.clone(), &env.namespace).create(&Default::default(), &policy).await.expect("create CapturePolicy");
}

async fn captures_of(env: &CaptureEnv, instance: &str) -> Vec<ForensicCapture> {
    env.captures().list(&ListParams::default().labels(&format!("{INSTANCE_LABEL}={instance}"))).await.unwrap().items
}

/// Waits for the first capture of `instance`, then returns every capture of it.
async fn wait_for_capture_of(env: &CaptureEnv, instance: &str, timeout: Duration) -> Vec<ForensicCapture> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = captures_of(env, instance).await;
        if !found.is_empty() {
            return found;
        }
        assert!(Instant::now() < deadline, "no capture of {instance} appeared in {timeout:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn policy_status(env: &CaptureEnv, name: &str) -> Value {
    let policy = Api::<CapturePolicy>::namespaced(env.kube.clone(), &env.namespace).get(name).await.unwrap();
    serde_json::to_value(policy.status.unwrap_or_default()).unwrap()
}

async fn wait_policy(env: &CaptureEnv, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = policy_status(env, name).await;
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "CapturePolicy {name}: {what} did not happen; status {status}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One test's finding path: its namespace, queue and bus, and a policy.
struct Intake {
    env: CaptureEnv,
    queue: FindingQueue,
    bus: support::findings::FindingBus,
}

impl Intake {
    async fn new(name: &str, visibility_seconds: u32, max_receive_count: u32, policy: &str, policy_spec: &str) -> Self {
        let env = CaptureEnv::new(&format!("findings-{name}")).await;
        let queue = FindingQueue::new(visibility_seconds, max_receive_count).await;
        let bus = install_rules(name, &queue, &custom_action_arn()).await;
        apply_policy(&env, policy, policy_spec).await;
        Intake { env, queue, bus }
    }

    fn start_controller(&self) -> ControllerProcess {
        ControllerProcess::start(&intake_env(&self.env, &self.queue), &format!("{}-intake", self.env.namespace))
    }
}

fn intake_env(env: &CaptureEnv, queue: &FindingQueue) -> Vec<(&'static str, String)> {
    let mut vars = env.controller_env();
    vars.push(("FC_FINDING_QUEUE_URL", queue.url.clone()));
    vars
}

async fn findings_counted(controller: &ControllerProcess, outcome: &str) -> f64 {
    endpoint::scrape(controller.metrics_address(Duration::from_secs(20))).await.sum("forensic_capture_findings_total", &[("outcome", outcome)])
}

async fn wait_counted(controller: &ControllerProcess, outcome: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while findings_counted(controller, outcome).await < at_least {
        assert!(Instant::now() < deadline, "forensic_capture_findings_total{{outcome={outcome:?}}} did not reach {at_least}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

const DISK_AND_ISOLATION: &str = "  template:\n    caseIdPrefix: gd\n    memory: {enabled: false}\n    volatile: {enabled: false}\n    isolation: {enabled: true}\n";

#[tokio::test]
async fn a_guardduty_finding_through_eventbridge_creates_one_capture_that_isolates_and_nothing_else_creates_more() {
    let spec = format!("  mode: Automatic\n  sources:\n    guardDuty:\n      findingTypes: ['Backdoor:EC2/*', 'UnauthorizedAccess:EC2/*']\n      minSeverity: 7\n  instanceTags: {{Environment: production}}\n{DISK_AND_ISOLATION}");
    let intake = Intake::new("gd", 2, 3, "high", &spec).await;
    let (env, queue, bus) = (&intake.env, &intake.queue, &intake.bus);
    let ec2 = support::stack().ec2().await;
    let controller = intake.start_controller();

    // A malformed message first: it is counted and left to the redrive policy, and the intake goes on.
    let malformed = queue.send_raw("{\"not\": \"an event\"").await;

    let instance = run_instance(&ec2, 0, &[("Environment", "production")]).await.instance_id;
    let id = finding_id();
    let event = fixture("guardduty-ec2.json", &instance, &id, "8");
    let event_id = publish(&bus, &event).await;
    let found = wait_for_capture_of(&env, &instance, Duration::from_secs(60)).await;
    assert_eq!(found.len(), 1, "one capture: {:?}", found.iter().map(|c| c.metadata.name.clone()).collect::<Vec<_>>());
    let capture = &found[0];
    let name = capture.metadata.name.clone().unwrap();
    let labels = capture.metadata.labels.clone().unwrap();
    let annotations = capture.metadata.annotations.clone().unwrap();
    assert_eq!(labels.get(POLICY_LABEL).map(String::as_str), Some("high"));
    assert_eq!(labels.get("forensic-capture.dev/finding-source").map(String::as_str), Some("GuardDuty"));
    assert_eq!(labels.get("forensic-capture.dev/account-id").map(String::as_str), Some(support::findings::ACCOUNT_ID));
    assert_eq!(labels.get("forensic-capture.dev/region").map(String::as_str), Some(support::stack().region()));
    assert_eq!(annotations.get("forensic-capture.dev/finding-id"), Some(&id));
    assert_eq!(annotations.get("forensic-capture.dev/finding-type").map(String::as_str), Some("Backdoor:EC2/C&CActivity.B!DNS"));
    assert_eq!(annotations.get("forensic-capture.dev/finding-severity").map(String::as_str), Some("8"));
    assert_eq!(annotations.get("forensic-capture.dev/requested-by"), Some(&format!("CapturePolicy {}/high", env.namespace)));
    assert_eq!(capture.spec.case_id, format!("gd-{id}"));
    assert!(!capture.spec.requires_approval, "an Automatic policy's capture does not wait");
    assert_eq!(capture.spec.target.account_id, None, "the controller's own account is reached without a role");
    let trigger = capture.spec.trigger.clone().expect("the trigger is recorded");
    assert_eq!((trigger.policy.as_str(), trigger.finding_id.as_str(), trigger.event_id.as_str()), ("high", id.as_str(), event_id.as_str()));

    let done = env.wait_completed(&name).await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Isolated), "{status:#?}");
    // The manifest names the finding as the trigger and the policy as who asked.
    let manifest_uri = status.artifacts.iter().find(|a| a.name == "manifest").map(|a| a.uri.clone()).expect("a manifest");
    let manifest: Value = serde_json::from_slice(&support::fixtures::download(&support::stack().s3().await, &manifest_uri).await).unwrap();
    assert_eq!(manifest["trigger"]["finding"]["id"], json!(id), "{}", manifest["trigger"]);
    assert_eq!(manifest["trigger"]["finding"]["resource"]["instanceDetails"]["instanceId"], json!(instance));
    assert_eq!(manifest["requestedBy"]["annotation"], json!(format!("CapturePolicy {}/high", env.namespace)));

    // The same finding again (EventBridge and SQS deliver at least once): no second capture, and the message is
    // deleted since its capture exists.
    publish(&bus, &event).await;
    wait_policy(&env, "high", "the second delivery counted as already captured", |s| s["alreadyCaptured"] == json!(1)).await;
    assert_eq!(captures_of(&env, &instance).await.len(), 1);

    // A finding below the policy's severity: the shipped rule drops it (minimum 7)...
    let low = run_instance(&ec2, 0, &[("Environment", "production")]).await.instance_id;
    publish(&bus, &fixture("guardduty-ec2.json", &low, &finding_id(), "2")).await;
    // ...and sent past the rule straight to the queue, the policy does not select it either.
    let unmatched_before = findings_counted(&controller, "unmatched").await;
    queue.send_raw(&as_delivered(&fixture("guardduty-ec2.json", &low, &finding_id(), "5.5"))).await;
    wait_counted(&controller, "unmatched", unmatched_before + 1.0).await;
    // A finding about an instance the finding reports without the policy's tag: nothing.
    let untagged = run_instance(&ec2, 0, &[("Environment", "staging")]).await.instance_id;
    let mut staging = fixture("guardduty-ec2.json", &untagged, &finding_id(), "8");
    staging["detail"]["resource"]["instanceDetails"]["tags"] = json!([{"key": "Environment", "value": "staging"}]);
    publish(&bus, &staging).await;

    // Every message is gone: the finding's deleted, the malformed and unmatched ones moved to the dead-letter
    // queue by the redrive policy (three receives, two seconds apart).
    queue.wait_empty(Duration::from_secs(60)).await;
    assert!(captures_of(&env, &low).await.is_empty(), "no capture for a finding below the minimum severity");
    assert!(captures_of(&env, &untagged).await.is_empty(), "no capture for an instance without the policy's tags");
    assert!(findings_counted(&controller, "unparseable").await >= 1.0, "the malformed message was counted");
    let dead = queue.sqs.receive_message().queue_url(&queue.dead_letter_url).max_number_of_messages(10).send().await.unwrap();
    let dead_ids: Vec<&str> = dead.messages().iter().filter_map(|m| m.message_id()).collect();
    assert!(dead_ids.contains(&malformed.as_str()), "the malformed message went to the dead-letter queue: {dead_ids:?}");
    assert_eq!(findings_counted(&controller, "created").await, 1.0);
    let status = policy_status(&env, "high").await;
    assert_eq!((status["findingsMatched"].clone(), status["capturesCreated"].clone()), (json!(2), json!(1)), "{status}");
    assert_eq!(status["lastCapture"], json!(name));
}

#[tokio::test]
async fn an_approval_policys_capture_does_nothing_in_aws_until_a_capture_approval_names_it() {
    let spec = "  mode: Approval\n  sources:\n    guardDuty: {minSeverity: 5}\n  template:\n    memory: {enabled: false}\n    volatile: {enabled: true}\n    isolation: {enabled: true}\n";
    let intake = Intake::new("ap", 2, 5, "review", spec).await;
    let (env, bus) = (&intake.env, &intake.bus);
    let stack = support::stack();
    let ec2 = stack.ec2().await;
    let _controller = intake.start_controller();
    let instance = run_instance(&ec2, 0, &[]).await.instance_id;
    publish(&bus, &fixture("guardduty-ec2.json", &instance, &finding_id(), "7.5")).await;
    let capture = wait_for_capture_of(&env, &instance, Duration::from_secs(60)).await.remove(0);
    let name = capture.metadata.name.clone().unwrap();
    assert!(capture.spec.requires_approval);

    let waiting = env
        .wait_for(&name, Duration::from_secs(60), |c| {
            c.status.as_ref().is_some_and(|s| s.conditions.iter().any(|x| x.type_ == "Ready" && x.reason == Reason::AwaitingApproval.as_str()))
        })
        .await;
    let status = waiting.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Pending));
    assert!(status.target.is_none() && status.started_at.is_none(), "not even the target is resolved: {status:#?}");
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.message.contains(&format!("spec.captureName {name}")), "{}", ready.message);
    // A few seconds of waiting, then nothing exists in AWS for the instance.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let commands = stack.ssm().await.list_commands().instance_id(&instance).send().await.unwrap();
    assert!(commands.commands().is_empty(), "no SSM command before approval");
    let uid = waiting.metadata.uid.clone().unwrap();
    let isolation_group = format!("forensic-capture-isolation-{uid}");
    let groups = ec2.describe_security_groups().filters(aws_sdk_ec2::types::Filter::builder().name("group-name").values(&isolation_group).build()).send().await.unwrap();
    assert!(groups.security_groups().is_empty(), "no isolation group before approval");
    let snapshots = ec2.describe_snapshots().owner_ids("self").filters(aws_sdk_ec2::types::Filter::builder().name("tag:forensic-capture.dev/capture-uid").values(&uid).build()).send().await.unwrap();
    assert!(snapshots.snapshots().is_empty(), "no snapshot before approval");

    // Approvals: for a capture that does not exist, for one made by hand (which never waits), and the real one.
    let approvals: Api<CaptureApproval> = Api::namespaced(env.kube.clone(), &env.namespace);
    let approve = |approval: &str, capture: &str| {
        serde_yaml::from_str::<CaptureApproval>(&format!(
            "apiVersion: forensic-capture.dev/v1alpha1\nkind: CaptureApproval\nmetadata:\n  name: {approval}\n  annotations: {{forensic-capture.dev/requested-by: alice@example.com}}\nspec:\n  captureName: {capture}\n  reason: confirmed C2 traffic on the host\n"
        ))
        .unwrap()
    };
    env.apply(&support::fixtures::capture_yaml("by-hand", &instance, "  dryRun: true\n")).await;
    approvals.create(&Default::default(), &approve("nothing", "no-such-capture")).await.unwrap();
    approvals.create(&Default::default(), &approve("by-hand", "by-hand")).await.unwrap();
    approvals.create(&Default::default(), &approve("go", &name)).await.unwrap();

    let done = env.wait_completed(&name).await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Isolated), "{status:#?}");
    let record = status.approval.clone().expect("the approval is recorded");
    assert_eq!((record.name.as_str(), record.approved_by.as_str(), record.reason.as_str()), ("go", "alice@example.com", "confirmed C2 traffic on the host"));
    assert!(!stack.ssm().await.list_commands().instance_id(&instance).send().await.unwrap().commands().is_empty(), "the volatile step ran after approval");
    let manifest_uri = status.artifacts.iter().find(|a| a.name == "manifest").map(|a| a.uri.clone()).expect("a manifest");
    let manifest: Value = serde_json::from_slice(&support::fixtures::download(&stack.s3().await, &manifest_uri).await).unwrap();
    assert_eq!(manifest["approval"]["name"], json!("go"));

    let deadline = Instant::now() + Duration::from_secs(30);
    let phases = loop {
        let mut phases = Vec::new();
        for approval in ["go", "nothing", "by-hand"] {
            let s = approvals.get(approval).await.unwrap().status.unwrap_or_default();
            phases.push((approval, s.phase.unwrap_or_default(), s.reason.unwrap_or_default()));
        }
        if phases[0].1 == "Approved" && !phases[1].1.is_empty() && !phases[2].1.is_empty() || Instant::now() > deadline {
            break phases;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        phases,
        [
            ("go", "Approved".to_string(), String::new()),
            ("nothing", "NotFound".to_string(), "CaptureNotFound".to_string()),
            ("by-hand", "NotWaiting".to_string(), "ApprovalNotRequired".to_string())
        ]
    );
    let by_hand = env.wait_completed("by-hand").await;
    assert!(by_hand.status.unwrap().approval.is_none(), "a capture made by hand never waits and takes no approval");
}

#[tokio::test]
async fn a_security_hub_custom_action_creates_a_capture_of_each_instance_it_names() {
    let spec = format!("  mode: Automatic\n  sources:\n    securityHubCustomActions: ['{}']\n  template:\n    caseIdPrefix: sh\n    dryRun: true\n", custom_action_arn());
    let intake = Intake::new("sh", 2, 3, "responder", &spec).await;
    let (env, queue, bus) = (&intake.env, &intake.queue, &intake.bus);
    let ec2 = support::stack().ec2().await;
    let _controller = intake.start_controller();
    let instance = run_instance(&ec2, 0, &[]).await.instance_id;
    let id = format!("arn:aws:securityhub:{}:{}:subscription/aws-foundational-security-best-practices/v/1.0.0/EC2.19/finding/{}", support::stack().region(), support::findings::ACCOUNT_ID, uuid::Uuid::new_v4());
    publish(&bus, &fixture("securityhub-custom-action.json", &instance, &id, "70")).await;
    let found = wait_for_capture_of(&env, &instance, Duration::from_secs(60)).await;
    assert_eq!(found.len(), 1);
    let capture = &found[0];
    assert_eq!(capture.metadata.labels.as_ref().unwrap().get("forensic-capture.dev/finding-source").map(String::as_str), Some("SecurityHubCustomAction"));
    let trigger = capture.spec.trigger.clone().unwrap();
    assert_eq!(trigger.action_arn, Some(custom_action_arn()));
    assert_eq!(trigger.finding_id, id);
    assert!(capture.spec.case_id.starts_with("sh-"), "{}", capture.spec.case_id);
    let done = env.wait_completed(capture.metadata.name.as_deref().unwrap()).await;
    assert_eq!(done.status.unwrap().phase, Some(Phase::Planned), "the template's dry run");
    queue.wait_empty(Duration::from_secs(30)).await;
}

/// SIGKILL after the capture is created and before its message is deleted: the proxy holds the DeleteMessage
/// back, the controller is killed while it waits, and the message comes back to the restarted controller,
/// which finds the capture already there and only deletes the message.
#[tokio::test]
async fn a_controller_killed_between_creating_a_capture_and_deleting_its_message_still_makes_exactly_one() {
    let intake = Intake::new("kill", 3, 5, "high", "  mode: Automatic\n  sources:\n    guardDuty: {}\n  template:\n    dryRun: true\n").await;
    let (env, queue, bus) = (&intake.env, &intake.queue, &intake.bus);
    let ec2 = support::stack().ec2().await;
    let proxy = FaultProxy::start(json!({"rules": [{"service": "sqs", "operation": "DeleteMessage", "latency_ms": 600000}]})).await;
    let mut vars = intake_env(env, queue);
    vars.extend(proxy.controller_env());
    let mut controller = ControllerProcess::start(&vars, &format!("{}-intake", env.namespace));
    let instance = run_instance(&ec2, 0, &[]).await.instance_id;
    publish(&bus, &fixture("guardduty-ec2.json", &instance, &finding_id(), "8")).await;
    wait_for_capture_of(&env, &instance, Duration::from_secs(60)).await;
    // The delete is in flight at the proxy.
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.counters().await["operations"]["sqs:DeleteMessage"]["requests"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the controller never tried to delete the message");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    controller.kill();
    let (visible, in_flight) = queue.depth(&queue.url).await;
    assert_eq!(visible + in_flight, 1, "the message was not deleted");

    proxy.set_plan(json!({})).await;
    controller.restart();
    queue.wait_empty(Duration::from_secs(60)).await;
    let found = captures_of(&env, &instance).await;
    assert_eq!(found.len(), 1, "exactly one capture after the restart: {:?}", found.iter().map(|c| c.metadata.name.clone()).collect::<Vec<_>>());
    wait_policy(&env, "high", "the redelivery counted as already captured", |s| s["alreadyCaptured"].as_u64() >= Some(1)).await;
}
