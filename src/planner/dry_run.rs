//! A dry run's plan, pure: from the spec, the resolved target and what the controller read about the instance
//! (src/controller/dry_run.rs does the reading, and nothing else), say what each step and each containment
//! action would do and which state it would change. The step verdicts come from the same rules the capture's
//! planner applies (`agent_skip`), so a plan cannot promise a step the capture would skip.

use crate::{
    acquisition::plan_parts,
    api::{
        ActionVerdict, AutoScalingExit, CapturePlan, ElasticIpAssociation, ForensicCaptureSpec, PlannedAction, PlannedChange, PlannedStep, Reason,
        Step, StepVerdict, TargetFacts, TargetRegistration,
    },
};

/// A read that AWS may refuse: the refusal (operation and AWS error) becomes an Unknown in the plan.
pub type Read<T> = Result<T, String>;

/// What the dry run read, without changing anything. Reads a plan does not need (Elastic IPs when they are
/// not to be disassociated, say) are left empty and not looked at.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Each network interface and its security groups.
    pub interfaces: Vec<(String, Vec<String>)>,
    /// Each EBS volume: (device name, volume ID, DeleteOnTermination).
    pub volumes: Vec<(String, String, bool)>,
    /// The root device name, to tell the boot volume apart.
    pub root_device: Option<String>,
    /// (DisableApiTermination, shutdown behaviour).
    pub termination: Read<(bool, String)>,
    /// The Auto Scaling group: (group, lifecycle state, scale-in protection, desired capacity).
    pub auto_scaling: Read<Option<(String, String, bool, i32)>>,
    pub target_groups: Read<Vec<TargetRegistration>>,
    pub classic_load_balancers: Read<Vec<String>>,
    pub elastic_ips: Read<Vec<ElasticIpAssociation>>,
    /// The instance profile ARN and its role's name.
    pub instance_profile: Read<Option<(String, Option<String>)>>,
}

/// The controller's settings a plan depends on.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The AVML location for the instance's architecture, when configured.
    pub avml: Option<String>,
    /// The evidence bucket and prefix, or why there is none.
    pub evidence: Read<(String, String)>,
    /// Where forensic copies would go ("account A, region R, key K"), or why nowhere.
    pub forensic_destination: Option<Read<String>>,
    /// The capture's UID (names the groups a capture would create).
    pub uid: String,
}

pub fn plan(spec: &ForensicCaptureSpec, target: &TargetFacts, observed: &Observed, settings: &Settings) -> CapturePlan {
    let steps = Step::ALL.iter().map(|&step| plan_step(step, spec, target, observed, settings)).collect();
    let containment = if Step::Isolation.enabled(spec) { plan_containment(spec, target, observed, settings) } else { Vec::new() };
    CapturePlan { planned_at: None, steps, containment }
}

fn step(step: Step, would: StepVerdict, reason: Option<Reason>, message: String) -> PlannedStep {
    PlannedStep { name: step.name().into(), would, reason: reason.map(String::from), message }
}

fn plan_step(s: Step, spec: &ForensicCaptureSpec, target: &TargetFacts, observed: &Observed, settings: &Settings) -> PlannedStep {
    let instance = &target.instance_id;
    if !s.enabled(spec) {
        return step(s, StepVerdict::NotRequested, None, format!("not requested in the spec ({})", s.name()));
    }
    if let Some((reason, message)) = super::agent_skip(s, target) {
        return step(s, StepVerdict::Skip, Some(reason), message);
    }
    let evidence = |file: &str| match &settings.evidence {
        Ok((bucket, prefix)) => Ok(format!("s3://{bucket}/{}", crate::acquisition::object_key(prefix, &spec.case_id, instance, &settings.uid, file))),
        Err(why) => Err(step(s, StepVerdict::Fail, Some(Reason::EvidenceBucketNotConfigured), why.clone())),
    };
    match s {
        Step::Volatile => match evidence("volatile.tar.gz") {
            Ok(uri) => step(s, StepVerdict::Run, None, format!("the volatile-data script through SSM (AWS-RunShellScript) on {instance}, uploading to {uri} through presigned URLs")),
            Err(failed) => failed,
        },
        Step::Checkpoint => {
            let pod = target.pod.as_ref().map(|p| format!("{}/{}", p.namespace, p.name)).unwrap_or_default();
            let node = target.node_name.as_deref().unwrap_or_default();
            match evidence("checkpoints/") {
                Ok(uri) => step(
                    s,
                    StepVerdict::Run,
                    None,
                    format!("each running container of pod {pod} checkpointed by the kubelet of Node {node} (through the API server's node proxy), the archives uploaded from {instance} through SSM to {uri}<container>.tar"),
                ),
                Err(failed) => failed,
            }
        }
        Step::CheckpointRemoval => step(s, StepVerdict::Run, None, format!("the checkpoint archives removed from {instance} through SSM once their uploads are verified")),
        Step::Memory => {
            if let Some((reason, message)) = super::memory_blocker(target, settings.avml.is_some()) {
                return step(s, StepVerdict::Fail, Some(reason), message);
            }
            let (Some(avml), Some(memory_mib)) = (&settings.avml, target.memory_mib) else {
                unreachable!("memory_blocker checked the AVML and the memory size");
            };
            let parts = plan_parts(memory_mib as u64);
            let architecture = target.architecture.as_deref().unwrap_or_default();
            match evidence("memory.lime") {
                Ok(uri) => step(
                    s,
                    StepVerdict::Run,
                    None,
                    format!(
                        "AVML for {architecture} from {avml} through SSM: {memory_mib} MiB of memory streamed to {uri} in up to {} parts of {} MiB, never touching the instance's disk",
                        parts.part_count,
                        parts.part_size / (1024 * 1024)
                    ),
                ),
                Err(failed) => failed,
            }
        }
        Step::Disk => {
            let volumes: Vec<String> = observed
                .volumes
                .iter()
                .filter(|(device, _, _)| !(spec.steps.disk.exclude_boot_volume && observed.root_device.as_deref() == Some(device.as_str())))
                .map(|(device, volume, _)| format!("{volume} ({device})"))
                .collect();
            if volumes.is_empty() {
                return step(s, StepVerdict::Fail, Some(Reason::NoVolumes), format!("instance {instance} has no EBS volumes to snapshot"));
            }
            step(s, StepVerdict::Run, None, format!("one crash-consistent CreateSnapshots of {} volume(s): {}", volumes.len(), volumes.join(", ")))
        }
        Step::Isolation => {
            let hold = match spec.steps.isolation.on_acquisition_failure {
                crate::api::AcquisitionFailurePolicy::Hold => "; not run if an acquisition step fails (onAcquisitionFailure Hold)",
                crate::api::AcquisitionFailurePolicy::Isolate => "",
            };
            step(s, StepVerdict::Run, None, format!("the containment actions below, after the evidence steps{hold}"))
        }
        Step::ForensicCopy => match &settings.forensic_destination {
            Some(Ok(destination)) => step(s, StepVerdict::Run, None, format!("each snapshot copied to {destination} (re-encrypted to the share key first when under another key), then unshared")),
            Some(Err(why)) => step(s, StepVerdict::Fail, Some(Reason::ForensicCopyNotConfigured), why.clone()),
            None => step(s, StepVerdict::Fail, Some(Reason::ForensicCopyNotConfigured), "no forensic destination".into()),
        },
    }
}

fn change(resource: impl Into<String>, from: impl Into<String>, to: impl Into<String>) -> PlannedChange {
    PlannedChange { resource: resource.into(), from: from.into(), to: to.into() }
}

fn action(name: &str, would: ActionVerdict, message: impl Into<String>, changes: Vec<PlannedChange>) -> PlannedAction {
    PlannedAction { name: name.into(), would, message: message.into(), changes }
}

fn unknown(name: &str, why: &str) -> PlannedAction {
    action(name, ActionVerdict::Unknown, format!("could not be read: {why}"), Vec::new())
}

/// The containment actions, in the playbook's order (src/controller/containment/mod.rs): a pod target's own
/// first, then the instance's, which for a pod target apply only with spec.pod.isolateNode.
fn plan_containment(spec: &ForensicCaptureSpec, target: &TargetFacts, observed: &Observed, settings: &Settings) -> Vec<PlannedAction> {
    use crate::planner::{ContainmentScope, containment_applies};
    let mut actions = Vec::new();
    if containment_applies(ContainmentScope::Pod, spec) == Ok(true) {
        actions.extend(plan_pod_containment(spec, target, settings));
    }
    match containment_applies(ContainmentScope::Instance, spec) {
        Ok(true) => actions.extend(plan_instance_containment(spec, target, observed, settings)),
        Ok(false) => {}
        // The same actions, each recorded as not needed, as the capture records them.
        Err(why) => actions.extend(plan_instance_containment(spec, target, observed, settings).iter().map(|a| action(&a.name, ActionVerdict::NotNeeded, why.clone(), Vec::new()))),
    }
    actions
}

/// A pod target's quarantine and the optional cordon, as the capture would apply them.
fn plan_pod_containment(spec: &ForensicCaptureSpec, target: &TargetFacts, settings: &Settings) -> Vec<PlannedAction> {
    let mut actions = Vec::new();
    let Some(pod) = &target.pod else { return actions };
    let cidrs = &spec.steps.isolation.allow_ingress_cidrs;
    let ingress = if cidrs.is_empty() { "no ingress".to_string() } else { format!("ingress only from {}", cidrs.join(", ")) };
    let label = format!("{}={}", crate::planner::QUARANTINE_LABEL, settings.uid);
    actions.push(action(
        "PodQuarantine",
        ActionVerdict::Change,
        format!("pod {}/{} labelled and selected by a NetworkPolicy that denies all egress and allows {ingress}; the pod keeps running", pod.namespace, pod.name),
        vec![
            change(format!("pod {}/{} label", pod.namespace, pod.name), "as now", label),
            change(format!("NetworkPolicy in {}", pod.namespace), "none", crate::planner::quarantine_policy_name(&settings.uid)),
        ],
    ));
    let node = target.node_name.as_deref().unwrap_or_default();
    actions.push(if spec.pod.as_ref().is_some_and(|p| p.cordon) {
        action("NodeCordon", ActionVerdict::Change, format!("Node {node} cordoned; its pods keep running"), vec![change(format!("Node {node} unschedulable"), "as now", "true")])
    } else {
        action("NodeCordon", ActionVerdict::NotNeeded, "not requested (spec.pod.cordon)", Vec::new())
    });
    actions
}

/// The instance's containment actions.
fn plan_instance_containment(spec: &ForensicCaptureSpec, target: &TargetFacts, observed: &Observed, settings: &Settings) -> Vec<PlannedAction> {
    let isolation = &spec.steps.isolation;
    let instance = &target.instance_id;
    let mut actions = Vec::new();

    actions.push(match &observed.termination {
        Err(why) => unknown("TerminationSafeguards", why),
        Ok((protected, shutdown)) => {
            let mut changes = Vec::new();
            if !protected {
                changes.push(change(format!("instance {instance} DisableApiTermination"), "false", "true"));
            }
            if shutdown != "stop" {
                changes.push(change(format!("instance {instance} shutdown behaviour"), shutdown.as_str(), "stop"));
            }
            for (device, volume, delete) in observed.volumes.iter().filter(|v| v.2) {
                changes.push(change(format!("volume {volume} ({device}) DeleteOnTermination"), delete.to_string(), "false"));
            }
            if changes.is_empty() {
                action("TerminationSafeguards", ActionVerdict::NotNeeded, "termination protection on, shutdown behaviour stop and no volume deleted on termination already", changes)
            } else {
                action("TerminationSafeguards", ActionVerdict::Change, "the instance and its volumes guarded against termination", changes)
            }
        }
    });

    let tags = format!("forensic-capture.dev/containment=isolated, forensic-capture.dev/capture-uid={}, forensic-capture.dev/case-id={}", settings.uid, spec.case_id);
    actions.push(action("InstanceTags", ActionVerdict::Change, "tagged with the containment state, the capture and the case", vec![change(format!("instance {instance} tags"), "as now", tags)]));

    actions.push(match &observed.auto_scaling {
        Err(why) => unknown("AutoScaling", why),
        Ok(None) => action("AutoScaling", ActionVerdict::NotNeeded, "not in an Auto Scaling group", Vec::new()),
        Ok(Some((group, lifecycle, protected, desired))) => {
            let in_service = lifecycle == "InService";
            let after = match isolation.auto_scaling {
                AutoScalingExit::Standby => "Standby",
                AutoScalingExit::Detach => "detached",
            };
            let desired_after = if in_service { desired - 1 } else { *desired };
            action(
                "AutoScaling",
                ActionVerdict::Change,
                format!("scale-in protection on and {:?} in {group}, with no replacement launched", isolation.auto_scaling),
                vec![change(
                    format!("Auto Scaling group {group}"),
                    format!("{instance} {lifecycle}, scale-in protection {}, desired capacity {desired}", on_off(*protected)),
                    format!("{instance} {after}, scale-in protection on, desired capacity {desired_after}"),
                )],
            )
        }
    });

    actions.push(match (&observed.target_groups, &observed.classic_load_balancers) {
        (Err(why), _) | (_, Err(why)) => unknown("LoadBalancers", why),
        (Ok(groups), Ok(classic)) if groups.is_empty() && classic.is_empty() => {
            action("LoadBalancers", ActionVerdict::NotNeeded, "not registered in any target group or Classic Load Balancer", Vec::new())
        }
        (Ok(groups), Ok(classic)) => {
            let mut changes: Vec<PlannedChange> = groups
                .iter()
                .map(|g| change(format!("target group {}", g.target_group_arn), registered(g.port), "deregistered"))
                .collect();
            changes.extend(classic.iter().map(|name| change(format!("Classic Load Balancer {name}"), "registered", "deregistered")));
            action("LoadBalancers", ActionVerdict::Change, format!("deregistered from {} target group(s) and {} Classic Load Balancer(s)", groups.len(), classic.len()), changes)
        }
    });

    actions.push(if !isolation.disassociate_elastic_ips {
        action("ElasticIps", ActionVerdict::NotNeeded, "not requested (spec.isolation.disassociateElasticIps)", Vec::new())
    } else {
        match &observed.elastic_ips {
            Err(why) => unknown("ElasticIps", why),
            Ok(ips) if ips.is_empty() => action("ElasticIps", ActionVerdict::NotNeeded, "no Elastic IP associated", Vec::new()),
            Ok(ips) => action(
                "ElasticIps",
                ActionVerdict::Change,
                format!("{} Elastic IP(s) disassociated", ips.len()),
                ips.iter().map(|a| change(format!("Elastic IP {}", a.public_ip), format!("associated with {}", a.network_interface_id), "disassociated")).collect(),
            ),
        }
    });

    actions.push(match &target.vpc_id {
        None => action("SecurityGroups", ActionVerdict::Fail, format!("instance {instance} is not in a VPC; security groups cannot isolate it ({})", Reason::NoVpc), Vec::new()),
        Some(vpc) => {
            let isolation_group = format!("forensic-capture-isolation-{}", settings.uid);
            let ingress = if isolation.allow_ingress_cidrs.is_empty() { "no ingress".to_string() } else { format!("ingress from {}", isolation.allow_ingress_cidrs.join(", ")) };
            action(
                "SecurityGroups",
                ActionVerdict::Change,
                format!("each interface moved through an allow-all group (forensic-capture-transition-{0}) to {isolation_group}, created in {vpc}: no egress, {ingress}", settings.uid),
                observed
                    .interfaces
                    .iter()
                    .map(|(eni, groups)| change(format!("interface {eni} security groups"), groups.join(", "), format!("{isolation_group} (new)")))
                    .collect(),
            )
        }
    });

    actions.push(match (&isolation.credentials, &observed.instance_profile) {
        (None, _) => action("Credentials", ActionVerdict::NotNeeded, "not requested (spec.isolation.credentials)", Vec::new()),
        (Some(_), Err(why)) => unknown("Credentials", why),
        (Some(_), Ok(None)) => action("Credentials", ActionVerdict::NotNeeded, "the instance has no instance profile", Vec::new()),
        (Some(wanted), Ok(Some((profile, role)))) => {
            let mut changes = Vec::new();
            if let Some(replacement) = wanted.replace_instance_profile.as_ref().filter(|r| *r != profile) {
                changes.push(change(format!("instance {instance} instance profile"), profile.as_str(), replacement.as_str()));
            }
            if wanted.revoke_sessions {
                let role = role.as_deref().unwrap_or("(the profile's role)");
                changes.push(change(format!("role {role} sessions"), "valid", "denied when issued before containment (kept after release)"));
            }
            let verdict = if changes.is_empty() { ActionVerdict::NotNeeded } else { ActionVerdict::Change };
            action("Credentials", verdict, format!("instance profile {profile}"), changes)
        }
    });
    actions
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

fn registered(port: Option<i32>) -> String {
    match port {
        Some(port) => format!("registered on port {port}"),
        None => "registered".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ForensicCaptureSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn target() -> TargetFacts {
        TargetFacts {
            instance_id: "i-1".into(),
            region: "eu-west-1".into(),
            vpc_id: Some("vpc-1".into()),
            architecture: Some("x86_64".into()),
            platform: Some("Linux/UNIX".into()),
            memory_mib: Some(4096),
            state: Some("running".into()),
            ssm_managed: Some(true),
            ..Default::default()
        }
    }

    fn observed() -> Observed {
        Observed {
            interfaces: vec![("eni-1".into(), vec!["sg-web".into(), "sg-ssh".into()])],
            volumes: vec![("/dev/xvda".into(), "vol-root".into(), true), ("/dev/sdf".into(), "vol-data".into(), false)],
            root_device: Some("/dev/xvda".into()),
            termination: Ok((false, "terminate".into())),
            auto_scaling: Ok(Some(("web".into(), "InService".into(), false, 2))),
            target_groups: Ok(vec![TargetRegistration { target_group_arn: "arn:tg/web".into(), port: Some(80) }]),
            classic_load_balancers: Ok(Vec::new()),
            elastic_ips: Ok(Vec::new()),
            instance_profile: Ok(None),
        }
    }

    fn settings() -> Settings {
        Settings { avml: Some("s3://tools/avml".into()), evidence: Ok(("evidence".into(), "captures".into())), forensic_destination: None, uid: "u1".into() }
    }

    fn named<'p>(plan: &'p CapturePlan, name: &str) -> &'p PlannedStep {
        plan.steps.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name} planned"))
    }

    fn verdicts(plan: &CapturePlan) -> Vec<(&str, StepVerdict)> {
        plan.steps.iter().map(|s| (s.name.as_str(), s.would)).collect()
    }

    #[test]
    fn a_full_capture_of_an_instance_in_a_group_behind_a_target_group_lists_every_change() {
        let plan = plan(&spec("caseId: C-1\ntarget: {instanceId: i-1}\n"), &target(), &observed(), &settings());
        assert_eq!(
            verdicts(&plan),
            [
                ("volatile", StepVerdict::Run),
                ("checkpoint", StepVerdict::NotRequested),
                ("checkpointRemoval", StepVerdict::NotRequested),
                ("memory", StepVerdict::Run),
                ("disk", StepVerdict::Run),
                ("isolation", StepVerdict::Run),
                ("forensicCopy", StepVerdict::NotRequested)
            ]
        );
        assert!(named(&plan, "memory").message.contains("s3://tools/avml") && named(&plan, "memory").message.contains("4096 MiB"), "{}", named(&plan, "memory").message);
        assert!(named(&plan, "disk").message.contains("vol-root (/dev/xvda), vol-data (/dev/sdf)"), "{}", named(&plan, "disk").message);
        let by_name = |n: &str| plan.containment.iter().find(|a| a.name == n).unwrap();
        let names: Vec<&str> = plan.containment.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["TerminationSafeguards", "InstanceTags", "AutoScaling", "LoadBalancers", "ElasticIps", "SecurityGroups", "Credentials"]);
        let guards = by_name("TerminationSafeguards");
        assert_eq!(guards.changes.len(), 3, "protection, shutdown behaviour and the root volume only: {guards:?}");
        let asg = &by_name("AutoScaling").changes[0];
        assert_eq!(asg.from, "i-1 InService, scale-in protection off, desired capacity 2");
        assert_eq!(asg.to, "i-1 Standby, scale-in protection on, desired capacity 1");
        assert_eq!(by_name("LoadBalancers").changes[0].resource, "target group arn:tg/web");
        assert_eq!(by_name("ElasticIps").would, ActionVerdict::NotNeeded);
        let groups = &by_name("SecurityGroups").changes[0];
        assert_eq!((groups.from.as_str(), groups.to.as_str()), ("sg-web, sg-ssh", "forensic-capture-isolation-u1 (new)"));
        assert_eq!(by_name("Credentials").would, ActionVerdict::NotNeeded);
    }

    #[test]
    fn steps_the_capture_would_skip_or_fail_say_so_with_the_capture_s_reason() {
        let offline = TargetFacts { ssm_managed: Some(false), ..target() };
        let plan = plan(&spec("caseId: C-1\ntarget: {instanceId: i-1}\n"), &offline, &observed(), &settings());
        assert_eq!(named(&plan, "volatile").would, StepVerdict::Skip);
        assert_eq!(named(&plan, "volatile").reason.as_deref(), Some("NotSsmManaged"));
        let arm = TargetFacts { architecture: Some("arm64".into()), ..target() };
        let plan = super::plan(&spec("caseId: C-1\ntarget: {instanceId: i-1}\n"), &arm, &observed(), &Settings { avml: None, ..settings() });
        assert_eq!((named(&plan, "memory").would, named(&plan, "memory").reason.as_deref()), (StepVerdict::Fail, Some("AvmlNotConfigured")));
        let mips = TargetFacts { architecture: Some("mips".into()), ..target() };
        let plan = super::plan(&spec("caseId: C-1\ntarget: {instanceId: i-1}\n"), &mips, &observed(), &settings());
        assert_eq!(named(&plan, "memory").reason.as_deref(), Some("UnsupportedArchitecture"));
        let no_size = TargetFacts { memory_mib: None, ..target() };
        let plan = super::plan(&spec("caseId: C-1\ntarget: {instanceId: i-1}\n"), &no_size, &observed(), &settings());
        assert_eq!(named(&plan, "memory").reason.as_deref(), Some("MemorySizeUnknown"));
        let none = Observed { volumes: Vec::new(), ..observed() };
        let plan = super::plan(&spec("caseId: C-1\ntarget: {instanceId: i-1}\n"), &target(), &none, &settings());
        assert_eq!(named(&plan, "disk").reason.as_deref(), Some("NoVolumes"));
        let boot_only = Observed { volumes: vec![("/dev/xvda".into(), "vol-root".into(), true)], ..observed() };
        let plan = super::plan(&spec("caseId: C-1\ntarget: {instanceId: i-1}\ndisk: {excludeBootVolume: true}\n"), &target(), &boot_only, &settings());
        assert_eq!(named(&plan, "disk").reason.as_deref(), Some("NoVolumes"), "the boot volume is left out: {:?}", named(&plan, "disk"));
    }

    #[test]
    fn a_refused_read_is_unknown_and_naming_the_error_and_isolation_off_plans_no_containment() {
        let refused = Observed { auto_scaling: Err("autoscaling:DescribeAutoScalingInstances: AccessDenied: no".into()), ..observed() };
        let plan = plan(&spec("caseId: C-1\ntarget: {instanceId: i-1}\n"), &target(), &refused, &settings());
        let asg = plan.containment.iter().find(|a| a.name == "AutoScaling").unwrap();
        assert_eq!(asg.would, ActionVerdict::Unknown);
        assert!(asg.message.contains("AccessDenied"), "{}", asg.message);
        let plan = super::plan(&spec("caseId: C-1\ntarget: {instanceId: i-1}\nisolation: {enabled: false}\n"), &target(), &observed(), &settings());
        assert!(plan.containment.is_empty());
        assert_eq!(named(&plan, "isolation").would, StepVerdict::NotRequested);
    }

    #[test]
    fn a_pod_target_plans_its_checkpoints_and_quarantine_and_leaves_the_node_s_instance_alone() {
        let pod = crate::api::PodFacts { namespace: "shop".into(), name: "checkout-1".into(), uid: "p-1".into(), ..Default::default() };
        let on_node = TargetFacts { node_name: Some("ip-10-0-0-1".into()), pod: Some(pod), ..target() };
        let yaml = "caseId: C-1\ntarget: {podRef: {namespace: shop, name: checkout-1}}\nisolation: {allowIngressCidrs: [203.0.113.7/32]}\npod: {checkpoint: true, cordon: true}\n";
        let plan = plan(&spec(yaml), &on_node, &observed(), &settings());
        assert_eq!(named(&plan, "checkpoint").would, StepVerdict::Run);
        assert!(named(&plan, "checkpoint").message.contains("pod shop/checkout-1") && named(&plan, "checkpoint").message.contains("Node ip-10-0-0-1"), "{:?}", named(&plan, "checkpoint"));
        assert_eq!(named(&plan, "checkpointRemoval").would, StepVerdict::Run);
        let names: Vec<(&str, ActionVerdict)> = plan.containment.iter().map(|a| (a.name.as_str(), a.would)).collect();
        assert_eq!(names[..2], [("PodQuarantine", ActionVerdict::Change), ("NodeCordon", ActionVerdict::Change)]);
        assert!(plan.containment[0].message.contains("203.0.113.7/32"), "{:?}", plan.containment[0]);
        assert_eq!(plan.containment[0].changes[1].to, "forensic-capture-quarantine-u1");
        assert!(plan.containment[2..].iter().all(|a| a.would == ActionVerdict::NotNeeded && a.message.contains("spec.pod.isolateNode")), "{:?}", plan.containment);
        let isolate_node = yaml.replace("cordon: true", "isolateNode: true");
        let plan = super::plan(&spec(&isolate_node), &on_node, &observed(), &settings());
        let by_name = |n: &str| plan.containment.iter().find(|a| a.name == n).unwrap().would;
        assert_eq!((by_name("NodeCordon"), by_name("SecurityGroups")), (ActionVerdict::NotNeeded, ActionVerdict::Change));
    }
}
