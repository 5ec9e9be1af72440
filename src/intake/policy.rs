//! Which policies select a finding, whether a selected finding creates a capture, and the capture it creates.
//! Pure: the intake (controller/intake.rs) reads the policies and the existing captures and does the writes.

use std::collections::BTreeMap;

use kube::{ResourceExt, api::ObjectMeta};
use sha2::{Digest, Sha256};

use super::finding::{Finding, Severity};
use crate::api::{CapturePolicy, CapturePolicySpec, FindingSourceKind, FindingTrigger, ForensicCapture, ForensicCaptureSpec, PolicyMode, Target};

/// Labels on every capture a policy creates (selectable: `kubectl get fc -l forensic-capture.dev/policy=NAME`).
pub const POLICY_LABEL: &str = "forensic-capture.dev/policy";
pub const INSTANCE_LABEL: &str = "forensic-capture.dev/instance-id";
pub const SOURCE_LABEL: &str = "forensic-capture.dev/finding-source";
pub const ACCOUNT_LABEL: &str = "forensic-capture.dev/account-id";
pub const REGION_LABEL: &str = "forensic-capture.dev/region";
/// Annotations: values that do not fit a label (an ASFF finding ID is an ARN; a type has `:` and `/`).
pub const FINDING_ID_ANNOTATION: &str = "forensic-capture.dev/finding-id";
pub const FINDING_TYPE_ANNOTATION: &str = "forensic-capture.dev/finding-type";
pub const SEVERITY_ANNOTATION: &str = "forensic-capture.dev/finding-severity";

/// The finding as recorded in spec.trigger is cut here: a ForensicCapture must stay well inside etcd's object
/// size limit, and an ASFF finding can carry large product fields.
const FINDING_RECORD_LIMIT: usize = 32 * 1024;

/// `*` matches any run of characters (none too); everything else matches itself.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

fn any_matches(patterns: &[String], types: &[String]) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| types.iter().any(|t| wildcard_match(p, t)))
}

/// Whether the policy's sources and filters select the finding.
pub fn selects(policy: &CapturePolicySpec, finding: &Finding) -> bool {
    let sources = &policy.sources;
    let by_source = match (finding.source, finding.severity) {
        (FindingSourceKind::GuardDuty, Severity::Score(score)) => {
            sources.guard_duty.as_ref().is_some_and(|gd| score >= gd.min_severity && any_matches(&gd.finding_types, &finding.types))
        }
        (FindingSourceKind::SecurityHubCustomAction, _) => {
            finding.action_arn.as_ref().is_some_and(|arn| sources.security_hub_custom_actions.iter().any(|a| a == arn))
        }
        (FindingSourceKind::SecurityHubFinding, Severity::Label(label)) => {
            sources.security_hub_findings.as_ref().is_some_and(|sh| label >= sh.min_severity_label && any_matches(&sh.types, &finding.types))
        }
        _ => false,
    };
    by_source
        && (policy.accounts.is_empty() || policy.accounts.contains(&finding.account_id))
        && (policy.regions.is_empty() || policy.regions.contains(&finding.region))
        && policy.instance_tags.iter().all(|(k, v)| finding.tags.get(k) == Some(v))
}

/// The capture's name, from the finding and the instance only: the same finding delivered again (SQS delivers
/// at least once; a restart redelivers what was not deleted) names the capture that already exists.
pub fn capture_name(finding: &Finding) -> String {
    let digest = Sha256::digest(format!("{}\n{}\n{}", finding.source.name(), finding.id, finding.instance_id));
    format!("finding-{}-{}", finding.instance_id.to_ascii_lowercase(), &hex::encode(digest)[..12])
}

/// `PREFIX-ID`, with the finding ID's characters limited to what a caseId allows (an ASFF ID is an ARN: its
/// last segment is kept) and cut to 64 characters.
pub fn case_id(prefix: &str, finding_id: &str) -> String {
    let tail = finding_id.rsplit(['/', ':']).next().unwrap_or(finding_id);
    let clean: String = tail.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' }).collect();
    let mut id = format!("{prefix}-{clean}");
    id.truncate(64);
    id.trim_end_matches(['-', '.', '_']).to_string()
}

/// What the existing captures say about a selected finding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// A capture with this finding's name exists.
    pub already_exists: bool,
    /// The newest capture of this instance created by a policy in the namespace within the de-duplication
    /// window, if any.
    pub recent_for_instance: Option<String>,
    /// How many captures this policy created in the last hour.
    pub created_last_hour: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Create,
    /// The same finding's capture exists.
    AlreadyCaptured,
    /// The instance was captured within the window (by another finding).
    Duplicate { of: String },
    RateLimited { created_last_hour: usize },
}

pub fn decide(policy: &CapturePolicySpec, history: &History) -> Decision {
    if history.already_exists {
        return Decision::AlreadyCaptured;
    }
    if let Some(of) = &history.recent_for_instance {
        return Decision::Duplicate { of: of.clone() };
    }
    if history.created_last_hour >= policy.max_captures_per_hour as usize {
        return Decision::RateLimited { created_last_hour: history.created_last_hour };
    }
    Decision::Create
}

/// Ids of the delivery, recorded with the trigger.
pub struct Delivery<'a> {
    pub event_id: &'a str,
    pub message_id: &'a str,
}

/// The capture a policy creates for a finding. `own_account` is the controller's account: an instance there
/// is captured with the controller's own credentials, one elsewhere through the target-account role. No owner
/// reference to the policy: deleting a policy must never delete the evidence records it created.
pub fn capture(policy: &CapturePolicy, finding: &Finding, delivery: &Delivery<'_>, own_account: Option<&str>) -> ForensicCapture {
    let template = &policy.spec.template;
    let policy_name = policy.name_any();
    let namespace = policy.namespace().unwrap_or_default();
    let mut recorded = serde_json::to_string(&finding.raw).unwrap_or_default();
    let truncated = recorded.len() > FINDING_RECORD_LIMIT;
    if truncated {
        let mut end = FINDING_RECORD_LIMIT;
        while !recorded.is_char_boundary(end) {
            end -= 1;
        }
        recorded.truncate(end);
    }
    let trigger = FindingTrigger {
        policy: policy_name.clone(),
        source: finding.source,
        finding_id: finding.id.clone(),
        finding_type: finding.type_.clone(),
        severity: finding.severity.to_string(),
        account_id: finding.account_id.clone(),
        region: finding.region.clone(),
        action_arn: finding.action_arn.clone(),
        event_id: delivery.event_id.to_string(),
        message_id: delivery.message_id.to_string(),
        finding: recorded,
        finding_truncated: truncated,
    };
    let labels = BTreeMap::from([
        (POLICY_LABEL.to_string(), policy_name.clone()),
        (INSTANCE_LABEL.to_string(), finding.instance_id.clone()),
        (SOURCE_LABEL.to_string(), finding.source.name().to_string()),
        (ACCOUNT_LABEL.to_string(), finding.account_id.clone()),
        (REGION_LABEL.to_string(), finding.region.clone()),
    ]);
    let annotations = BTreeMap::from([
        (FINDING_ID_ANNOTATION.to_string(), finding.id.clone()),
        (FINDING_TYPE_ANNOTATION.to_string(), finding.type_.clone()),
        (SEVERITY_ANNOTATION.to_string(), finding.severity.to_string()),
        (crate::manifest::REQUESTED_BY_ANNOTATION.to_string(), format!("CapturePolicy {namespace}/{policy_name}")),
    ]);
    let other_account = own_account.is_none_or(|own| own != finding.account_id);
    let spec = ForensicCaptureSpec {
        case_id: case_id(&template.case_id_prefix, &finding.id),
        target: Target {
            instance_id: Some(finding.instance_id.clone()),
            region: Some(finding.region.clone()).filter(|r| !r.is_empty()),
            account_id: other_account.then(|| finding.account_id.clone()),
            ..Target::default()
        },
        steps: template.steps.clone(),
        evidence: template.evidence.clone(),
        dry_run: template.dry_run,
        requires_approval: policy.spec.mode == PolicyMode::Approval,
        trigger: Some(trigger),
        // Findings name instances; pod targets are made by hand.
        pod: None,
    };
    ForensicCapture {
        metadata: ObjectMeta { name: Some(capture_name(finding)), namespace: Some(namespace), labels: Some(labels), annotations: Some(annotations), ..ObjectMeta::default() },
        spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SeverityLabel;

    fn policy(yaml: &str) -> CapturePolicy {
        let spec: CapturePolicySpec = serde_yaml::from_str(yaml).unwrap();
        let mut p = CapturePolicy::new("high", spec);
        p.metadata.namespace = Some("ir".into());
        p
    }

    fn finding(severity: f64, type_: &str) -> Finding {
        Finding {
            source: FindingSourceKind::GuardDuty,
            id: "5ab2d0f1a0c6e3b7e9f2c1d4a6b8c0e2".into(),
            type_: type_.into(),
            types: vec![type_.into()],
            severity: Severity::Score(severity),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            instance_id: "i-0abc".into(),
            tags: BTreeMap::from([("Environment".into(), "production".into())]),
            action_arn: None,
            raw: serde_json::json!({"id": "x"}),
        }
    }

    const GUARDDUTY: &str = "sources: {guardDuty: {findingTypes: ['Backdoor:EC2/*', '*:Runtime/*'], minSeverity: 7}}\nmode: Automatic\ntemplate: {}\n";

    #[test]
    fn wildcards_match_any_run_of_characters() {
        assert!(wildcard_match("Backdoor:EC2/*", "Backdoor:EC2/C&CActivity.B!DNS"));
        assert!(wildcard_match("*:Runtime/*", "Execution:Runtime/NewBinaryExecuted"));
        assert!(wildcard_match("a*b*c", "aXXbYYc") && wildcard_match("a*", "a") && wildcard_match("*", ""));
        assert!(!wildcard_match("a*b", "ab-c") && !wildcard_match("ab*ba", "aba") && !wildcard_match("Backdoor", "Backdoor:EC2/X"));
    }

    #[test]
    fn guardduty_sources_select_by_type_and_severity() {
        let p = policy(GUARDDUTY);
        assert!(selects(&p.spec, &finding(8.0, "Backdoor:EC2/C&CActivity.B!DNS")));
        assert!(selects(&p.spec, &finding(7.0, "Execution:Runtime/NewBinaryExecuted")), "the minimum is inclusive");
        assert!(!selects(&p.spec, &finding(6.9, "Backdoor:EC2/C&CActivity.B!DNS")), "below the minimum severity");
        assert!(!selects(&p.spec, &finding(8.0, "Recon:EC2/PortProbeUnprotectedPort")), "a type no pattern matches");
    }

    #[test]
    fn account_region_and_tag_filters_all_apply() {
        let f = finding(8.0, "Backdoor:EC2/X");
        assert!(selects(&policy(&format!("{GUARDDUTY}accounts: ['123456789012']\nregions: [us-east-1]\ninstanceTags: {{Environment: production}}\n")).spec, &f));
        assert!(!selects(&policy(&format!("{GUARDDUTY}accounts: ['210987654321']\n")).spec, &f));
        assert!(!selects(&policy(&format!("{GUARDDUTY}regions: [eu-west-1]\n")).spec, &f));
        assert!(!selects(&policy(&format!("{GUARDDUTY}instanceTags: {{Environment: staging}}\n")).spec, &f));
    }

    #[test]
    fn security_hub_sources_select_by_action_or_by_label_and_type() {
        let p = policy("sources: {securityHubCustomActions: ['arn:aws:securityhub:us-east-1:123456789012:action/custom/Capture'], securityHubFindings: {types: ['TTPs/*'], minSeverityLabel: HIGH}}\nmode: Approval\ntemplate: {}\n");
        let mut action = finding(0.0, "Software and Configuration Checks/X");
        action.source = FindingSourceKind::SecurityHubCustomAction;
        action.severity = Severity::Label(SeverityLabel::Low);
        action.action_arn = Some("arn:aws:securityhub:us-east-1:123456789012:action/custom/Capture".into());
        assert!(selects(&p.spec, &action), "a custom action selects whatever the severity");
        action.action_arn = Some("arn:aws:securityhub:us-east-1:123456789012:action/custom/Other".into());
        assert!(!selects(&p.spec, &action));
        let mut imported = finding(0.0, "TTPs/Command and Control");
        imported.source = FindingSourceKind::SecurityHubFinding;
        imported.severity = Severity::Label(SeverityLabel::Critical);
        assert!(selects(&p.spec, &imported));
        imported.severity = Severity::Label(SeverityLabel::Medium);
        assert!(!selects(&p.spec, &imported));
    }

    #[test]
    fn the_name_depends_on_the_finding_and_the_instance_only() {
        let a = finding(8.0, "Backdoor:EC2/X");
        let mut later = a.clone();
        later.severity = Severity::Score(9.0);
        assert_eq!(capture_name(&a), capture_name(&later), "a redelivery or an updated finding names the same capture");
        let mut other = a.clone();
        other.instance_id = "i-0def".into();
        assert_ne!(capture_name(&a), capture_name(&other));
        assert!(capture_name(&a).len() <= 63 && capture_name(&a).starts_with("finding-i-0abc-"));
    }

    #[test]
    fn case_ids_fit_the_capture_rules() {
        assert_eq!(case_id("gd", "5ab2d0f1"), "gd-5ab2d0f1");
        assert_eq!(case_id("sh", "arn:aws:securityhub:us-east-1:1:subscription/aws-foundational/v/1.0.0/EC2.19/finding/9f3c"), "sh-9f3c");
        let long = case_id("finding", &"a".repeat(100));
        assert_eq!(long.len(), 64);
        assert!(case_id("p", "x y!").chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)));
    }

    #[test]
    fn a_decision_prefers_the_existing_capture_then_the_window_then_the_rate() {
        let p = policy(GUARDDUTY);
        let fresh = History::default();
        assert_eq!(decide(&p.spec, &fresh), Decision::Create);
        assert_eq!(decide(&p.spec, &History { already_exists: true, recent_for_instance: Some("x".into()), created_last_hour: 99 }), Decision::AlreadyCaptured);
        assert_eq!(decide(&p.spec, &History { recent_for_instance: Some("x".into()), ..fresh.clone() }), Decision::Duplicate { of: "x".into() });
        assert_eq!(decide(&p.spec, &History { created_last_hour: 10, ..fresh }), Decision::RateLimited { created_last_hour: 10 });
    }

    #[test]
    fn the_capture_carries_the_template_the_trigger_and_its_labels() {
        let mut p = policy("sources: {guardDuty: {}}\nmode: Approval\ntemplate: {caseIdPrefix: gd, memory: {enabled: false}, isolation: {enabled: true}}\n");
        p.metadata.name = Some("high".into());
        let f = finding(8.0, "Backdoor:EC2/X");
        let capture = capture(&p, &f, &Delivery { event_id: "ev", message_id: "m" }, Some("123456789012"));
        assert_eq!(capture.metadata.namespace.as_deref(), Some("ir"));
        assert_eq!(capture.spec.case_id, "gd-5ab2d0f1a0c6e3b7e9f2c1d4a6b8c0e2");
        assert!(capture.spec.requires_approval && !capture.spec.steps.memory.enabled && capture.spec.steps.isolation.enabled);
        assert_eq!(capture.spec.target.account_id, None, "the controller's own account needs no role");
        assert_eq!(capture.labels().get(POLICY_LABEL).map(String::as_str), Some("high"));
        assert_eq!(capture.annotations().get(crate::manifest::REQUESTED_BY_ANNOTATION).map(String::as_str), Some("CapturePolicy ir/high"));
        let trigger = capture.spec.trigger.as_ref().unwrap();
        assert_eq!((trigger.finding_id.as_str(), trigger.severity.as_str(), trigger.message_id.as_str()), ("5ab2d0f1a0c6e3b7e9f2c1d4a6b8c0e2", "8", "m"));
        let elsewhere = super::capture(&p, &f, &Delivery { event_id: "ev", message_id: "m" }, Some("999999999999"));
        assert_eq!(elsewhere.spec.target.account_id.as_deref(), Some("123456789012"), "another account is reached through its role");
    }
}
