//! The finding intake: reads the SQS queue that EventBridge rules feed and creates the ForensicCaptures the
//! CapturePolicies ask for. Only the leader runs it (mod.rs).
//!
//! Delivery is at least once, and a message is deleted only after every capture it asks for exists: a
//! controller that dies in between leaves the message to come back after its visibility timeout, and the
//! capture's name, derived from the finding and the instance (intake/policy.rs), makes the second delivery
//! find the capture already there. A message that is not a finding event, or that no policy selects, is
//! counted, logged with its message ID and left alone, so the queue's redrive policy moves it to the
//! dead-letter queue after maxReceiveCount deliveries instead of it being retried forever or silently lost.

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use super::{Context, status::now};
use crate::{
    api::{CapturePolicy, CapturePolicyStatus, ForensicCapture},
    aws::{
        AwsError,
        sqs::{FindingQueue, QueueMessage},
    },
    intake::{
        finding::{self, Finding},
        policy::{self, Decision, Delivery, History, INSTANCE_LABEL, POLICY_LABEL},
    },
};

/// Long-poll wait of one ReceiveMessage (SQS's maximum).
const RECEIVE_WAIT: Duration = Duration::from_secs(20);
/// Pause after a failed receive or a failed message, so a lasting outage does not spin.
const AFTER_ERROR: Duration = Duration::from_secs(5);

/// Reads the queue until `shutdown` resolves. Does nothing when no queue is configured.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()>) {
    let Some(url) = ctx.config.finding_queue_url.clone() else { return };
    let observe = aws_sdk_sqs::config::SharedInterceptor::new(ctx.metrics.aws_observer("sqs"));
    let queue = FindingQueue::new(&ctx.base_aws, &url, Some(observe));
    let reading = async {
        let own_account = own_account(&ctx).await;
        tracing::info!(queue = %url, own_account = %own_account, "finding intake: reading the queue");
        loop {
            let messages = match queue.receive(RECEIVE_WAIT).await {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(queue = %url, %error, "finding intake: cannot receive; trying again");
                    tokio::time::sleep(AFTER_ERROR).await;
                    continue;
                }
            };
            for message in &messages {
                handle(&ctx, &queue, &own_account, message).await;
            }
        }
    };
    // A receive cut short by the shutdown loses nothing: what SQS handed out comes back after its
    // visibility timeout. A message being handled is finished first (its create and delete are short).
    tokio::select! {
        () = reading => {}
        () = shutdown => tracing::info!("finding intake: stopped"),
    }
}

/// The controller's own account: an instance there is captured with its own credentials, one in any other
/// account through that account's role. Asked until STS answers, since guessing wrong either way would fail
/// every capture.
async fn own_account(ctx: &Context) -> String {
    let sts = ctx.aws(&ctx.default_region()).store.sts;
    loop {
        match sts.get_caller_identity().send().await {
            Ok(identity) => return identity.account().unwrap_or_default().to_string(),
            Err(error) => {
                tracing::warn!(error = %AwsError::from_sdk("sts:GetCallerIdentity", error), "finding intake: cannot learn the controller's own account; trying again");
                tokio::time::sleep(AFTER_ERROR).await;
            }
        }
    }
}

async fn handle(ctx: &Context, queue: &FindingQueue, own_account: &str, message: &QueueMessage) {
    let id = message.id.as_str();
    let event = match finding::parse(&message.body) {
        Ok(event) => event,
        Err(error) => {
            ctx.metrics.finding("unparseable");
            tracing::warn!(message_id = id, receive_count = message.receive_count, %error, "finding intake: not a finding event; left for the queue's redrive policy");
            return;
        }
    };
    match create_captures(ctx, own_account, &event, message).await {
        Ok(0) => {
            ctx.metrics.finding("unmatched");
            tracing::info!(
                message_id = id,
                event_id = %event.id,
                findings = event.findings.len(),
                without_instance = ?event.without_instance,
                receive_count = message.receive_count,
                "finding intake: no CapturePolicy selects this event; left for the queue's redrive policy"
            );
        }
        Ok(_) => match queue.delete(message).await {
            Ok(()) => tracing::debug!(message_id = id, "finding intake: message deleted"),
            // The capture exists; the message comes back and finds it there.
            Err(error) => tracing::warn!(message_id = id, %error, "finding intake: cannot delete the message; its capture exists, so a redelivery creates nothing"),
        },
        Err(error) => {
            ctx.metrics.finding("error");
            tracing::warn!(message_id = id, %error, "finding intake: cannot create the captures; the message comes back after its visibility timeout");
            tokio::time::sleep(AFTER_ERROR).await;
        }
    }
}

/// Creates every capture the policies ask for; returns how many (finding, policy) pairs were selected.
async fn create_captures(ctx: &Context, own_account: &str, event: &finding::Event, message: &QueueMessage) -> Result<usize, kube::Error> {
    let policies = super::scoped_api::<CapturePolicy>(ctx).list(&ListParams::default()).await?.items;
    let delivery = Delivery { event_id: &event.id, message_id: &message.id };
    let mut selected = 0;
    for policy in &policies {
        let mut tally = Tally::default();
        for finding in event.findings.iter().filter(|f| policy::selects(&policy.spec, f)) {
            selected += 1;
            let decision = decide(ctx, policy, finding).await?;
            let name = policy::capture_name(finding);
            let decision = match decision {
                Decision::Create => create(ctx, policy, finding, &delivery, own_account).await?,
                other => other,
            };
            log_decision(policy, finding, &name, &decision, &message.id);
            tally.add(&decision, &name, finding);
        }
        if tally.matched > 0 {
            // The counts are a report; the captures are what matters, so a count that cannot be written does
            // not hold the message back.
            if let Err(error) = record(ctx, policy, &tally).await {
                tracing::warn!(policy = %policy.name_any(), %error, "finding intake: cannot update the CapturePolicy's status");
            }
        }
    }
    Ok(selected)
}

async fn decide(ctx: &Context, policy: &CapturePolicy, finding: &Finding) -> Result<Decision, kube::Error> {
    let namespace = policy.namespace().unwrap_or_default();
    let captures: Api<ForensicCapture> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = policy::capture_name(finding);
    let already_exists = captures.get_metadata_opt(&name).await?.is_some();
    let now = Timestamp::now();
    let since = |minutes: u32| now - SignedDuration::from_secs(i64::from(minutes) * 60);
    let created_after = |capture: &kube::core::PartialObjectMeta<ForensicCapture>, after: Timestamp| {
        capture.metadata.creation_timestamp.as_ref().is_some_and(|t| t.0 >= after)
    };
    let window = policy.spec.deduplication_window_minutes;
    let recent_for_instance = if window == 0 {
        None
    } else {
        let of_instance = captures.list_metadata(&ListParams::default().labels(&format!("{INSTANCE_LABEL}={}", finding.instance_id))).await?;
        of_instance.items.iter().filter(|c| created_after(c, since(window))).max_by_key(|c| c.metadata.creation_timestamp.as_ref().map(|t| t.0)).map(|c| c.name_any())
    };
    let of_policy = captures.list_metadata(&ListParams::default().labels(&format!("{POLICY_LABEL}={}", policy.name_any()))).await?;
    let created_last_hour = of_policy.items.iter().filter(|c| created_after(c, since(60))).count();
    Ok(policy::decide(&policy.spec, &History { already_exists, recent_for_instance, created_last_hour }))
}

async fn create(ctx: &Context, policy: &CapturePolicy, finding: &Finding, delivery: &Delivery<'_>, own_account: &str) -> Result<Decision, kube::Error> {
    let capture = policy::capture(policy, finding, delivery, Some(own_account).filter(|a| !a.is_empty()));
    let captures: Api<ForensicCapture> = Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    match captures.create(&PostParams::default(), &capture).await {
        Ok(_) => Ok(Decision::Create),
        // Created meanwhile by an earlier delivery of the same finding (or a second policy in the namespace).
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Decision::AlreadyCaptured),
        Err(e) => Err(e),
    }
}

fn log_decision(policy: &CapturePolicy, finding: &Finding, name: &str, decision: &Decision, message_id: &str) {
    let policy = format!("{}/{}", policy.namespace().unwrap_or_default(), policy.name_any());
    let (finding_id, instance) = (finding.id.as_str(), finding.instance_id.as_str());
    match decision {
        Decision::Create => tracing::info!(%policy, finding_id, instance, capture = name, message_id, "finding intake: capture created"),
        Decision::AlreadyCaptured => tracing::info!(%policy, finding_id, instance, capture = name, message_id, "finding intake: the finding's capture exists already"),
        Decision::Duplicate { of } => {
            tracing::info!(%policy, finding_id, instance, recent = %of, message_id, "finding intake: the instance was captured within the de-duplication window; nothing created")
        }
        Decision::RateLimited { created_last_hour } => {
            tracing::warn!(%policy, finding_id, instance, created_last_hour, message_id, "finding intake: maxCapturesPerHour reached; nothing created")
        }
    }
}

/// What one message did for one policy, added to its status.
#[derive(Default)]
struct Tally {
    matched: u64,
    created: u64,
    already: u64,
    rate_limited: u64,
    duplicate: u64,
    last_capture: Option<String>,
    last_finding: Option<String>,
}

impl Tally {
    fn add(&mut self, decision: &Decision, name: &str, finding: &Finding) {
        self.matched += 1;
        let outcome = match decision {
            Decision::Create => {
                self.created += 1;
                self.last_capture = Some(name.to_string());
                "created"
            }
            Decision::AlreadyCaptured => {
                self.already += 1;
                "already_captured"
            }
            Decision::Duplicate { .. } => {
                self.duplicate += 1;
                "duplicate"
            }
            Decision::RateLimited { .. } => {
                self.rate_limited += 1;
                "rate_limited"
            }
        };
        self.last_finding = Some(format!("{} {} {} (severity {}) for {}: {outcome}", finding.source.name(), finding.id, finding.type_, finding.severity, finding.instance_id));
    }
}

async fn record(ctx: &Context, policy: &CapturePolicy, tally: &Tally) -> Result<(), kube::Error> {
    let ctx_metrics = &ctx.metrics;
    for (count, outcome) in [(tally.created, "created"), (tally.already, "already_captured"), (tally.duplicate, "duplicate"), (tally.rate_limited, "rate_limited")] {
        for _ in 0..count {
            ctx_metrics.finding(outcome);
        }
    }
    // Counted from the newest status, so two messages in a row both count (the listed policy may be older).
    let api: Api<CapturePolicy> = Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    let current = api.get(&policy.name_any()).await?.status.unwrap_or_default();
    let status = CapturePolicyStatus {
        findings_matched: current.findings_matched + tally.matched,
        captures_created: current.captures_created + tally.created,
        already_captured: current.already_captured + tally.already,
        suppressed_by_rate_limit: current.suppressed_by_rate_limit + tally.rate_limited,
        suppressed_as_duplicate: current.suppressed_as_duplicate + tally.duplicate,
        last_capture: tally.last_capture.clone().or(current.last_capture),
        last_finding: tally.last_finding.clone(),
        last_finding_at: Some(now()),
    };
    api.patch_status(&policy.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await?;
    Ok(())
}
