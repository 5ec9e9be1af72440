//! A containment call denied by IAM midway: the capture records which actions were applied, which failed (with
//! the operation and the AWS error) and which were not needed, the prior state of everything it touched, and
//! conditions saying what is missing. moto enforces IAM here, with the controller bound to the committed policy
//! plus one Deny.

mod support;

use forensic_capture::api::{ForensicCapture, IsolationRecord, Phase, StepState, TargetRegistration};
use support::{
    fixtures::capture_yaml,
    iam::{EnforcedAws, Fleet, controller_policy, fleet_behind_a_load_balancer},
};

struct Denied {
    aws: EnforcedAws,
    fleet: Fleet,
    target: String,
    capture: ForensicCapture,
    env: support::fixtures::CaptureEnv,
    _controller: support::controller::ControllerProcess,
}

/// Contains the first instance of a fleet with `denied_action` explicitly denied to the controller.
async fn contain_with(denied_action: &str, name: &str) -> Denied {
    let aws = EnforcedAws::start(name).await;
    let fleet = fleet_behind_a_load_balancer(&aws.admin_config().await).await;
    let target = fleet.instances[0].clone();
    let env = aws.capture_env(name).await;
    let mut policy: serde_json::Value = serde_json::from_str(&controller_policy(&env)).unwrap();
    policy["Statement"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"Sid": "DeniedUnderTest", "Effect": "Deny", "Action": denied_action, "Resource": "*"}));
    let keys = aws.controller_identity(&env, &policy.to_string()).await;
    let controller = aws.start_controller(&env, &keys, name);
    env.apply(&capture_yaml(name, &target, "  memory: {enabled: false}\n  volatile: {enabled: false}\n  isolation:\n    allowIngressCidrs: [203.0.113.7/32]\n"))
        .await;
    let capture = env.wait_completed(name).await;
    Denied { aws, fleet, target, capture, env, _controller: controller }
}

fn record(capture: &ForensicCapture) -> IsolationRecord {
    capture.status.as_ref().unwrap().isolation.clone().expect("an isolation record")
}

fn states(record: &IsolationRecord) -> Vec<(String, String)> {
    record.actions.iter().map(|a| (a.name.clone(), a.state.to_string())).collect()
}

/// The seven actions in playbook order: `failed` Failed, the two this spec does not ask for NotNeeded, the rest
/// Applied (the actions after a failed one still run).
fn expected(failed: &str) -> Vec<(String, String)> {
    ["TerminationSafeguards", "InstanceTags", "AutoScaling", "LoadBalancers", "ElasticIps", "SecurityGroups", "Credentials"]
        .into_iter()
        .map(|name| {
            let state = match name {
                _ if name == failed => "Failed",
                "ElasticIps" | "Credentials" => "NotNeeded",
                _ => "Applied",
            };
            (name.to_string(), state.to_string())
        })
        .collect()
}

fn condition(capture: &ForensicCapture, type_: &str) -> (String, String, String) {
    let c = capture.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_} condition"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// The failed action, its reason and message, checked to name the instance and the denied operation.
fn failed_action(record: &IsolationRecord, name: &str, target: &str, operation: &str) -> String {
    let action = record.actions.iter().find(|a| a.name == name).unwrap();
    assert_eq!(action.reason.as_deref(), Some("AccessDenied"), "{action:?}");
    let message = action.message.clone().unwrap();
    assert!(message.starts_with(&format!("instance {target}: {operation}: AccessDenied: ")), "{message}");
    assert!(message.contains(&format!("not authorized to perform: {operation}")), "{message}");
    assert!(message.contains("(request ID "), "a responder can quote the request to AWS: {message}");
    message
}

/// Step record and conditions: Failed with ContainmentIncomplete, the message listing what was applied, not
/// needed and not applied (with the AWS error).
fn assert_incomplete(capture: &ForensicCapture, target: &str, applied: &str, not_applied: &str, error: &str) {
    let status = capture.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(Phase::Failed), "{status:#?}");
    let step = status.steps.isolation.clone().unwrap();
    assert_eq!((step.state, step.reason.as_deref()), (StepState::Failed, Some("ContainmentIncomplete")));
    let message = step.message.unwrap();
    assert_eq!(message, format!("instance {target}: applied {applied}; not needed: ElasticIps, Credentials; not applied: {not_applied} ({error})"));
    assert_eq!(condition(capture, "Isolated"), ("False".into(), "ContainmentIncomplete".into(), message.clone()));
    assert_eq!(condition(capture, "Failed"), ("True".into(), "ContainmentIncomplete".into(), format!("isolation step: {message}")));
    assert_eq!(condition(capture, "Ready").0, "False");
    assert_eq!(condition(capture, "Snapshotted").0, "True", "the evidence before containment is unaffected");
}

/// Every interface carries only the isolation group: the actions after the denied one still ran.
async fn assert_isolated_network(aws: &EnforcedAws, target: &str, record: &IsolationRecord) {
    let ec2 = aws_sdk_ec2::Client::new(&aws.admin_config().await);
    let described = ec2.describe_instances().instance_ids(target).send().await.unwrap();
    let isolation = record.security_group_id.clone().unwrap();
    for eni in described.reservations()[0].instances()[0].network_interfaces() {
        assert_eq!(eni.groups().iter().filter_map(|g| g.group_id()).collect::<Vec<_>>(), vec![isolation.as_str()]);
    }
}

async fn targets(aws: &EnforcedAws, fleet: &Fleet) -> Vec<String> {
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&aws.admin_config().await);
    let health = elb.describe_target_health().target_group_arn(&fleet.target_group_arn).send().await.unwrap();
    let mut ids: Vec<String> = health.target_health_descriptions().iter().filter_map(|d| d.target()?.id().map(String::from)).collect();
    ids.sort();
    ids
}

async fn member(aws: &EnforcedAws, fleet: &Fleet, target: &str) -> (String, bool, i32, usize) {
    let asg = aws_sdk_autoscaling::Client::new(&aws.admin_config().await);
    let groups = asg.describe_auto_scaling_groups().auto_scaling_group_names(&fleet.group_name).send().await.unwrap();
    let group = &groups.auto_scaling_groups()[0];
    let member = group.instances().iter().find(|i| i.instance_id() == Some(target)).expect("still a member");
    (
        member.lifecycle_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
        member.protected_from_scale_in().unwrap_or(false),
        group.desired_capacity().unwrap_or_default(),
        group.instances().len(),
    )
}

#[tokio::test]
async fn a_denied_deregistration_midway_records_the_applied_the_failed_and_the_missing_actions() {
    let Denied { aws, fleet, target, capture, .. } = contain_with("elasticloadbalancing:DeregisterTargets", "deny-elb").await;
    let record = record(&capture);
    assert_eq!(states(&record), expected("LoadBalancers"));
    let error = failed_action(&record, "LoadBalancers", &target, "elasticloadbalancing:DeregisterTargets");
    assert_incomplete(&capture, &target, "TerminationSafeguards, InstanceTags, AutoScaling, SecurityGroups", "LoadBalancers", &error);

    // The registration was recorded before the denied call, and AWS agrees that it is still there.
    assert_eq!(record.target_groups, vec![TargetRegistration { target_group_arn: fleet.target_group_arn.clone(), port: Some(80) }]);
    let mut both = fleet.instances.clone();
    both.sort();
    assert_eq!(targets(&aws, &fleet).await, both, "still a target: the deregistration was denied");
    // What the status calls applied is applied.
    assert_eq!(member(&aws, &fleet, &target).await, ("Standby".into(), true, 1, 2));
    assert_isolated_network(&aws, &target, &record).await;
}

#[tokio::test]
async fn a_denied_standby_after_scale_in_protection_records_the_protection_already_applied() {
    let Denied { aws, fleet, target, capture, env, _controller } = contain_with("autoscaling:EnterStandby", "deny-standby").await;
    let record = record(&capture);
    assert_eq!(states(&record), expected("AutoScaling"));
    let error = failed_action(&record, "AutoScaling", &target, "autoscaling:EnterStandby");
    assert!(error.ends_with(&format!("(already applied: scale-in protection in {})", fleet.group_name)), "{error}");
    assert_incomplete(&capture, &target, "TerminationSafeguards, InstanceTags, LoadBalancers, SecurityGroups", "AutoScaling", &error);

    // The prior group state is on record for release; AWS shows protection on and the instance still in service.
    let prior = record.auto_scaling.clone().unwrap();
    assert_eq!((prior.lifecycle_state.as_str(), prior.protected_from_scale_in, prior.desired_capacity), ("InService", false, 2));
    assert_eq!(member(&aws, &fleet, &target).await, ("InService".into(), true, 2, 2));
    assert_eq!(targets(&aws, &fleet).await, vec![fleet.instances[1].clone()], "deregistered: the actions after the denied one ran");
    assert_isolated_network(&aws, &target, &record).await;

    // Release restores the half-applied action too: the protection set before the denied standby comes off.
    let released = env.release("release", "deny-standby", "false positive").await;
    let autoscaling = released.restored.iter().find(|r| r.name == "AutoScaling").unwrap();
    assert_eq!(autoscaling.state, "Restored", "{autoscaling:?}");
    assert_eq!(member(&aws, &fleet, &target).await, ("InService".into(), false, 2, 2), "scale-in protection back off");
}
