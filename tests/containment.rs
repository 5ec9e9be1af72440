//! Containment against moto: Auto Scaling, load balancers, termination safeguards, the two-step security
//! group swap, and the prior state recorded in status.

mod support;

use forensic_capture::api::Phase;
use support::{
    controller::ControllerProcess,
    fixtures::{CaptureEnv, capture_yaml},
    iam::{Fleet, instance_profile},
};

/// An Auto Scaling group of two in a fresh VPC, both instances registered in one target group on port 80.
async fn fleet_behind_a_load_balancer() -> Fleet {
    support::iam::fleet_behind_a_load_balancer(&support::stack().aws().await).await
}

#[tokio::test]
async fn containment_takes_the_instance_out_of_its_group_and_load_balancer_and_guards_it() {
    let stack = support::stack();
    let aws = stack.aws().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let asg = aws_sdk_autoscaling::Client::new(&aws);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&aws);
    let fleet = fleet_behind_a_load_balancer().await;
    let target = fleet.instances[0].clone();
    let allocation = ec2.allocate_address().domain(aws_sdk_ec2::types::DomainType::Vpc).send().await.unwrap();
    let allocation_id = allocation.allocation_id().unwrap().to_string();
    ec2.associate_address().allocation_id(&allocation_id).instance_id(&target).send().await.unwrap();
    let iam = aws_sdk_iam::Client::new(&aws);
    let (original_profile, role) = instance_profile(&iam, "web").await;
    let (deny_all_profile, _) = instance_profile(&iam, "deny-all").await;
    ec2.associate_iam_instance_profile()
        .instance_id(&target)
        .iam_instance_profile(aws_sdk_ec2::types::IamInstanceProfileSpecification::builder().arn(&original_profile).build())
        .send()
        .await
        .unwrap();
    let env = CaptureEnv::new("contain").await;
    let _controller = env.start_controller("contain");
    env.apply(&capture_yaml(
        "contain",
        &target,
        &format!(
            "  memory: {{enabled: false}}\n  volatile: {{enabled: false}}\n  isolation:\n    allowIngressCidrs: [203.0.113.7/32]\n    disassociateElasticIps: true\n    credentials: {{replaceInstanceProfile: '{deny_all_profile}', revokeSessions: true}}\n"
        ),
    ))
    .await;
    let capture = env.wait_completed("contain").await;
    let record = assert_contained(&fleet, &target, &capture).await;
    // The interface the address is associated with (moto reports empty strings where the service has none).
    let associated = |addresses: aws_sdk_ec2::operation::describe_addresses::DescribeAddressesOutput| {
        let address = &addresses.addresses()[0];
        address.association_id().and(address.network_interface_id()).filter(|id| !id.is_empty()).map(String::from)
    };
    let addresses = ec2.describe_addresses().allocation_ids(&allocation_id).send().await.unwrap();
    assert_eq!(associated(addresses), None, "Elastic IP disassociated");
    assert_eq!(record.elastic_ips.len(), 1);
    assert_eq!(record.elastic_ips[0].allocation_id, allocation_id);
    assert_eq!(current_profile(&ec2, &target).await.as_deref(), Some(deny_all_profile.as_str()), "deny-all profile swapped in");
    let credentials = record.credentials.clone().unwrap();
    assert_eq!(credentials.previous_instance_profile_arn.as_deref(), Some(original_profile.as_str()));
    let policy_name = credentials.revoke_policy_name.clone().unwrap();
    let policy = iam.get_role_policy().role_name(&role).policy_name(&policy_name).send().await.expect("revocation policy on the role");
    let document = urlencoding_decode(policy.policy_document());
    assert!(document.contains("aws:TokenIssueTime") && document.contains("Deny"), "{document}");

    // Release restores all of it, verified by reading AWS state back; releasing twice is harmless.
    let releases: kube::Api<forensic_capture::api::ContainmentRelease> = kube::Api::namespaced(env.kube.clone(), &env.namespace);
    for name in ["release-1", "release-2"] {
        let release: forensic_capture::api::ContainmentRelease = serde_yaml::from_str(&format!(
            "apiVersion: forensic-capture.dev/v1alpha1\nkind: ContainmentRelease\nmetadata:\n  name: {name}\nspec:\n  captureName: contain\n  reason: host rebuilt, evidence verified\n"
        ))
        .unwrap();
        releases.create(&Default::default(), &release).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let released = loop {
            let r = releases.get(name).await.unwrap();
            if r.status.as_ref().is_some_and(|s| s.released_at.is_some() || s.phase.as_deref() == Some("Failed")) {
                break r;
            }
            assert!(std::time::Instant::now() < deadline, "release {name} did not finish: {:?}", r.status);
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        };
        let release_status = released.status.unwrap();
        assert_eq!(release_status.phase.as_deref(), Some("Released"), "{release_status:#?}");
        assert_eq!(release_status.restored.len(), 7);
        assert_eq!(current_profile(&ec2, &target).await.as_deref(), Some(original_profile.as_str()), "{name}: instance profile restored");
        iam.get_role_policy().role_name(&role).policy_name(&policy_name).send().await.expect("older sessions stay revoked");
        let addresses = ec2.describe_addresses().allocation_ids(&allocation_id).send().await.unwrap();
        assert_eq!(associated(addresses), Some(record.elastic_ips[0].network_interface_id.clone()), "{name}: Elastic IP associated again");

        let described = ec2.describe_instances().instance_ids(&target).send().await.unwrap();
        let instance = &described.reservations()[0].instances()[0];
        for eni in instance.network_interfaces() {
            let mut groups: Vec<String> = eni.groups().iter().filter_map(|g| g.group_id().map(String::from)).collect();
            groups.sort();
            let mut before = record.previous.iter().find(|p| Some(p.network_interface_id.as_str()) == eni.network_interface_id()).unwrap().security_group_ids.clone();
            before.sort();
            assert_eq!(groups, before, "{name}: interface groups restored");
        }
        for mapping in instance.block_device_mappings() {
            assert_eq!(mapping.ebs().and_then(|e| e.delete_on_termination()), Some(true), "{name}: DeleteOnTermination restored");
        }
        let protection = ec2
            .describe_instance_attribute()
            .instance_id(&target)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::DisableApiTermination)
            .send()
            .await
            .unwrap();
        assert_eq!(protection.disable_api_termination().and_then(|v| v.value()), Some(false), "{name}");
        let health = elb.describe_target_health().target_group_arn(&fleet.target_group_arn).send().await.unwrap();
        let mut targets: Vec<&str> = health.target_health_descriptions().iter().filter_map(|d| d.target().and_then(|t| t.id())).collect();
        targets.sort();
        let mut both: Vec<&str> = fleet.instances.iter().map(String::as_str).collect();
        both.sort();
        assert_eq!(targets, both, "{name}: registered again");
        let group = asg.describe_auto_scaling_groups().auto_scaling_group_names(&fleet.group_name).send().await.unwrap();
        let group = &group.auto_scaling_groups()[0];
        let member = group.instances().iter().find(|i| i.instance_id() == Some(target.as_str())).unwrap();
        assert_eq!(member.lifecycle_state().map(|s| s.as_str()), Some("InService"), "{name}");
        assert_eq!(member.protected_from_scale_in(), Some(false), "{name}");
        assert_eq!(group.desired_capacity(), Some(2), "{name}: capacity back to what it was");
        assert_eq!(group.instances().len(), 2, "{name}");
    }

    // The untouched sibling keeps serving.
    let sibling = ec2.describe_instances().instance_ids(&fleet.instances[1]).send().await.unwrap();
    assert_eq!(sibling.reservations()[0].instances()[0].state().and_then(|s| s.name()).map(|n| n.as_str()), Some("running"));
}

/// Everything containment promises, read back from AWS; returns the recorded prior state.
async fn assert_contained(fleet: &Fleet, target: &str, capture: &forensic_capture::api::ForensicCapture) -> forensic_capture::api::IsolationRecord {
    let stack = support::stack();
    let aws = stack.aws().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let asg = aws_sdk_autoscaling::Client::new(&aws);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&aws);
    let target = target.to_string();
    let status = capture.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Isolated), "{status:#?}");
    let record = status.isolation.clone().unwrap();

    // Auto Scaling: the instance is protected and in Standby; the group launched no replacement.
    let group = asg.describe_auto_scaling_groups().auto_scaling_group_names(&fleet.group_name).send().await.unwrap();
    let group = &group.auto_scaling_groups()[0];
    assert_eq!(group.instances().len(), 2, "no replacement launched, none terminated");
    let member = group.instances().iter().find(|i| i.instance_id() == Some(target.as_str())).unwrap();
    assert_eq!(member.lifecycle_state().map(|s| s.as_str()), Some("Standby"));
    assert_eq!(member.protected_from_scale_in(), Some(true));
    assert_eq!(group.desired_capacity(), Some(1), "capacity lowered by one, on record");
    let asg_record = record.auto_scaling.clone().unwrap();
    assert_eq!((asg_record.lifecycle_state.as_str(), asg_record.desired_capacity, asg_record.protected_from_scale_in), ("InService", 2, false));

    // Load balancer: no longer a target; the other instance still is.
    let health = elb.describe_target_health().target_group_arn(&fleet.target_group_arn).send().await.unwrap();
    let targets: Vec<&str> = health.target_health_descriptions().iter().filter_map(|d| d.target().and_then(|t| t.id())).collect();
    assert_eq!(targets, vec![fleet.instances[1].as_str()]);
    assert_eq!(record.target_groups.len(), 1);
    assert_eq!(record.target_groups[0].target_group_arn, fleet.target_group_arn);
    assert_eq!(record.target_groups[0].port, Some(80));

    // Termination safeguards.
    let err = ec2.terminate_instances().instance_ids(&target).send().await.expect_err("termination is refused");
    assert_eq!(err.as_service_error().and_then(|e| aws_sdk_ec2::error::ProvideErrorMetadata::code(e)), Some("OperationNotPermitted"));
    let described = ec2.describe_instances().instance_ids(&target).send().await.unwrap();
    let instance = &described.reservations()[0].instances()[0];
    assert!(!instance.block_device_mappings().is_empty());
    for mapping in instance.block_device_mappings() {
        assert_eq!(mapping.ebs().and_then(|e| e.delete_on_termination()), Some(false), "{:?}", mapping.device_name());
    }
    let shutdown = ec2
        .describe_instance_attribute()
        .instance_id(&target)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::InstanceInitiatedShutdownBehavior)
        .send()
        .await
        .unwrap();
    assert_eq!(shutdown.instance_initiated_shutdown_behavior().and_then(|v| v.value()), Some("stop"));
    let termination = record.termination.clone().unwrap();
    assert!(!termination.disable_api_termination, "prior state recorded");
    assert!(termination.volumes.iter().all(|v| v.delete_on_termination), "prior DeleteOnTermination recorded");

    // Network: only the isolation group on every interface; the prior groups and the transition group recorded.
    let isolation = record.security_group_id.clone().unwrap();
    for eni in instance.network_interfaces() {
        let groups: Vec<&str> = eni.groups().iter().filter_map(|g| g.group_id()).collect();
        assert_eq!(groups, vec![isolation.as_str()]);
    }
    assert!(record.transition_group_id.is_some());
    assert!(!record.previous.is_empty() && !record.previous[0].security_group_ids.contains(&isolation));

    // Tags and the action log.
    let tags: Vec<(String, String)> =
        instance.tags().iter().map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string())).collect();
    assert!(tags.contains(&("forensic-capture.dev/containment".into(), "isolated".into())));
    assert!(tags.contains(&("forensic-capture.dev/case-id".into(), "INC-4711".into())));
    let actions: Vec<(&str, &str)> =
        record.actions.iter().filter(|a| !["ElasticIps", "Credentials"].contains(&a.name.as_str())).map(|a| (a.name.as_str(), a.state.as_str())).collect();
    assert_eq!(
        actions,
        vec![
            ("TerminationSafeguards", "Applied"),
            ("InstanceTags", "Applied"),
            ("AutoScaling", "Applied"),
            ("LoadBalancers", "Applied"),
            ("SecurityGroups", "Applied")
        ]
    );

    record
}

#[tokio::test]
async fn containment_killed_between_any_two_steps_ends_the_same_with_no_duplicates() {
    let fleet = fleet_behind_a_load_balancer().await;
    let target = fleet.instances[0].clone();
    let env = CaptureEnv::new("contain-crash").await;
    let mut controller = env.start_controller("contain-crash");
    env.apply(&capture_yaml("contain", &target, "  memory: {enabled: false}\n  volatile: {enabled: false}\n  isolation:\n    allowIngressCidrs: [203.0.113.7/32]\n"))
        .await;
    // Every containment action saves the status before and after its AWS calls: killing the controller on each
    // change lands between any two of them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    let mut last = String::new();
    let capture = loop {
        assert!(std::time::Instant::now() < deadline, "containment did not complete under repeated kills");
        let capture = env.captures().get("contain").await.unwrap();
        if capture.status.as_ref().is_some_and(|s| s.completed_at.is_some()) {
            break capture;
        }
        let now = serde_json::to_string(&capture.status).unwrap();
        if now != last && controller.starts <= 20 {
            controller.restart();
        }
        last = now;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(controller.starts >= 5, "only {} starts", controller.starts);
    let record = assert_contained(&fleet, &target, &capture).await;
    assert_eq!(record.actions.len(), 7, "each action recorded once");

    let ec2 = support::stack().ec2().await;
    let uid = capture.metadata.uid.clone().unwrap();
    let by_uid = aws_sdk_ec2::types::Filter::builder().name("tag:forensic-capture.dev/capture-uid").values(&uid).build();
    let groups = ec2.describe_security_groups().filters(by_uid.clone()).send().await.unwrap();
    assert_eq!(groups.security_groups().len(), 2, "one isolation and one transition group, no duplicates");
    let snapshots = ec2.describe_snapshots().filters(by_uid).send().await.unwrap();
    assert_eq!(snapshots.snapshots().len(), record.termination.unwrap().volumes.len(), "one snapshot set");
}

/// Capture `name` of `target` with containment only (no volatile, memory or disk step), `isolation` being its
/// one line of `spec.isolation`; returns the environment, its controller (still running) and the completed capture.
async fn contained_only(name: &str, target: &str, isolation: &str) -> (CaptureEnv, ControllerProcess, forensic_capture::api::ForensicCapture) {
    let env = CaptureEnv::new(name).await;
    let controller = env.start_controller(name);
    let spec = format!("  memory: {{enabled: false}}\n  volatile: {{enabled: false}}\n  disk: {{enabled: false}}\n  isolation:\n    {isolation}\n");
    env.apply(&capture_yaml(name, target, &spec)).await;
    let capture = env.wait_completed(name).await;
    (env, controller, capture)
}

/// Responder CIDRs of both families: an IPv4 one becomes an IPv4 range and an IPv6 one an IPv6 range of the
/// isolation group (EC2 refuses an IPv6 CIDR given as `CidrIp`, which would leave the instance reachable).
#[tokio::test]
async fn ipv6_responder_cidrs_become_ipv6_ranges_of_the_isolation_group() {
    let ec2 = support::stack().ec2().await;
    let target = support::run_instance(&ec2, 0, &[]).await.instance_id;
    let (_env, _controller, capture) = contained_only("contain-ipv6", &target, "allowIngressCidrs: [203.0.113.7/32, \"2001:db8:1234::/48\"]").await;
    let status = capture.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Isolated), "{status:#?}");
    let group_id = status.isolation.unwrap().security_group_id.unwrap();
    let assert_rules = |group: &aws_sdk_ec2::types::SecurityGroup, when: &str| {
        assert!(group.ip_permissions_egress().is_empty(), "{when}: no egress: {:#?}", group.ip_permissions_egress());
        let all = group.ip_permissions().iter().filter(|p| p.ip_protocol() == Some("-1"));
        let v4: Vec<(&str, Option<&str>)> = all.clone().flat_map(|p| p.ip_ranges()).filter_map(|r| Some((r.cidr_ip()?, r.description()))).collect();
        let v6: Vec<(&str, Option<&str>)> = all.flat_map(|p| p.ipv6_ranges()).filter_map(|r| Some((r.cidr_ipv6()?, r.description()))).collect();
        let description = Some("forensic-capture responder access");
        assert_eq!(v4, vec![("203.0.113.7/32", description)], "{when}: IPv4 ranges of protocol -1: {:#?}", group.ip_permissions());
        assert_eq!(v6, vec![("2001:db8:1234::/48", description)], "{when}: IPv6 ranges of protocol -1: {:#?}", group.ip_permissions());
        let ranges: usize = group.ip_permissions().iter().map(|p| p.ip_ranges().len() + p.ipv6_ranges().len() + p.user_id_group_pairs().len() + p.prefix_list_ids().len()).sum();
        assert_eq!(ranges, 2, "{when}: no other ingress: {:#?}", group.ip_permissions());
    };
    let described = ec2.describe_security_groups().group_ids(&group_id).send().await.unwrap();
    assert_rules(&described.security_groups()[0], "after containment");

    // Setting the rules again (a restart after they were set) finds both ranges present and adds nothing.
    use forensic_capture::aws::ec2::{Ec2Api, SdkEc2};
    let cidrs = ["203.0.113.7/32".to_string(), "2001:db8:1234::/48".to_string()];
    SdkEc2(ec2.clone()).ensure_isolation_rules(&group_id, &cidrs).await.expect("rules set again");
    let described = ec2.describe_security_groups().group_ids(&group_id).send().await.unwrap();
    assert_rules(&described.security_groups()[0], "after setting them again");
}

async fn current_profile(ec2: &aws_sdk_ec2::Client, instance_id: &str) -> Option<String> {
    let associations = ec2
        .describe_iam_instance_profile_associations()
        .filters(aws_sdk_ec2::types::Filter::builder().name("instance-id").values(instance_id).build())
        .send()
        .await
        .unwrap();
    associations.iam_instance_profile_associations().first().and_then(|a| a.iam_instance_profile()).and_then(|p| p.arn()).map(String::from)
}

/// IAM returns policy documents URL-encoded.
fn urlencoding_decode(s: &str) -> String {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn detach_takes_the_instance_out_of_its_group_and_release_puts_it_back() {
    let stack = support::stack();
    let aws = stack.aws().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let asg = aws_sdk_autoscaling::Client::new(&aws);
    let fleet = fleet_behind_a_load_balancer().await;
    let target = fleet.instances[0].clone();
    let (env, _controller, capture) = contained_only("detach", &target, "autoScaling: Detach").await;
    let record = capture.status.clone().unwrap().isolation.unwrap();
    assert_eq!(record.auto_scaling.as_ref().unwrap().exit, Some(forensic_capture::api::AutoScalingExit::Detach));
    let group = asg.describe_auto_scaling_groups().auto_scaling_group_names(&fleet.group_name).send().await.unwrap();
    let group = &group.auto_scaling_groups()[0];
    let members: Vec<&str> = group.instances().iter().filter_map(|i| i.instance_id()).collect();
    assert_eq!(members, vec![fleet.instances[1].as_str()], "detached, and no replacement launched");
    assert_eq!(group.desired_capacity(), Some(1));
    let described = ec2.describe_instances().instance_ids(&target).send().await.unwrap();
    assert_eq!(described.reservations()[0].instances()[0].state().and_then(|s| s.name()).map(|n| n.as_str()), Some("running"));

    let released = env.release("back", "detach", "false positive").await;
    assert_eq!(released.phase.as_deref(), Some("Released"), "{released:#?}");
    let group = asg.describe_auto_scaling_groups().auto_scaling_group_names(&fleet.group_name).send().await.unwrap();
    let group = &group.auto_scaling_groups()[0];
    assert_eq!(group.instances().len(), 2, "attached again");
    assert_eq!(group.desired_capacity(), Some(2));
    let member = group.instances().iter().find(|i| i.instance_id() == Some(target.as_str())).unwrap();
    assert_eq!(member.lifecycle_state().map(|s| s.as_str()), Some("InService"));
}

/// Instances registered directly with a Classic Load Balancer: deregistered on containment, the name on record,
/// registered again on release.
#[tokio::test]
async fn a_classic_load_balancer_stops_sending_traffic_and_gets_it_back_on_release() {
    let stack = support::stack();
    let aws = stack.aws().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let classic = aws_sdk_elasticloadbalancing::Client::new(&aws);
    let target = support::run_instance(&ec2, 0, &[]).await.instance_id;
    // Load balancer names: at most 32 letters, digits and hyphens.
    let name: String = support::unique("classic").chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(32).collect();
    let name = name.trim_end_matches('-').to_string();
    classic
        .create_load_balancer()
        .load_balancer_name(&name)
        .listeners(aws_sdk_elasticloadbalancing::types::Listener::builder().protocol("HTTP").load_balancer_port(80).instance_port(80).build().unwrap())
        .availability_zones(format!("{}a", stack.region()))
        .send()
        .await
        .unwrap();
    let instance = aws_sdk_elasticloadbalancing::types::Instance::builder().instance_id(&target).build();
    classic.register_instances_with_load_balancer().load_balancer_name(&name).instances(instance).send().await.unwrap();
    let members = || async {
        let described = classic.describe_load_balancers().load_balancer_names(&name).send().await.unwrap();
        described.load_balancer_descriptions()[0].instances().iter().filter_map(|i| i.instance_id().map(str::to_string)).collect::<Vec<_>>()
    };
    assert_eq!(members().await, vec![target.clone()]);

    let env = CaptureEnv::new("classic").await;
    let _controller = env.start_controller("classic");
    env.apply(&capture_yaml("classic", &target, "  memory: {enabled: false}\n  volatile: {enabled: false}\n")).await;
    let capture = env.wait_completed("classic").await;
    let status = capture.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Isolated), "{status:#?}");
    let record = status.isolation.unwrap();
    assert_eq!(record.classic_load_balancers, vec![name.clone()], "the prior registration is on record");
    let action = record.actions.iter().find(|a| a.name == "LoadBalancers").unwrap();
    assert_eq!(action.state, "Applied", "{action:?}");
    assert!(action.message.as_deref().unwrap_or_default().contains("1 Classic Load Balancer(s)"), "{action:?}");
    assert!(members().await.is_empty(), "the Classic Load Balancer no longer lists the instance");

    let released = env.release("classic-back", "classic", "false positive").await;
    assert_eq!(released.phase.as_deref(), Some("Released"), "{released:#?}");
    assert_eq!(members().await, vec![target.clone()], "registered again on release");
}

/// A release created while its capture still runs waits (Pending, CaptureInProgress) and releases once the
/// capture has ended, rather than failing for good because no containment was recorded yet.
#[tokio::test]
async fn a_release_created_mid_capture_waits_and_then_releases() {
    let ec2 = support::stack().ec2().await;
    let instance = support::run_instance(&ec2, 0, &[]).await;
    let target = instance.instance_id.clone();
    let groups_before = interface_groups(&ec2, &target).await;
    let env = CaptureEnv::new("early-release").await;
    let _controller = env.start_controller("early-release");
    // Volatile data and memory run first, through SSM: the capture is still running when the release arrives.
    env.apply(&capture_yaml("early", &target, "")).await;
    let releases: kube::Api<forensic_capture::api::ContainmentRelease> = kube::Api::namespaced(env.kube.clone(), &env.namespace);
    let release: forensic_capture::api::ContainmentRelease = serde_yaml::from_str(
        "apiVersion: forensic-capture.dev/v1alpha1\nkind: ContainmentRelease\nmetadata:\n  name: early\nspec:\n  captureName: early\n  reason: false alarm\n",
    )
    .unwrap();
    releases.create(&Default::default(), &release).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let mut waited = false;
    let released = loop {
        let status = releases.get("early").await.unwrap().status.unwrap_or_default();
        waited |= status.phase.as_deref() == Some("Pending") && status.reason.as_deref() == Some("CaptureInProgress");
        if status.released_at.is_some() || status.phase.as_deref() == Some("Failed") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "release did not finish: {status:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(waited, "the release waited for the capture: {released:?}");
    assert_eq!(released.phase.as_deref(), Some("Released"), "{released:#?}");
    let capture = env.captures().get("early").await.unwrap();
    assert_eq!(capture.status.unwrap().phase, Some(Phase::Isolated), "the capture isolated before the release");
    assert_eq!(interface_groups(&ec2, &target).await, groups_before, "the instance is back on its own groups");
}

async fn interface_groups(ec2: &aws_sdk_ec2::Client, instance_id: &str) -> Vec<Vec<String>> {
    let described = ec2.describe_instances().instance_ids(instance_id).send().await.unwrap();
    described.reservations()[0].instances()[0]
        .network_interfaces()
        .iter()
        .map(|n| n.groups().iter().filter_map(|g| g.group_id().map(String::from)).collect())
        .collect()
}

/// CreateSecurityGroup repeated after a restart, before EC2's lookup by tag shows the first group, is answered
/// InvalidGroup.Duplicate: the group of that (per-capture) name is found and used, not a failure.
#[tokio::test]
async fn a_repeated_isolation_group_create_finds_the_group_already_made() {
    use forensic_capture::aws::ec2::{Ec2Api, SdkEc2};
    let ec2 = support::stack().ec2().await;
    let instance = support::run_instance(&ec2, 0, &[]).await.instance_id;
    let described = ec2.describe_instances().instance_ids(&instance).send().await.unwrap();
    let vpc_id = described.reservations()[0].instances()[0].vpc_id().unwrap().to_string();
    let name = support::unique("forensic-capture-isolation");
    let sdk = SdkEc2(ec2.clone());
    let tags = [("Name".to_string(), name.clone())];
    let first = sdk.create_isolation_group(&vpc_id, &name, &tags).await.unwrap();
    let again = sdk.create_isolation_group(&vpc_id, &name, &tags).await.expect("a duplicate name is the group already made");
    assert_eq!(again, first);
    let transition = support::unique("forensic-capture-transition");
    let made = sdk.create_isolation_group(&vpc_id, &transition, &tags).await.unwrap();
    // The transition group is looked up by the capture's UID tag first; this one has none, so the lookup misses
    // (as an eventually consistent one may) and the create meets the name.
    let found = sdk.transition_group(&vpc_id, &transition, &tags).await.expect("found by name");
    assert_eq!(found, made);
}
