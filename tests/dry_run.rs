//! Dry runs (spec.dryRun): a full capture of an instance in an Auto Scaling group behind a target group is
//! planned, not done. The plan names every step and containment action with the state it would change; every
//! AWS resource the capture would touch reads the same before and after; and every request the controller
//! sent (through a clean fault proxy, whose log has them all) was a read.

mod support;

use std::collections::BTreeMap;

use forensic_capture::api::{ActionVerdict, Phase, Reason, StepVerdict};
use k8s_openapi::api::coordination::v1::Lease;
use serde_json::json;
use support::{
    controller::ControllerProcess,
    faults::{self, FaultProxy},
    fixtures::CaptureEnv,
    iam::fleet_behind_a_load_balancer,
};

/// Everything a capture of `instance` would change, as plain text per resource: the instance's interfaces'
/// groups, tags, termination settings and volumes' DeleteOnTermination; the group's membership, protection
/// and capacity; the target group's registrations; the VPC's security groups; snapshots of its volumes; SSM
/// commands sent to it; the evidence bucket's objects.
async fn world(aws: &aws_config::SdkConfig, group: &str, target_group: &str, instance: &str, bucket: &str) -> BTreeMap<String, String> {
    let ec2 = aws_sdk_ec2::Client::new(aws);
    let mut seen = BTreeMap::new();
    let described = ec2.describe_instances().instance_ids(instance).send().await.unwrap();
    let i = &described.reservations()[0].instances()[0];
    let vpc = i.vpc_id().unwrap().to_string();
    let groups: Vec<String> = i.network_interfaces().iter().map(|eni| format!("{}: {:?}", eni.network_interface_id().unwrap(), eni.groups().iter().map(|g| g.group_id()).collect::<Vec<_>>())).collect();
    seen.insert("interfaces".into(), groups.join("; "));
    let mut tags: Vec<String> = i.tags().iter().map(|t| format!("{}={}", t.key().unwrap_or_default(), t.value().unwrap_or_default())).collect();
    tags.sort();
    seen.insert("instance tags".into(), tags.join(", "));
    seen.insert("instance state".into(), format!("{:?}", i.state().and_then(|s| s.name())));
    seen.insert("instance profile".into(), format!("{:?}", i.iam_instance_profile().and_then(|p| p.arn())));
    for attribute in [aws_sdk_ec2::types::InstanceAttributeName::DisableApiTermination, aws_sdk_ec2::types::InstanceAttributeName::InstanceInitiatedShutdownBehavior] {
        let value = ec2.describe_instance_attribute().instance_id(instance).attribute(attribute.clone()).send().await.unwrap();
        seen.insert(format!("{attribute:?}"), format!("{:?} {:?}", value.disable_api_termination().and_then(|v| v.value()), value.instance_initiated_shutdown_behavior().and_then(|v| v.value())));
    }
    let volumes: Vec<String> = i.block_device_mappings().iter().filter_map(|m| m.ebs()?.volume_id().map(String::from)).collect();
    for mapping in i.block_device_mappings() {
        seen.insert(format!("delete on termination {:?}", mapping.device_name()), format!("{:?}", mapping.ebs().and_then(|e| e.delete_on_termination())));
    }
    let snapshots = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(aws_sdk_ec2::types::Filter::builder().name("volume-id").set_values(Some(volumes.clone())).build())
        .send()
        .await
        .unwrap();
    seen.insert("snapshots of its volumes".into(), snapshots.snapshots().len().to_string());
    let sgs = ec2.describe_security_groups().filters(aws_sdk_ec2::types::Filter::builder().name("vpc-id").values(&vpc).build()).send().await.unwrap();
    let mut names: Vec<&str> = sgs.security_groups().iter().filter_map(|g| g.group_name()).collect();
    names.sort();
    seen.insert("security groups in its VPC".into(), names.join(", "));

    let asg = aws_sdk_autoscaling::Client::new(aws);
    let described = asg.describe_auto_scaling_groups().auto_scaling_group_names(group).send().await.unwrap();
    let g = &described.auto_scaling_groups()[0];
    let members: Vec<String> = g.instances().iter().map(|m| format!("{} {:?} protected={:?}", m.instance_id().unwrap(), m.lifecycle_state(), m.protected_from_scale_in())).collect();
    seen.insert("auto scaling group".into(), format!("desired {:?}; {}", g.desired_capacity(), members.join("; ")));
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(aws);
    let health = elb.describe_target_health().target_group_arn(target_group).send().await.unwrap();
    let mut targets: Vec<String> = health.target_health_descriptions().iter().filter_map(|t| t.target()?.id().map(String::from)).collect();
    targets.sort();
    seen.insert("target group registrations".into(), targets.join(", "));

    let ssm = support::stack().ssm().await;
    let commands = ssm.list_commands().instance_id(instance).send().await.unwrap();
    seen.insert("SSM commands to it".into(), commands.commands().len().to_string());
    let s3 = support::stack().s3().await;
    let objects = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    let mut keys: Vec<&str> = objects.contents().iter().filter_map(|o| o.key()).collect();
    keys.sort();
    seen.insert("evidence bucket objects".into(), keys.join(", "));
    seen
}

#[tokio::test]
async fn a_dry_run_of_an_instance_in_an_auto_scaling_group_behind_a_target_group_plans_everything_and_changes_nothing() {
    let stack = support::stack();
    let aws = stack.aws().await;
    let env = CaptureEnv::new("dry-run").await;
    let fleet = fleet_behind_a_load_balancer(&aws).await;
    let target = fleet.instances[0].clone();
    let before = world(&aws, &fleet.group_name, &fleet.target_group_arn, &target, &env.bucket).await;

    let proxy = FaultProxy::start(json!({})).await;
    let mut vars = env.controller_env();
    vars.extend(proxy.controller_env());
    let _controller = ControllerProcess::start(&vars, &format!("{}-dry-run", env.namespace));
    let yaml = format!(
        "apiVersion: forensic-capture.dev/v1alpha1\nkind: ForensicCapture\nmetadata:\n  name: plan\nspec:\n  caseId: INC-77\n  dryRun: true\n  target:\n    instanceId: {target}\n  isolation:\n    enabled: true\n    allowIngressCidrs: [203.0.113.7/32]\n"
    );
    env.apply(&yaml).await;
    let capture = env.wait_completed("plan").await;
    let status = capture.status.clone().unwrap();
    let uid = capture.metadata.uid.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Planned), "{status:#?}");
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", Reason::Planned.as_str()), "{ready:?}");
    assert!(status.steps.volatile.is_none() && status.steps.memory.is_none() && status.steps.disk.is_none() && status.steps.isolation.is_none(), "no step ran: {status:#?}");
    assert!(status.artifacts.is_empty(), "no artifact, not even a manifest: {:?}", status.artifacts);

    // The plan: every step, and every containment action with the state it would change.
    let plan = status.plan.clone().expect("a plan");
    let steps: Vec<(&str, StepVerdict)> = plan.steps.iter().map(|s| (s.name.as_str(), s.would)).collect();
    assert_eq!(
        steps,
        [
            ("volatile", StepVerdict::Run),
            ("checkpoint", StepVerdict::NotRequested),
            ("checkpointRemoval", StepVerdict::NotRequested),
            ("memory", StepVerdict::Run),
            ("disk", StepVerdict::Run),
            ("isolation", StepVerdict::Run),
            ("forensicCopy", StepVerdict::NotRequested)
        ],
        "{plan:#?}"
    );
    let memory = plan.steps.iter().find(|s| s.name == "memory").unwrap();
    assert!(memory.message.contains(&env.avml_uri), "the AVML it would run: {}", memory.message);
    let action = |name: &str| plan.containment.iter().find(|a| a.name == name).unwrap_or_else(|| panic!("{name} in {plan:#?}"));
    let asg = action("AutoScaling");
    assert_eq!(asg.would, ActionVerdict::Change);
    assert_eq!(asg.changes[0].resource, format!("Auto Scaling group {}", fleet.group_name));
    assert!(asg.changes[0].from.contains("InService") && asg.changes[0].from.contains("desired capacity 2"), "{asg:?}");
    assert!(asg.changes[0].to.contains("Standby") && asg.changes[0].to.contains("desired capacity 1"), "{asg:?}");
    let lb = action("LoadBalancers");
    assert_eq!(lb.would, ActionVerdict::Change);
    assert_eq!(lb.changes.iter().map(|c| c.resource.clone()).collect::<Vec<_>>(), [format!("target group {}", fleet.target_group_arn)]);
    let groups = action("SecurityGroups");
    assert_eq!(groups.changes.len(), before["interfaces"].split("; ").count(), "one change per interface: {groups:?}");
    assert!(groups.changes.iter().all(|c| c.to == format!("forensic-capture-isolation-{uid} (new)")), "{groups:?}");
    assert!(groups.message.contains("203.0.113.7/32"), "{}", groups.message);
    assert_eq!(action("TerminationSafeguards").would, ActionVerdict::Change);
    assert_eq!(action("ElasticIps").would, ActionVerdict::NotNeeded);

    // Nothing changed, anywhere a capture would have changed something.
    let after = world(&aws, &fleet.group_name, &fleet.target_group_arn, &target, &env.bucket).await;
    assert_eq!(before, after);
    let leases: kube::Api<Lease> = kube::Api::namespaced(env.kube.clone(), &env.namespace);
    assert!(leases.get_opt(&format!("forensic-capture-{target}")).await.unwrap().is_none(), "a dry run takes no instance lock");
    // And the controller only read: every request it sent was a Describe, List, Get or Head (and the STS
    // session reads need).
    let operations = proxy.operations_seen().await;
    assert!(operations.iter().any(|o| o == "autoscaling:DescribeAutoScalingInstances"), "{operations:?}");
    let writes = faults::writes(&operations);
    assert!(writes.is_empty(), "a dry run sent {writes:?}");
}
