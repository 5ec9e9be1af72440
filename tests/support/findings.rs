//! The finding path on the stack: an SQS queue with a dead-letter queue, EventBridge rules in moto built from
//! the shipped CloudFormation template's own patterns (deploy/finding-intake/cloudformation.yaml), and events
//! in the documented shapes (tests/fixtures/findings/) published to the default bus.
//!
//! GuardDuty and Security Hub publish their events to the default bus themselves; here the test publishes them
//! with PutEvents, which moto accepts for `aws.*` sources (AWS refuses that to anyone but the service). The rule
//! matching and the delivery to SQS are moto's.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{Value, json};

use super::{repo_root, stack, unique};

pub const ACCOUNT_ID: &str = "123456789012";

/// A queue as the template makes it (with a short visibility timeout, so redeliveries come within a test).
pub struct FindingQueue {
    pub url: String,
    pub arn: String,
    pub dead_letter_url: String,
    pub sqs: aws_sdk_sqs::Client,
}

impl FindingQueue {
    pub async fn new(visibility_seconds: u32, max_receive_count: u32) -> Self {
        let sqs = aws_sdk_sqs::Client::new(&stack().aws().await);
        let name = unique("findings");
        let dlq = sqs.create_queue().queue_name(format!("{name}-dlq")).send().await.unwrap().queue_url.unwrap();
        let dlq_arn = Self::arn_of(&sqs, &dlq).await;
        let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count.to_string()}).to_string();
        let url = sqs
            .create_queue()
            .queue_name(&name)
            .attributes(QueueAttributeName::VisibilityTimeout, visibility_seconds.to_string())
            .attributes(QueueAttributeName::RedrivePolicy, redrive)
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let arn = Self::arn_of(&sqs, &url).await;
        FindingQueue { url, arn, dead_letter_url: dlq, sqs }
    }

    async fn arn_of(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
        let attributes = sqs.get_queue_attributes().queue_url(url).attribute_names(QueueAttributeName::QueueArn).send().await.unwrap();
        attributes.attributes().unwrap()[&QueueAttributeName::QueueArn].clone()
    }

    /// Messages in the queue, visible and in flight.
    pub async fn depth(&self, url: &str) -> (u64, u64) {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let a = attributes.attributes().unwrap();
        let n = |k: QueueAttributeName| a.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
        (n(QueueAttributeName::ApproximateNumberOfMessages), n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
    }

    /// Waits until the finding queue holds nothing (every message deleted or moved to the dead-letter queue).
    pub async fn wait_empty(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let depth = self.depth(&self.url).await;
            if depth == (0, 0) {
                return;
            }
            assert!(Instant::now() < deadline, "the finding queue still holds (visible, in flight) {depth:?} after {timeout:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn send_raw(&self, body: &str) -> String {
        self.sqs.send_message().queue_url(&self.url).message_body(body).send().await.unwrap().message_id.unwrap()
    }
}

/// One EventBridge JSON call to moto (`AWSEvents.<operation>`).
pub async fn events(operation: &str, body: Value) -> Value {
    let stack = stack();
    let region = stack.region();
    let response = reqwest::Client::new()
        .post(stack.var("AWS_ENDPOINT_URL"))
        .header("X-Amz-Target", format!("AWSEvents.{operation}"))
        .header("Content-Type", "application/x-amz-json-1.1")
        // moto reads the account's Region from the credential scope; it does not check the signature here.
        .header("Authorization", format!("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261203/{region}/events/aws4_request, SignedHeaders=host, Signature=0"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "events:{operation}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// The shipped template's rule pattern, with its parameters filled in as CloudFormation would.
pub fn shipped_pattern(rule: &str, min_severity: &str, custom_action_arn: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join("deploy/finding-intake/cloudformation.yaml")).unwrap();
    let template: Value = serde_yaml::from_str(&text).expect("the template is plain YAML (long-form intrinsics)");
    let pattern = &template["Resources"][rule]["Properties"]["EventPattern"];
    match pattern.get("Fn::Sub").and_then(Value::as_str) {
        Some(sub) => serde_json::from_str(&sub.replace("${MinimumGuardDutySeverity}", min_severity)).expect("the pattern is JSON"),
        None => {
            let mut pattern = pattern.clone();
            if let Some(resources) = pattern.get_mut("resources") {
                *resources = json!([custom_action_arn]);
            }
            pattern
        }
    }
}

/// An event bus of the test's own with the template's rules on it, each sending to the queue. The services
/// publish to the default bus, which the template's rules watch; tests running at once would each get every
/// other test's findings there, so each has its own bus with the same rules.
pub struct FindingBus {
    pub name: String,
}

pub async fn install_rules(prefix: &str, queue: &FindingQueue, custom_action_arn: &str) -> FindingBus {
    let bus = unique(prefix);
    events("CreateEventBus", json!({"Name": bus})).await;
    for rule in ["GuardDutyFindingsRule", "SecurityHubCustomActionRule", "SecurityHubImportedRule"] {
        let name = format!("{bus}-{rule}");
        let pattern = shipped_pattern(rule, "7", custom_action_arn);
        events("PutRule", json!({"Name": name, "EventBusName": bus, "EventPattern": pattern.to_string(), "State": "ENABLED"})).await;
        events("PutTargets", json!({"Rule": name, "EventBusName": bus, "Targets": [{"Id": "findings", "Arn": queue.arn}]})).await;
    }
    FindingBus { name: bus }
}

/// A fixture with its placeholders filled.
pub fn fixture(file: &str, instance_id: &str, finding_id: &str, severity: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/findings").join(file)).unwrap();
    let filled = text
        .replace("{{INSTANCE_ID}}", instance_id)
        .replace("{{ACCOUNT_ID}}", ACCOUNT_ID)
        .replace("{{REGION}}", stack().region())
        .replace("{{FINDING_ID}}", finding_id)
        .replace("{{SEVERITY}}", severity)
        .replace("{{EVENT_ID}}", &uuid::Uuid::new_v4().to_string());
    serde_json::from_str(&filled).unwrap_or_else(|e| panic!("{file} filled is not JSON: {e}"))
}

/// Publishes an event as its service would (to the test's bus); returns the event ID EventBridge gave it.
pub async fn publish(bus: &FindingBus, event: &Value) -> String {
    let entry = json!({
        "EventBusName": bus.name,
        "Source": event["source"],
        "DetailType": event["detail-type"],
        "Resources": event["resources"],
        "Detail": event["detail"].to_string(),
    });
    let answer = events("PutEvents", json!({"Entries": [entry]})).await;
    assert_eq!(answer["FailedEntryCount"].as_u64().unwrap_or(0), 0, "PutEvents: {answer}");
    answer["Entries"][0]["EventId"].as_str().unwrap_or_default().to_string()
}

/// The event as EventBridge delivers it to a target, for sending straight to the queue (past the rules).
pub fn as_delivered(event: &Value) -> String {
    event.to_string()
}
