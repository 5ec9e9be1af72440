//! Readiness, the pure part: what a dry run's plan of a full capture says about whether an instance could be
//! captured now, and the counts a ForensicReadiness reports. The reads are the dry run's own
//! (controller/readiness.rs runs it), so readiness cannot call ready an instance a capture would skip.

use std::collections::BTreeMap;

use crate::api::{
    AccountReadiness, ActionVerdict, CapturePlan, ForensicCaptureSpec, ForensicReadinessStatus, InstanceReadiness, ReadinessCheck, ReadinessProblem, Reason,
    StepVerdict, TargetFacts,
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

/// The name of the account check of the controller's (or the target role's) IAM permissions.
pub const PERMISSIONS: &str = "Permissions";

/// One Allow statement of a policy document, as a simulation: its actions on its resources.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementSimulation {
    /// The statement's Sid (or its position, `Statement[N]`).
    pub statement: String,
    pub actions: Vec<String>,
    /// The statement's resources with their placeholders filled; empty for `*` (IAM's default).
    pub resources: Vec<String>,
}

/// The Allow statements of a policy document (one of iam/, where `${Name}` placeholders stand for deployment
/// values) as simulations, each placeholder filled from `values`. A statement with a placeholder `values` has
/// no value for is left out, returned with the placeholder: it is about something not configured (no signing
/// key, no presign role), so nothing needs it.
pub fn statement_simulations(document: &str, values: &BTreeMap<&str, String>) -> (Vec<StatementSimulation>, Vec<(String, String)>) {
    let document: serde_json::Value = serde_json::from_str(document).expect("the policies in iam/ are JSON (tests/iam_policy.rs)");
    let strings = |value: &serde_json::Value| -> Vec<String> {
        match value {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            _ => Vec::new(),
        }
    };
    let statements = match &document["Statement"] {
        serde_json::Value::Array(items) => items.clone(),
        single => vec![single.clone()],
    };
    let (mut simulations, mut left_out) = (Vec::new(), Vec::new());
    for (index, statement) in statements.iter().enumerate().filter(|(_, s)| s["Effect"] == "Allow") {
        let name = statement["Sid"].as_str().map(String::from).unwrap_or_else(|| format!("Statement[{index}]"));
        let mut resources = Vec::new();
        let mut unknown = None;
        for pattern in strings(&statement["Resource"]) {
            match fill(&pattern, values) {
                Ok(resource) => resources.push(resource),
                Err(placeholder) => unknown = unknown.or(Some(placeholder)),
            }
        }
        match unknown {
            Some(placeholder) => left_out.push((name, placeholder)),
            None => {
                if resources == ["*"] {
                    resources.clear();
                }
                simulations.push(StatementSimulation { statement: name, actions: strings(&statement["Action"]), resources });
            }
        }
    }
    (simulations, left_out)
}

/// `pattern` with every `${Name}` replaced from `values`, or the first name it has no value for.
fn fill(pattern: &str, values: &BTreeMap<&str, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(start) = rest.find("${") {
        let end = rest[start..].find('}').map(|e| start + e).unwrap_or(rest.len() - 1);
        let name = &rest[start + 2..end];
        out.push_str(&rest[..start]);
        out.push_str(values.get(name).ok_or_else(|| name.to_string())?);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The IAM principal SimulatePrincipalPolicy takes for a caller (sts:GetCallerIdentity's ARN): an assumed
/// role's session is simulated as its role, a user as itself; anything else (the root user, a federated user)
/// cannot be simulated.
pub fn simulation_principal(caller_arn: &str) -> Option<String> {
    let mut fields = caller_arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(_region), Some(account), Some(resource)) =
        (fields.next(), fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return None;
    };
    match service {
        "sts" => {
            let role = resource.strip_prefix("assumed-role/")?.split('/').next().filter(|r| !r.is_empty())?;
            Some(format!("arn:{partition}:iam::{account}:role/{role}"))
        }
        "iam" if resource.starts_with("user/") => Some(caller_arn.to_string()),
        _ => None,
    }
}

/// An action found not allowed, and what said so: the simulation's decision (`implicitDeny`, `explicitDeny`,
/// with the resource when it is not `*`) or the error a dry run was refused with.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    pub action: String,
    pub decision: String,
}

/// What a Permissions check found, for its verdict.
#[derive(Debug, Clone, Default)]
pub struct PermissionFindings {
    /// Who was checked: the controller's user or role, or the target role.
    pub principal: String,
    /// The policy the actions come from (`iam/controller-policy.json`).
    pub policy: String,
    /// How: `iam:SimulatePrincipalPolicy`, or `EC2 DryRun, as iam:SimulatePrincipalPolicy could not be used (...)`.
    pub method: String,
    pub allowed: Vec<String>,
    pub denied: Vec<Denial>,
    /// What could not be checked, and why (statements about what is not configured, actions with no dry run).
    pub unchecked: Vec<String>,
}

/// The Permissions check from what was found: not ok with PermissionsMissing when any action is denied, with
/// PermissionsUnverified when nothing at all could be checked.
pub fn permissions_check(found: &PermissionFindings) -> ReadinessCheck {
    let checked = found.allowed.len() + found.denied.len();
    let unchecked = if found.unchecked.is_empty() { String::new() } else { format!("; not checked: {}", found.unchecked.join("; ")) };
    if !found.denied.is_empty() {
        let denied: Vec<String> = found.denied.iter().map(|d| format!("{} ({})", d.action, d.decision)).collect();
        let message = format!(
            "{} is not allowed {} of the {checked} action(s) of {} checked, by {}: {}{unchecked}",
            found.principal,
            found.denied.len(),
            found.policy,
            found.method,
            denied.join(", ")
        );
        return ReadinessCheck { name: PERMISSIONS.into(), ok: false, reason: Some(Reason::PermissionsMissing.as_str().into()), message };
    }
    if checked == 0 {
        let message = format!("the permissions of {} ({}) could not be checked: {}{unchecked}", found.principal, found.policy, found.method);
        return ReadinessCheck { name: PERMISSIONS.into(), ok: false, reason: Some(Reason::PermissionsUnverified.as_str().into()), message };
    }
    let message = format!("{} is allowed all {checked} action(s) of {} checked, by {}{unchecked}", found.principal, found.policy, found.method);
    ReadinessCheck { name: PERMISSIONS.into(), ok: true, reason: None, message }
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

    const POLICY: &str = r#"{"Version": "2012-10-17", "Statement": [
        {"Sid": "Anywhere", "Effect": "Allow", "Action": ["ec2:CreateSnapshots", "ec2:CreateTags"], "Resource": "*"},
        {"Sid": "Objects", "Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::${EvidenceBucket}/${EvidencePrefix}/*"},
        {"Effect": "Allow", "Action": "kms:Sign", "Resource": "${SigningKeyArn}"},
        {"Sid": "NotThis", "Effect": "Deny", "Action": "ec2:TerminateInstances", "Resource": "*"}
    ]}"#;

    #[test]
    fn each_allow_statement_is_simulated_on_its_resources_with_the_placeholders_filled() {
        let values: BTreeMap<&str, String> = [("EvidenceBucket", "acme".to_string()), ("EvidencePrefix", "evidence".to_string())].into();
        let (simulations, left_out) = statement_simulations(POLICY, &values);
        assert_eq!(
            simulations,
            [
                StatementSimulation { statement: "Anywhere".into(), actions: vec!["ec2:CreateSnapshots".into(), "ec2:CreateTags".into()], resources: vec![] },
                StatementSimulation { statement: "Objects".into(), actions: vec!["s3:PutObject".into()], resources: vec!["arn:aws:s3:::acme/evidence/*".into()] },
            ],
            "`*` is left to IAM's default; Deny statements are not asked about"
        );
        assert_eq!(left_out, [("Statement[2]".to_string(), "SigningKeyArn".to_string())], "no signing key configured: nothing needs kms:Sign");
    }

    #[test]
    fn the_shipped_policies_fill_completely_from_the_values_readiness_gives() {
        let own: BTreeMap<&str, String> = ["AccountId", "EvidenceBucket", "EvidencePrefix", "PresignRoleArn", "TargetRoleName", "ForensicRoleName", "SigningKeyArn", "ControllerRoleArn"]
            .into_iter()
            .map(|n| (n, format!("v-{n}")))
            .collect();
        let (simulations, left_out) = statement_simulations(include_str!("../iam/controller-policy.json"), &own);
        assert!(left_out.is_empty(), "{left_out:?}");
        let actions: Vec<&str> = simulations.iter().flat_map(|s| s.actions.iter().map(String::as_str)).collect();
        for needed in ["ssm:SendCommand", "ec2:CreateSnapshots", "s3:PutObject", "iam:SimulatePrincipalPolicy"] {
            assert!(actions.contains(&needed), "{needed} in {actions:?}");
        }
        let target: BTreeMap<&str, String> = [("AccountId", "210987654321".to_string()), ("TargetRoleName", "ForensicCaptureTarget".to_string())].into();
        let (simulations, left_out) = statement_simulations(include_str!("../iam/target-role-policy.json"), &target);
        assert!(left_out.is_empty(), "{left_out:?}");
        let own_check = simulations.iter().find(|s| s.actions == ["iam:SimulatePrincipalPolicy"]).expect("the target role may simulate itself");
        assert_eq!(own_check.resources, ["arn:aws:iam::210987654321:role/ForensicCaptureTarget"]);
    }

    #[test]
    fn a_role_session_is_simulated_as_its_role_and_a_user_as_itself() {
        assert_eq!(
            simulation_principal("arn:aws:sts::111122223333:assumed-role/forensic-capture/botocore-session-1").as_deref(),
            Some("arn:aws:iam::111122223333:role/forensic-capture")
        );
        assert_eq!(
            simulation_principal("arn:aws-us-gov:sts::111122223333:assumed-role/fc/s").as_deref(),
            Some("arn:aws-us-gov:iam::111122223333:role/fc")
        );
        assert_eq!(simulation_principal("arn:aws:iam::111122223333:user/ops/fc").as_deref(), Some("arn:aws:iam::111122223333:user/ops/fc"));
        assert_eq!(simulation_principal("arn:aws:iam::111122223333:root"), None, "the root user has no policies to simulate");
        assert_eq!(simulation_principal("arn:aws:sts::111122223333:federated-user/alice"), None);
        assert_eq!(simulation_principal("arn:aws:sts::123456789012:user/moto"), None, "what moto answers for keys it does not know");
    }

    #[test]
    fn a_denied_action_fails_the_check_naming_it_and_the_method() {
        let mut found = PermissionFindings {
            principal: "arn:aws:iam::111122223333:role/fc".into(),
            policy: "iam/controller-policy.json".into(),
            method: "iam:SimulatePrincipalPolicy".into(),
            allowed: vec!["ec2:CreateSnapshots".into(), "ec2:CreateTags".into()],
            denied: vec![Denial { action: "ssm:SendCommand".into(), decision: "implicitDeny".into() }],
            unchecked: vec!["SignManifests (no SigningKeyArn configured)".into()],
        };
        let check = permissions_check(&found);
        assert!(!check.ok);
        assert_eq!(check.reason.as_deref(), Some("PermissionsMissing"));
        assert!(check.message.contains("ssm:SendCommand (implicitDeny)") && check.message.contains("by iam:SimulatePrincipalPolicy"), "{}", check.message);
        assert!(check.message.contains("1 of the 3 action(s)") && check.message.contains("not checked: SignManifests"), "{}", check.message);

        found.denied.clear();
        let check = permissions_check(&found);
        assert!(check.ok && check.reason.is_none(), "{check:?}");
        assert!(check.message.contains("allowed all 2 action(s)"), "{}", check.message);

        found.allowed.clear();
        found.method = "EC2 DryRun, as iam:SimulatePrincipalPolicy could not be used (no IAM identity)".into();
        let check = permissions_check(&found);
        assert_eq!((check.ok, check.reason.as_deref()), (false, Some("PermissionsUnverified")), "nothing checked is not a pass: {}", check.message);
    }

    #[test]
    fn the_full_capture_spec_asks_for_everything() {
        let spec = full_capture_spec("i-1", Some("210987654321"), "eu-west-1");
        assert!(spec.steps.memory.enabled && spec.steps.volatile.enabled && spec.steps.disk.enabled && spec.steps.isolation.enabled);
        assert!(spec.steps.isolation.credentials.is_some());
        assert_eq!(spec.target.account_id.as_deref(), Some("210987654321"));
    }
}
