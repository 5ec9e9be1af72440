//! Every reconcile runs in a span naming what it works on (capture, instance), so each log line inside
//! carries them, and is counted by controller and, when it fails, by reason.

use std::sync::Arc;

use kube::{ResourceExt, runtime::controller::Action};
use tracing::{Instrument, field};

use super::{Context, approval, readiness, reconcile, release};
use crate::api::{CaptureApproval, ContainmentRelease, ForensicCapture, ForensicReadiness};

pub async fn capture(capture: Arc<ForensicCapture>, ctx: Arc<Context>) -> Result<Action, reconcile::Error> {
    let span = tracing::info_span!("reconcile", controller = "capture", capture = %key(&*capture, &capture.name_any()), instance = field::Empty);
    let resolved = capture.status.as_ref().and_then(|s| s.target.as_ref()).map(|t| t.instance_id.as_str());
    if let Some(instance) = resolved.or(capture.spec.target.instance_id.as_deref()) {
        span.record("instance", instance);
    }
    let uid = capture.metadata.uid.clone().unwrap_or_default();
    observed(&ctx, "capture", &uid, reconcile::reconcile(capture.clone(), ctx.clone())).instrument(span).await
}

pub async fn release(release: Arc<ContainmentRelease>, ctx: Arc<Context>) -> Result<Action, reconcile::Error> {
    let span = tracing::info_span!(
        "reconcile",
        controller = "release",
        release = %key(&*release, &release.name_any()),
        capture = %key(&*release, &release.spec.capture_name),
        instance = field::Empty
    );
    if let Some(instance) = release.status.as_ref().and_then(|s| s.instance_id.as_deref()) {
        span.record("instance", instance);
    }
    let uid = release.metadata.uid.clone().unwrap_or_default();
    observed(&ctx, "release", &uid, release::reconcile(release.clone(), ctx.clone())).instrument(span).await
}

pub async fn approval(approval: Arc<CaptureApproval>, ctx: Arc<Context>) -> Result<Action, reconcile::Error> {
    let span = tracing::info_span!(
        "reconcile",
        controller = "approval",
        approval = %key(&*approval, &approval.name_any()),
        capture = %key(&*approval, &approval.spec.capture_name)
    );
    let uid = approval.metadata.uid.clone().unwrap_or_default();
    observed(&ctx, "approval", &uid, approval::reconcile(approval.clone(), ctx.clone())).instrument(span).await
}

pub async fn readiness(readiness: Arc<ForensicReadiness>, ctx: Arc<Context>) -> Result<Action, reconcile::Error> {
    let span = tracing::info_span!("reconcile", controller = "readiness", readiness = %key(&*readiness, &readiness.name_any()));
    let uid = readiness.metadata.uid.clone().unwrap_or_default();
    observed(&ctx, "readiness", &uid, readiness::reconcile(readiness.clone(), ctx.clone())).instrument(span).await
}

/// `namespace/name` of `name` in the object's namespace.
fn key(object: &impl ResourceExt, name: &str) -> String {
    format!("{}/{name}", object.namespace().unwrap_or_default())
}

async fn observed(
    ctx: &Context,
    controller: &'static str,
    uid: &str,
    reconcile: impl Future<Output = Result<Action, reconcile::Error>>,
) -> Result<Action, reconcile::Error> {
    let result = reconcile.await;
    if result.is_ok() {
        // The backoff counts consecutive failures only.
        ctx.backoff.succeeded(uid);
    }
    let reason = result.as_ref().err().map(reason);
    if let (Err(error), Some(reason)) = (&result, &reason) {
        tracing::warn!(%reason, %error, "reconcile failed; will retry");
    }
    ctx.metrics.reconciled(controller, reason);
    result
}

/// A stable, low-cardinality category: the Kubernetes API's own reason (Conflict, NotFound,
/// TooManyRequests, ...), KubernetesClient when no response came, Throttling when AWS asked to slow down, or
/// Transient for a step's other retryable AWS or API trouble (its AWS side is in aws_calls_total by operation
/// and outcome).
fn reason(error: &reconcile::Error) -> String {
    match error {
        reconcile::Error::Kube(kube::Error::Api(status)) if !status.reason.is_empty() => status.reason.clone(),
        reconcile::Error::Kube(kube::Error::Api(status)) => format!("Http{}", status.code),
        reconcile::Error::Kube(_) => "KubernetesClient".into(),
        // Throttling on its own: the sign to lower the controller's request rates (--aws-rate-limit).
        reconcile::Error::Retry { source: Some(aws), .. } if aws.is_throttling() => "Throttling".into(),
        reconcile::Error::Retry { .. } => "Transient".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str) -> reconcile::Error {
        let status = kube::core::Status { code, reason: reason.into(), ..kube::core::Status::failure("m", reason) };
        reconcile::Error::Kube(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn errors_are_counted_by_a_stable_reason() {
        assert_eq!(reason(&api_error(409, "Conflict")), "Conflict");
        assert_eq!(reason(&api_error(502, "")), "Http502");
        assert_eq!(reason(&reconcile::Error::Retry { message: "instance i-1: ec2:CreateSnapshots: RequestLimitExceeded: slow down".into(), source: None }), "Transient");
        let throttled = crate::aws::AwsError {
            operation: "ec2:CreateSnapshots",
            code: "RequestLimitExceeded".into(),
            message: "Request limit exceeded.".into(),
            request_id: None,
            http_status: Some(503),
        };
        assert_eq!(reason(&reconcile::Error::Retry { message: "m".into(), source: Some(throttled) }), "Throttling");
    }
}
