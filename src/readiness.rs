//! Readiness, the pure part: what a dry run's plan of a full capture says about whether an instance could be
//! captured now, and the counts a ForensicReadiness reports. The reads are the dry run's own
//! (controller/readiness.rs runs it), so readiness cannot call ready an instance a capture would skip.

use std::collections::BTreeMap;

use crate::api::{
    AccountReadiness, ActionVerdict, CapturePlan, ForensicCaptureSpec, ForensicReadinessStatus, InstanceReadiness, ReadinessProblem, Reason, StepVerdict,
    TargetFacts,
};

/// The capture readiness plans for: every acquisition step, disk and containment including the instance
/// profile, so that each thing a real capture could need is looked at.
pub fn full_capture_spec(instance_id: &str, account_id: Option<&str>, region: &str) -> ForensicCaptureSpec {
    let yaml = format!(
        "caseId: readiness\ntarget: {{instanceId: {instance_id}, region: {region}{}}}\nisolation: {{enabled: true, credentials: {{revokeSessions: true}}}}\n",
        account_id.map(|a| format!(", accountId: '{a}'")).unwrap_or_default()
    );
    serde_yaml::from_str(&yaml).expect("the readiness spec is valid")
}

/// Which containment actions name a need, when they would change something.
const NEEDS: [(&str, &str); 3] = [("AutoScaling", "AutoScalingGroup"), ("LoadBalancers", "LoadBalancers"), ("Credentials", "InstanceProfile")];

/// One instance's verdict from the plan of a full capture.
pub fn assess(target: &TargetFacts, plan: &CapturePlan) -> InstanceReadiness {
    let mut problems: Vec<ReadinessProblem> = Vec::new();
    let mut add = |reason: &str, message: &str| {
        // Volatile data and memory are skipped for the same reason when the agent is offline: said once.
        if !problems.iter().any(|p| p.reason == reason) {
            problems.push(ReadinessProblem { reason: reason.to_string(), message: message.to_string() });
        }
    };
    for step in plan.steps.iter().filter(|s| matches!(s.would, StepVerdict::Skip | StepVerdict::Fail)) {
        add(step.reason.as_deref().unwrap_or("Failed"), &format!("{} step: {}", step.name, step.message));
    }
    for action in &plan.containment {
        match action.would {
            ActionVerdict::Unknown => add(Reason::ContainmentStateUnknown.as_str(), &format!("{}: {}", action.name, action.message)),
            ActionVerdict::Fail => add(if action.name == "SecurityGroups" { Reason::NoVpc.as_str() } else { "Failed" }, &format!("{}: {}", action.name, action.message)),
            _ => {}
        }
    }
    let containment_needs = plan
        .containment
        .iter()
        .filter(|a| a.would == ActionVerdict::Change)
        .filter_map(|a| NEEDS.iter().find(|(name, _)| *name == a.name).map(|(_, need)| need.to_string()))
        .collect();
    InstanceReadiness {
        instance_id: target.instance_id.clone(),
        account_id: target.account_id.clone().unwrap_or_default(),
        region: target.region.clone(),
        ready: problems.is_empty(),
        problems,
        containment_needs,
    }
}

/// The status of a check: counts, the not-ready instances, the account checks. Conditions are the caller's.
pub fn summarize(instances: &[InstanceReadiness], accounts: Vec<AccountReadiness>) -> ForensicReadinessStatus {
    let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
    let mut needs: BTreeMap<String, u32> = BTreeMap::new();
    for instance in instances {
        for problem in &instance.problems {
            *reasons.entry(problem.reason.clone()).or_default() += 1;
        }
        for need in &instance.containment_needs {
            *needs.entry(need.clone()).or_default() += 1;
        }
    }
    let ready = instances.iter().filter(|i| i.ready).count() as u32;
    ForensicReadinessStatus {
        checked_at: None,
        instances: instances.len() as u32,
        ready,
        not_ready: instances.len() as u32 - ready,
        reasons,
        containment_needs: needs,
        not_ready_instances: instances.iter().filter(|i| !i.ready).cloned().collect(),
        accounts,
        conditions: Vec::new(),
    }
}

/// Whether everything checked is ready, and a line saying so (the Ready condition).
pub fn verdict(status: &ForensicReadinessStatus) -> (bool, &'static str, String) {
    let failed_checks: Vec<String> =
        status.accounts.iter().flat_map(|a| a.checks.iter().filter(|c| !c.ok).map(move |c| format!("{} in {}/{}", c.name, a.account_id, a.region))).collect();
    if status.not_ready == 0 && failed_checks.is_empty() {
        return (true, "Ready", format!("all {} selected instance(s) could be captured now", status.instances));
    }
    let mut parts = Vec::new();
    if status.not_ready > 0 {
        let reasons: Vec<String> = status.reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
        parts.push(format!("{} of {} instance(s) not ready ({})", status.not_ready, status.instances, reasons.join(", ")));
    }
    if !failed_checks.is_empty() {
        parts.push(format!("failed checks: {}", failed_checks.join(", ")));
    }
    (false, "NotReady", parts.join("; "))
}

/// The status as text for a terminal: each instance that is not ready with its reasons, the counts,
/// then each account check, then the verdict.
pub fn table(status: &ForensicReadinessStatus) -> String {
    let mut out = format!("{:<21} {:<13} {:<15} {:<6} {}\n", "INSTANCE", "ACCOUNT", "REGION", "READY", "REASONS");
    for i in &status.not_ready_instances {
        let reasons: Vec<&str> = i.problems.iter().map(|p| p.reason.as_str()).collect();
        out.push_str(&format!("{:<21} {:<13} {:<15} {:<6} {}\n", i.instance_id, i.account_id, i.region, "no", reasons.join(",")));
        for p in &i.problems {
            out.push_str(&format!("    {}: {}\n", p.reason, p.message));
        }
    }
    let needs: Vec<String> = status.containment_needs.iter().map(|(n, c)| format!("{n} {c}")).collect();
    out.push_str(&format!("{} instance(s): {} ready, {} not ready; containment would handle: {}\n", status.instances, status.ready, status.not_ready, if needs.is_empty() { "nothing special".into() } else { needs.join(", ") }));
    out.push_str(&format!("\n{:<13} {:<15} {:<15} {:<4} {}\n", "ACCOUNT", "REGION", "CHECK", "OK", "DETAIL"));
    for a in &status.accounts {
        for c in &a.checks {
            let detail = match &c.reason {
                Some(r) => format!("{r}: {}", c.message),
                None => c.message.clone(),
            };
            out.push_str(&format!("{:<13} {:<15} {:<15} {:<4} {detail}\n", a.account_id, a.region, c.name, if c.ok { "yes" } else { "no" }));
        }
    }
    let (_, reason, message) = verdict(status);
    out.push_str(&format!("\n{reason}: {message}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PlannedAction, PlannedStep};

    fn target(memory_mib: i64) -> TargetFacts {
        serde_json::from_value(serde_json::json!({
            "instanceId": "i-1", "accountId": "123456789012", "region": "eu-west-1", "architecture": "x86_64", "state": "running",
            "platform": "Linux/UNIX", "ssmManaged": true, "memoryMib": memory_mib, "vpcId": "vpc-1"
        }))
        .unwrap()
    }

    fn step(name: &str, would: StepVerdict, reason: Option<&str>) -> PlannedStep {
        PlannedStep { name: name.into(), would, reason: reason.map(String::from), message: format!("{name} says why") }
    }

    fn action(name: &str, would: ActionVerdict) -> PlannedAction {
        PlannedAction { name: name.into(), would, message: format!("{name} message"), changes: Vec::new() }
    }

    #[test]
    fn skipped_and_failed_steps_are_problems_said_once_each() {
        let plan = CapturePlan {
            planned_at: None,
            steps: vec![step("volatile", StepVerdict::Skip, Some("NotSsmManaged")), step("memory", StepVerdict::Skip, Some("NotSsmManaged")), step("disk", StepVerdict::Run, None)],
            containment: vec![action("AutoScaling", ActionVerdict::Change), action("LoadBalancers", ActionVerdict::NotNeeded), action("Credentials", ActionVerdict::Unknown)],
        };
        let verdict = assess(&target(1024), &plan);
        assert!(!verdict.ready);
        let reasons: Vec<&str> = verdict.problems.iter().map(|p| p.reason.as_str()).collect();
        assert_eq!(reasons, ["NotSsmManaged", "ContainmentStateUnknown"]);
        assert_eq!(verdict.containment_needs, ["AutoScalingGroup"]);
    }

    #[test]
    fn memory_beyond_the_upload_plan_is_refused_before_a_capture_starts() {
        assert!(crate::acquisition::fits_upload_plan(32 * 1024 * 1024), "32 TiB, the largest EC2 memory today, fits");
        let huge = target(48 * 1024 * 1024);
        let (reason, message) = crate::planner::memory_blocker(&huge, true).expect("48 TiB does not fit");
        assert_eq!(reason, Reason::MemoryExceedsUploadLimits);
        assert!(message.contains("i-1"), "{message}");
        assert_eq!(crate::planner::memory_blocker(&target(1024), true), None);
    }

    #[test]
    fn the_summary_counts_reasons_and_needs_and_lists_only_the_not_ready() {
        let ready = assess(&target(1024), &CapturePlan { planned_at: None, steps: vec![], containment: vec![action("LoadBalancers", ActionVerdict::Change)] });
        let offline = assess(&target(1024), &CapturePlan { planned_at: None, steps: vec![step("volatile", StepVerdict::Skip, Some("NotSsmManaged"))], containment: vec![] });
        let status = summarize(&[ready, offline], Vec::new());
        assert_eq!((status.instances, status.ready, status.not_ready), (2, 1, 1));
        assert_eq!(status.reasons.get("NotSsmManaged"), Some(&1));
        assert_eq!(status.containment_needs.get("LoadBalancers"), Some(&1));
        assert_eq!(status.not_ready_instances.len(), 1);
        let (ok, reason, message) = verdict(&status);
        assert!(!ok && reason == "NotReady" && message.contains("1 of 2") && message.contains("NotSsmManaged 1"), "{message}");
    }

    #[test]
    fn the_full_capture_spec_asks_for_everything() {
        let spec = full_capture_spec("i-1", Some("210987654321"), "eu-west-1");
        assert!(spec.steps.memory.enabled && spec.steps.volatile.enabled && spec.steps.disk.enabled && spec.steps.isolation.enabled);
        assert!(spec.steps.isolation.credentials.is_some());
        assert_eq!(spec.target.account_id.as_deref(), Some("210987654321"));
    }
}
