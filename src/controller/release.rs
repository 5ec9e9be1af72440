//! Reconciles ContainmentRelease: restores the prior state a capture recorded, running the containment
//! playbook in reverse (containment/). Every restore is idempotent (setting groups, registering targets,
//! setting attributes), so a restart or a second release is harmless; each one is recorded before the next
//! starts. A release created while its capture still runs waits for the capture to end.

use std::{sync::Arc, time::Duration};

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action as Requeue,
};
use serde_json::json;

use super::{
    Context,
    clients::Requester,
    containment::{PLAYBOOK, Restore},
    failure::StepError,
    reconcile::Error,
    status::now,
};
use crate::api::{ActionState, ContainmentAction, ContainmentRelease, ContainmentReleaseStatus, ForensicCapture, Reason};

const WAIT: Duration = Duration::from_secs(10);

fn set(status: &mut ContainmentReleaseStatus, phase: &str, reason: Reason, message: String) {
    status.phase = Some(phase.into());
    status.reason = Some(reason.into());
    status.message = Some(message);
}

pub async fn reconcile(release: Arc<ContainmentRelease>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let namespace = release.namespace().unwrap_or_default();
    let api: Api<ContainmentRelease> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut status = release.status.clone().unwrap_or_default();
    if status.released_at.is_some() || status.phase.as_deref() == Some("Failed") {
        return Ok(Requeue::await_change());
    }
    let captures: Api<ForensicCapture> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(capture) = captures.get_opt(&release.spec.capture_name).await? else {
        set(&mut status, "Failed", Reason::CaptureNotFound, format!("ForensicCapture {namespace}/{} does not exist", release.spec.capture_name));
        save(&api, &release, &status).await?;
        return Ok(Requeue::await_change());
    };
    let capture_status = capture.status.clone().unwrap_or_default();
    // Waiting comes first: a capture that is still running may not have applied its containment yet.
    if capture_status.completed_at.is_none() {
        set(&mut status, "Pending", Reason::CaptureInProgress, format!("ForensicCapture {} is still running; release waits for it", capture.name_any()));
        save(&api, &release, &status).await?;
        return Ok(Requeue::requeue(WAIT));
    }
    let (Some(record), Some(target)) = (capture_status.isolation.clone(), capture_status.target.clone()) else {
        set(&mut status, "Failed", Reason::NothingToRelease, format!("ForensicCapture {} applied no containment", capture.name_any()));
        save(&api, &release, &status).await?;
        return Ok(Requeue::await_change());
    };
    status.capture_uid = capture.uid();
    status.instance_id = Some(target.instance_id.clone());
    let instance_id = target.instance_id.as_str();
    // The capture's own account and region, through a session named after the capture that carries who
    // asked for the release.
    let uid = capture.uid().unwrap_or_default();
    let requester = Requester { uid: &uid, case_id: &capture.spec.case_id, who: crate::manifest::requester(&release.metadata) };
    let aws = match ctx.capture_clients(capture.spec.target.account_id.as_deref(), &target.region, &requester).await.map_err(|e| e.for_instance(instance_id)) {
        Ok(aws) => aws,
        Err(StepError::Retry { message, source }) => {
            save(&api, &release, &status).await?;
            return Err(Error::Retry { message, source });
        }
        Err(StepError::Failed { reason, message, .. } | StepError::Abort { reason, message, .. }) => {
            set(&mut status, "Failed", reason, message);
            save(&api, &release, &status).await?;
            return Ok(Requeue::await_change());
        }
    };
    let cx = Restore { record: &record, instance_id, aws: &aws, client: &ctx.client };
    for action in PLAYBOOK.iter().rev() {
        let name = action.name();
        // Actions of another kind of target (a pod's, for an instance) were never part of this capture.
        if status.restored.iter().any(|r| r.name == name) || crate::planner::containment_applies(action.scope(), &capture.spec) == Ok(false) {
            continue;
        }
        // A Failed action may have changed part of what it covers before the call that failed (scale-in protection
        // before a denied standby, some target groups before a denied deregistration): its prior state is on record,
        // and restoring from it is idempotent, so it is restored like an applied one.
        let applied = record.actions.iter().any(|a| a.name == name && matches!(a.state, ActionState::Applied | ActionState::Failed));
        let result = if applied { action.restore(&cx).await } else { Ok("nothing was applied".into()) };
        match result {
            Ok(message) => status.restored.push(ContainmentAction {
                name: name.into(),
                state: if applied { ActionState::Restored } else { ActionState::NotNeeded },
                reason: None,
                message: Some(message),
                at: Some(now()),
            }),
            Err(StepError::Retry { message, source }) => {
                save(&api, &release, &status).await?;
                return Err(Error::Retry { message, source });
            }
            Err(StepError::Failed { reason, message, .. } | StepError::Abort { reason, message, .. }) => {
                let restored: Vec<String> = status.restored.iter().map(|r| r.name.clone()).collect();
                set(&mut status, "Failed", reason, format!("restoring {name} failed: {message}; restored so far: {restored:?}"));
                save(&api, &release, &status).await?;
                return Ok(Requeue::await_change());
            }
        }
        save(&api, &release, &status).await?;
    }
    status.phase = Some("Released".into());
    status.reason = None;
    status.message = Some(format!("containment of {instance_id} released: {}", release.spec.reason));
    status.released_at = Some(now());
    save(&api, &release, &status).await?;
    ctx.forget_sessions(&uid);
    Ok(Requeue::await_change())
}

async fn save(api: &Api<ContainmentRelease>, release: &ContainmentRelease, status: &ContainmentReleaseStatus) -> Result<(), kube::Error> {
    if release.status.as_ref() == Some(status) {
        return Ok(());
    }
    api.patch_status(&release.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await?;
    Ok(())
}
