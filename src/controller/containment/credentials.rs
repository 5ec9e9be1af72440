//! Credential containment (when the spec asks): deny the role's sessions issued before now, and swap in a
//! deny-all instance profile. Release restores the profile and keeps the revocation: credentials taken before
//! containment should stay dead.

use futures::future::BoxFuture;

use super::{Action, Applied, Apply, Restore};
use crate::{
    api::CredentialRecord,
    aws::{ec2::Ec2Api, iam::IamApi},
    controller::{failure::StepError, status::now},
};

pub struct Credentials;

impl Action for Credentials {
    fn name(&self) -> &'static str {
        "Credentials"
    }

    fn apply<'x>(&'x self, cx: &'x mut Apply<'_, '_>) -> BoxFuture<'x, Result<Applied, StepError>> {
        Box::pin(async move {
            let Some(wanted) = cx.sc.capture.spec.steps.isolation.credentials.clone() else {
                return Ok(Applied::NotNeeded("not requested (spec.isolation.credentials)".into()));
            };
            let sc = cx.sc;
            let instance_id = sc.instance_id().to_string();
            let Some((association_id, current_arn)) = sc.aws.ec2.instance_profile(&instance_id).await.map_err(|e| cx.error(e))? else {
                return Ok(Applied::NotNeeded("the instance has no instance profile".into()));
            };
            // Recorded once, before anything changes: after a restart the current profile may already be the deny-all one.
            if cx.record().credentials.is_none() {
                let role_name = sc.aws.iam.instance_profile_role(&current_arn).await.map_err(|e| cx.error(e))?;
                cx.record().credentials = Some(CredentialRecord {
                    previous_instance_profile_arn: Some(current_arn.clone()),
                    role_name,
                    revoke_policy_name: Some(format!("forensic-capture-revoke-{}", sc.uid)),
                    revoked_before: Some(now()),
                });
                cx.save().await?;
            }
            let recorded = cx.record().credentials.clone().unwrap_or_default();
            let mut done = Vec::new();
            if wanted.revoke_sessions {
                if let (Some(role), Some(policy), Some(before)) = (&recorded.role_name, &recorded.revoke_policy_name, &recorded.revoked_before) {
                    // Whole seconds, rounded up, as IAM condition dates are usually written.
                    let cut = before.0.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(1)).unwrap_or(before.0);
                    let before = cut.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
                    sc.aws.iam.deny_sessions_before(role, policy, &before).await.map_err(|e| cx.error(e))?;
                    done.push(format!("sessions of role {role} issued before {before} denied"));
                }
            }
            if let Some(replacement) = &wanted.replace_instance_profile {
                if &current_arn != replacement {
                    sc.aws.ec2.replace_instance_profile(&association_id, replacement).await.map_err(|e| cx.error(e))?;
                }
                done.push(format!("instance profile {current_arn} replaced by {replacement}"));
            }
            Ok(Applied::Changed(done.join("; ")))
        })
    }

    fn restore<'x>(&'x self, cx: &'x Restore<'_>) -> BoxFuture<'x, Result<String, StepError>> {
        Box::pin(async move {
            let Some(previous) = cx.record.credentials.as_ref().and_then(|c| c.previous_instance_profile_arn.clone()) else {
                return Ok("no instance profile recorded".into());
            };
            if let Some((association_id, current)) = cx.aws.ec2.instance_profile(cx.instance_id).await.map_err(|e| cx.error(e))? {
                if current != previous {
                    cx.aws.ec2.replace_instance_profile(&association_id, &previous).await.map_err(|e| cx.error(e))?;
                }
            }
            Ok(format!("instance profile {previous} restored; revocation of older sessions kept"))
        })
    }
}
