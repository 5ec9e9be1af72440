//! Approval of finding-driven captures: a capture with spec.requiresApproval looks for a CaptureApproval naming
//! it (`find`, from the capture's reconcile), and each CaptureApproval's status says what became of it
//! (`reconcile`). The capture alone decides which approval it took, and records it in status.approval, so two
//! approvals at once cannot both start it and the approval's status is only a report of that record.

use std::{sync::Arc, time::Duration};

use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::controller::Action as Requeue,
};
use serde_json::json;

use super::{Context, reconcile::Error, status::now};
use crate::{
    api::{ApprovalRecord, CaptureApproval, CaptureApprovalStatus, ForensicCapture, Reason},
    planner::Waiting,
};

/// How often a waiting capture looks for its approval besides the watch (which brings a new one at once).
pub const LOOK_AGAIN: Duration = Duration::from_secs(60);
/// How soon an approval whose capture has not looked yet is reported again.
const PENDING_RECHECK: Duration = Duration::from_secs(5);

/// What a waiting capture's Ready condition says. Stable (no time, no count), so waiting writes nothing more.
pub fn waiting(capture: &ForensicCapture) -> Waiting {
    let origin = match &capture.spec.trigger {
        Some(t) => format!(
            " (created by CapturePolicy {} from {} finding {}, {}, severity {}, for instance {})",
            t.policy,
            t.source.name(),
            t.finding_id,
            t.finding_type,
            t.severity,
            capture.spec.target.instance_id.as_deref().unwrap_or("?")
        ),
        None => String::new(),
    };
    Waiting {
        reason: Reason::AwaitingApproval,
        message: format!(
            "waits for approval: nothing is done in AWS until a CaptureApproval with spec.captureName {} is created in namespace {}{origin}",
            capture.name_any(),
            capture.namespace().unwrap_or_default()
        ),
    }
}

/// The approval a waiting capture takes: the oldest CaptureApproval in its namespace that names it and was
/// made for it (not before it existed: an approval for an earlier capture of the same name is not one for
/// this capture).
pub async fn find(ctx: &Context, capture: &ForensicCapture) -> Result<Option<ApprovalRecord>, kube::Error> {
    let api: Api<CaptureApproval> = Api::namespaced(ctx.client.clone(), &capture.namespace().unwrap_or_default());
    let name = capture.name_any();
    let mut candidates: Vec<CaptureApproval> =
        api.list(&ListParams::default()).await?.items.into_iter().filter(|a| a.spec.capture_name == name && made_for(a, capture)).collect();
    candidates.sort_by_key(|a| a.metadata.creation_timestamp.as_ref().map(|t| t.0));
    Ok(candidates.into_iter().next().map(|a| ApprovalRecord {
        name: a.name_any(),
        uid: a.uid().unwrap_or_default(),
        reason: a.spec.reason.clone(),
        approved_by: crate::manifest::requester(&a.metadata),
        approved_at: now(),
    }))
}

/// Creation times have a resolution of one second: an approval made in the capture's own second counts.
fn made_for(approval: &CaptureApproval, capture: &ForensicCapture) -> bool {
    match (&approval.metadata.creation_timestamp, &capture.metadata.creation_timestamp) {
        (Some(a), Some(c)) => a.0 >= c.0,
        _ => true,
    }
}

/// What became of the approval, from the capture's record.
fn report(approval: &CaptureApproval, capture: Option<&ForensicCapture>) -> (CaptureApprovalStatus, Option<Duration>) {
    let namespace = approval.namespace().unwrap_or_default();
    let wanted = &approval.spec.capture_name;
    let status = |phase: &str, reason: Option<Reason>, message: String, uid: Option<String>| CaptureApprovalStatus {
        phase: Some(phase.into()),
        capture_uid: uid,
        reason: reason.map(String::from),
        message: Some(message),
    };
    let Some(capture) = capture.filter(|c| made_for(approval, c)) else {
        let message = match capture {
            Some(_) => format!("ForensicCapture {namespace}/{wanted} was created after this approval; it needs an approval of its own"),
            None => format!("ForensicCapture {namespace}/{wanted} does not exist"),
        };
        return (status("NotFound", Some(Reason::CaptureNotFound), message, None), None);
    };
    let uid = capture.uid();
    if !capture.spec.requires_approval {
        let message = format!("ForensicCapture {namespace}/{wanted} does not wait for approval (it was created by hand or by an Automatic policy)");
        return (status("NotWaiting", Some(Reason::ApprovalNotRequired), message, uid), None);
    }
    match capture.status.as_ref().and_then(|s| s.approval.as_ref()) {
        Some(record) if Some(&record.uid) == approval.uid().as_ref() => {
            (status("Approved", None, format!("ForensicCapture {namespace}/{wanted} started with this approval"), uid), None)
        }
        Some(record) => {
            let message = format!("ForensicCapture {namespace}/{wanted} was already approved by CaptureApproval {} ({})", record.name, record.approved_by);
            (status("NotWaiting", Some(Reason::AlreadyApproved), message, uid), None)
        }
        None => (status("Pending", None, format!("ForensicCapture {namespace}/{wanted} starts with this approval when it next looks"), uid), Some(PENDING_RECHECK)),
    }
}

pub async fn reconcile(approval: Arc<CaptureApproval>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let namespace = approval.namespace().unwrap_or_default();
    let captures: Api<ForensicCapture> = Api::namespaced(ctx.client.clone(), &namespace);
    let capture = captures.get_opt(&approval.spec.capture_name).await?;
    let (status, recheck) = report(&approval, capture.as_ref());
    if approval.status.as_ref() != Some(&status) {
        let api: Api<CaptureApproval> = Api::namespaced(ctx.client.clone(), &namespace);
        api.patch_status(&approval.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await?;
    }
    Ok(recheck.map(Requeue::requeue).unwrap_or_else(Requeue::await_change))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CaptureApprovalSpec, ForensicCaptureStatus};

    fn at(seconds: i64) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn approval(uid: &str, created: i64) -> CaptureApproval {
        let mut a = CaptureApproval::new("ok", CaptureApprovalSpec { capture_name: "c".into(), reason: "confirmed".into() });
        a.metadata.namespace = Some("ir".into());
        a.metadata.uid = Some(uid.into());
        a.metadata.creation_timestamp = Some(at(created));
        a
    }

    fn capture(requires_approval: bool, approved_by_uid: Option<&str>) -> ForensicCapture {
        let spec = serde_yaml::from_str(&format!("caseId: c\ntarget: {{instanceId: i-1}}\nrequiresApproval: {requires_approval}\n")).unwrap();
        let mut c = ForensicCapture::new("c", spec);
        c.metadata.uid = Some("cap".into());
        c.metadata.creation_timestamp = Some(at(100));
        c.status = approved_by_uid.map(|uid| ForensicCaptureStatus {
            approval: Some(ApprovalRecord { name: "x".into(), uid: uid.into(), reason: "r".into(), approved_by: "alice".into(), approved_at: at(101) }),
            ..Default::default()
        });
        c
    }

    fn phase_and_reason(approval: &CaptureApproval, capture: Option<&ForensicCapture>) -> (String, Option<String>) {
        let (status, _) = report(approval, capture);
        (status.phase.unwrap(), status.reason)
    }

    #[test]
    fn an_approval_reports_what_the_capture_recorded() {
        let a = approval("a1", 100);
        assert_eq!(phase_and_reason(&a, None), ("NotFound".into(), Some("CaptureNotFound".into())));
        assert_eq!(phase_and_reason(&a, Some(&capture(false, None))), ("NotWaiting".into(), Some("ApprovalNotRequired".into())));
        assert_eq!(phase_and_reason(&a, Some(&capture(true, None))), ("Pending".into(), None));
        assert_eq!(phase_and_reason(&a, Some(&capture(true, Some("a1")))), ("Approved".into(), None));
        assert_eq!(phase_and_reason(&a, Some(&capture(true, Some("a2")))), ("NotWaiting".into(), Some("AlreadyApproved".into())));
    }

    #[test]
    fn an_approval_older_than_the_capture_is_not_for_it() {
        let early = approval("a0", 99);
        assert!(!made_for(&early, &capture(true, None)));
        assert_eq!(phase_and_reason(&early, Some(&capture(true, None))).0, "NotFound");
        assert!(made_for(&approval("a1", 100), &capture(true, None)), "the capture's own second counts");
    }
}
