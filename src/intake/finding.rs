//! Reading an EventBridge event (the body of one SQS message) into the findings it carries, each naming the
//! instances it is about. Pure.
//!
//! The shapes are AWS's documented ones: a GuardDuty finding event (`detail` is the finding), and Security Hub
//! custom-action and imported-findings events (`detail.findings` is a list of ASFF findings).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::{FindingSourceKind, SeverityLabel};

/// One finding about one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub source: FindingSourceKind,
    pub id: String,
    pub type_: String,
    /// Every type the finding carries (GuardDuty: one; ASFF: Types).
    pub types: Vec<String>,
    pub severity: Severity,
    pub account_id: String,
    pub region: String,
    pub instance_id: String,
    /// The instance's tags as the finding reports them.
    pub tags: BTreeMap<String, String>,
    /// The Security Hub custom action, for a custom-action event.
    pub action_arn: Option<String>,
    /// The finding as the event carried it.
    pub raw: Value,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Severity {
    /// GuardDuty's 1.0 to 10.0.
    Score(f64),
    /// Security Hub's label.
    Label(SeverityLabel),
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Severity::Score(s) => write!(f, "{s}"),
            Severity::Label(l) => write!(f, "{}", serde_json::to_value(l).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()),
        }
    }
}

/// What one event carried.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub detail_type: String,
    /// One entry per finding and instance.
    pub findings: Vec<Finding>,
    /// Findings in the event that name no EC2 instance (an S3 or IAM finding, say), by ID: not capturable.
    pub without_instance: Vec<String>,
}

/// Why a message is not an event this intake reads.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("the message is not JSON: {0}")]
    NotJson(String),
    #[error("the event has no {0}")]
    Missing(&'static str),
    #[error("events of source {event_source:?} and detail-type {detail_type:?} are not findings this intake reads")]
    Unsupported { event_source: String, detail_type: String },
}

const GUARDDUTY_FINDING: &str = "GuardDuty Finding";
const SECURITY_HUB_CUSTOM_ACTION: &str = "Security Hub Findings - Custom Action";
const SECURITY_HUB_IMPORTED: &str = "Security Hub Findings - Imported";

pub fn parse(body: &str) -> Result<Event, ParseError> {
    let event: Value = serde_json::from_str(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let text = |v: &Value, key: &'static str| v.get(key).and_then(Value::as_str).map(str::to_string).ok_or(ParseError::Missing(key));
    let source = text(&event, "source")?;
    let detail_type = text(&event, "detail-type")?;
    let id = text(&event, "id")?;
    let detail = event.get("detail").ok_or(ParseError::Missing("detail"))?;
    let mut parsed = Event { id, detail_type: detail_type.clone(), findings: Vec::new(), without_instance: Vec::new() };
    match (source.as_str(), detail_type.as_str()) {
        ("aws.guardduty", GUARDDUTY_FINDING) => guardduty(detail, &mut parsed)?,
        ("aws.securityhub", SECURITY_HUB_CUSTOM_ACTION) => {
            let action = event.get("resources").and_then(Value::as_array).and_then(|r| r.first()).and_then(Value::as_str).map(str::to_string);
            security_hub(detail, FindingSourceKind::SecurityHubCustomAction, action, &mut parsed)?
        }
        ("aws.securityhub", SECURITY_HUB_IMPORTED) => security_hub(detail, FindingSourceKind::SecurityHubFinding, None, &mut parsed)?,
        _ => return Err(ParseError::Unsupported { event_source: source, detail_type }),
    }
    Ok(parsed)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, key| v.get(key))?.as_str()
}

/// A GuardDuty finding names an instance in resource.instanceDetails: for EC2 findings, and for Runtime
/// Monitoring findings on EKS nodes and EC2 instances alike (the node's instance).
fn guardduty(detail: &Value, event: &mut Event) -> Result<(), ParseError> {
    let id = str_at(detail, &["id"]).ok_or(ParseError::Missing("detail.id"))?.to_string();
    let type_ = str_at(detail, &["type"]).ok_or(ParseError::Missing("detail.type"))?.to_string();
    let severity = detail.get("severity").and_then(Value::as_f64).ok_or(ParseError::Missing("detail.severity"))?;
    let account_id = str_at(detail, &["accountId"]).ok_or(ParseError::Missing("detail.accountId"))?.to_string();
    let region = str_at(detail, &["region"]).ok_or(ParseError::Missing("detail.region"))?.to_string();
    let details = detail.pointer("/resource/instanceDetails");
    let Some(instance_id) = details.and_then(|d| d.get("instanceId")).and_then(Value::as_str).filter(|i| i.starts_with("i-")) else {
        event.without_instance.push(id);
        return Ok(());
    };
    let tags = details
        .and_then(|d| d.get("tags"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| Some((t.get("key")?.as_str()?.to_string(), t.get("value")?.as_str().unwrap_or_default().to_string())))
        .collect();
    event.findings.push(Finding {
        source: FindingSourceKind::GuardDuty,
        id,
        types: vec![type_.clone()],
        type_,
        severity: Severity::Score(severity),
        account_id,
        region,
        instance_id: instance_id.to_string(),
        tags,
        action_arn: None,
        raw: detail.clone(),
    });
    Ok(())
}

/// ASFF findings name instances as resources of type AwsEc2Instance whose Id is the instance's ARN
/// (arn:aws:ec2:REGION:ACCOUNT:instance/i-...). One finding can name several.
fn security_hub(detail: &Value, source: FindingSourceKind, action_arn: Option<String>, event: &mut Event) -> Result<(), ParseError> {
    let findings = detail.get("findings").and_then(Value::as_array).ok_or(ParseError::Missing("detail.findings"))?;
    for finding in findings {
        let id = str_at(finding, &["Id"]).ok_or(ParseError::Missing("detail.findings[].Id"))?.to_string();
        let types: Vec<String> = finding.get("Types").and_then(Value::as_array).into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string)).collect();
        let label = finding
            .pointer("/Severity/Label")
            .and_then(|l| serde_json::from_value::<SeverityLabel>(l.clone()).ok())
            .or_else(|| finding.pointer("/Severity/Normalized").and_then(Value::as_f64).map(label_of_normalized))
            .ok_or(ParseError::Missing("detail.findings[].Severity.Label"))?;
        let account = str_at(finding, &["AwsAccountId"]).ok_or(ParseError::Missing("detail.findings[].AwsAccountId"))?;
        let mut named = false;
        for resource in finding.get("Resources").and_then(Value::as_array).into_iter().flatten() {
            if str_at(resource, &["Type"]) != Some("AwsEc2Instance") {
                continue;
            }
            let Some(arn) = str_at(resource, &["Id"]).and_then(InstanceArn::parse) else { continue };
            named = true;
            let tags = resource
                .get("Tags")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            event.findings.push(Finding {
                source,
                id: id.clone(),
                type_: types.first().cloned().unwrap_or_default(),
                types: types.clone(),
                severity: Severity::Label(label),
                account_id: arn.account.unwrap_or_else(|| account.to_string()),
                region: arn.region.or_else(|| str_at(resource, &["Region"]).map(str::to_string)).or_else(|| str_at(finding, &["Region"]).map(str::to_string)).unwrap_or_default(),
                instance_id: arn.instance_id,
                tags,
                action_arn: action_arn.clone(),
                raw: finding.clone(),
            });
        }
        if !named {
            event.without_instance.push(id);
        }
    }
    Ok(())
}

/// Security Hub's mapping of Normalized (0 to 100) to a label, for a finding that carries only the number.
fn label_of_normalized(n: f64) -> SeverityLabel {
    match n {
        n if n >= 90.0 => SeverityLabel::Critical,
        n if n >= 70.0 => SeverityLabel::High,
        n if n >= 40.0 => SeverityLabel::Medium,
        n if n >= 1.0 => SeverityLabel::Low,
        _ => SeverityLabel::Informational,
    }
}

struct InstanceArn {
    region: Option<String>,
    account: Option<String>,
    instance_id: String,
}

impl InstanceArn {
    fn parse(arn: &str) -> Option<Self> {
        // arn:PARTITION:ec2:REGION:ACCOUNT:instance/ID
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [_, _, "ec2", region, account, resource] = parts.as_slice() else { return None };
        let instance_id = resource.strip_prefix("instance/").filter(|i| i.starts_with("i-"))?;
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Some(InstanceArn { region: some(region), account: some(account), instance_id: instance_id.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn guardduty_event(severity: f64, instance: Option<&str>) -> String {
        let mut resource = json!({"resourceType": "Instance"});
        if let Some(i) = instance {
            resource["instanceDetails"] = json!({"instanceId": i, "tags": [{"key": "Environment", "value": "production"}]});
        }
        json!({
            "version": "0", "id": "ev-1", "detail-type": "GuardDuty Finding", "source": "aws.guardduty",
            "account": "123456789012", "region": "us-east-1", "resources": [],
            "detail": {"id": "f1", "type": "Backdoor:EC2/C&CActivity.B!DNS", "severity": severity, "accountId": "123456789012", "region": "us-east-1", "resource": resource}
        })
        .to_string()
    }

    #[test]
    fn a_guardduty_finding_names_its_instance_type_severity_and_tags() {
        let event = parse(&guardduty_event(8.0, Some("i-0abc"))).unwrap();
        let [f] = event.findings.as_slice() else { panic!("one finding: {event:?}") };
        assert_eq!((f.instance_id.as_str(), f.type_.as_str(), f.severity, f.account_id.as_str()), ("i-0abc", "Backdoor:EC2/C&CActivity.B!DNS", Severity::Score(8.0), "123456789012"));
        assert_eq!(f.tags.get("Environment").map(String::as_str), Some("production"));
    }

    #[test]
    fn a_finding_about_no_instance_is_listed_apart() {
        let event = parse(&guardduty_event(8.0, None)).unwrap();
        assert!(event.findings.is_empty());
        assert_eq!(event.without_instance, ["f1"]);
    }

    #[test]
    fn security_hub_findings_name_each_instance_resource() {
        let body = json!({
            "id": "ev-2", "detail-type": "Security Hub Findings - Custom Action", "source": "aws.securityhub",
            "resources": ["arn:aws:securityhub:eu-west-1:111122223333:action/custom/ForensicCapture"],
            "detail": {"findings": [{
                "Id": "arn:aws:securityhub:eu-west-1:111122223333:finding/x", "AwsAccountId": "111122223333", "Types": ["TTPs/Command and Control"],
                "Severity": {"Normalized": 40},
                "Resources": [
                    {"Type": "AwsEc2Instance", "Id": "arn:aws:ec2:eu-west-1:111122223333:instance/i-1", "Tags": {"team": "web"}},
                    {"Type": "AwsS3Bucket", "Id": "arn:aws:s3:::b"},
                    {"Type": "AwsEc2Instance", "Id": "arn:aws:ec2:eu-west-1:111122223333:instance/i-2"}
                ]
            }]}
        })
        .to_string();
        let event = parse(&body).unwrap();
        let instances: Vec<&str> = event.findings.iter().map(|f| f.instance_id.as_str()).collect();
        assert_eq!(instances, ["i-1", "i-2"]);
        let f = &event.findings[0];
        assert_eq!((f.region.as_str(), f.severity, f.action_arn.as_deref()), ("eu-west-1", Severity::Label(SeverityLabel::Medium), Some("arn:aws:securityhub:eu-west-1:111122223333:action/custom/ForensicCapture")));
        assert_eq!(f.tags.get("team").map(String::as_str), Some("web"));
    }

    /// The documented shapes the suite sends through EventBridge (tests/fixtures/findings/), filled in.
    fn fixture(text: &str) -> String {
        text.replace("{{INSTANCE_ID}}", "i-0abc")
            .replace("{{ACCOUNT_ID}}", "123456789012")
            .replace("{{REGION}}", "eu-west-1")
            .replace("{{FINDING_ID}}", "f-1")
            .replace("{{SEVERITY}}", "8")
            .replace("{{EVENT_ID}}", "ev-1")
    }

    #[test]
    fn every_documented_event_shape_names_its_instance() {
        let cases = [
            (include_str!("../../tests/fixtures/findings/guardduty-ec2.json"), FindingSourceKind::GuardDuty),
            (include_str!("../../tests/fixtures/findings/guardduty-eks-runtime.json"), FindingSourceKind::GuardDuty),
            (include_str!("../../tests/fixtures/findings/securityhub-custom-action.json"), FindingSourceKind::SecurityHubCustomAction),
            (include_str!("../../tests/fixtures/findings/securityhub-imported.json"), FindingSourceKind::SecurityHubFinding),
        ];
        for (text, source) in cases {
            let event = parse(&fixture(text)).unwrap_or_else(|e| panic!("{e}: {text}"));
            let [f] = event.findings.as_slice() else { panic!("one finding about one instance: {event:?}") };
            assert_eq!((f.source, f.instance_id.as_str(), f.account_id.as_str(), f.region.as_str(), f.id.as_str()), (source, "i-0abc", "123456789012", "eu-west-1", "f-1"));
            assert!(!f.type_.is_empty(), "{f:?}");
        }
    }

    #[test]
    fn other_messages_are_refused_with_what_is_wrong() {
        assert!(matches!(parse("not json"), Err(ParseError::NotJson(_))));
        assert_eq!(parse(r#"{"source": "aws.guardduty"}"#), Err(ParseError::Missing("detail-type")));
        assert!(matches!(parse(r#"{"id": "1", "source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": {}}"#), Err(ParseError::Unsupported { .. })));
        assert_eq!(parse(r#"{"id": "1", "source": "aws.guardduty", "detail-type": "GuardDuty Finding", "detail": {"id": "f"}}"#), Err(ParseError::Missing("detail.type")));
    }
}
