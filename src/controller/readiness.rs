//! Readiness, the reads: for each selected instance, the dry run of a full capture (the target resolved as a
//! capture would, then dry_run::make_plan), judged by readiness.rs; for the controller's own account, the
//! evidence bucket, its Object Lock, the signing key and the presign role; for each other account, its target
//! role. Nothing here changes an AWS resource: every call is a Describe, List, Get or Head, an STS AssumeRole,
//! or the local signing of a URL that is never used.
//!
//! `check` is shared by the ForensicReadiness reconciler (`reconcile`) and `forensic-capture readiness`.

use std::{sync::Arc, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action as Requeue,
};
use serde_json::json;

use super::{Context, clients::Requester, failure::StepError, reconcile::Error, resolve, status::now, step_context::StepContext};
use crate::{
    api::{AccountReadiness, ForensicCapture, ForensicReadiness, ForensicReadinessSpec, ForensicReadinessStatus, InstanceReadiness, ReadinessCheck, ReadinessProblem, Reason, conditions},
    aws::{ErrorClass, ec2::Ec2Api, kms::SignerApi, s3::{EvidenceStore, Presign}},
    readiness::{assess, full_capture_spec, summarize, verdict},
};

/// Runs one check. `who` names the asker in target-account session names (as a capture's requester does).
pub async fn check(ctx: &Context, spec: &ForensicReadinessSpec, who: &str) -> Result<ForensicReadinessStatus, StepError> {
    let uid = format!("readiness-{}", uuid::Uuid::new_v4().simple());
    let result = check_with(ctx, spec, who, &uid).await;
    ctx.forget_sessions(&uid);
    result
}

async fn check_with(ctx: &Context, spec: &ForensicReadinessSpec, who: &str, uid: &str) -> Result<ForensicReadinessStatus, StepError> {
    let own = own_account(ctx).await?;
    let accounts: Vec<Option<String>> = if spec.accounts.is_empty() { vec![None] } else { spec.accounts.iter().map(|a| Some(a.clone()).filter(|a| *a != own)).collect() };
    let regions = if spec.regions.is_empty() { vec![ctx.default_region()] } else { spec.regions.clone() };
    let tags: Vec<(String, String)> = spec.instance_tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut account_checks = vec![AccountReadiness { account_id: own.clone(), region: ctx.evidence_region(), checks: controller_checks(ctx).await? }];
    let mut instances = Vec::new();
    for account in &accounts {
        for region in &regions {
            let requester = Requester { uid, case_id: "readiness", who: who.to_string() };
            let aws = match ctx.capture_clients(account.as_deref(), region, &requester).await {
                Ok(aws) => {
                    if let Some(account) = account {
                        account_checks.push(AccountReadiness {
                            account_id: account.clone(),
                            region: region.clone(),
                            checks: vec![ok("TargetRole", format!("assumed {} (sts:AssumeRole)", ctx.config.accounts.role_arn(account)))],
                        });
                    }
                    aws
                }
                Err(e) => {
                    let account = account.clone().unwrap_or_else(|| own.clone());
                    let failure = e.for_instance("(readiness)");
                    let StepError::Abort { message, .. } = failure else { return Err(failure) };
                    account_checks.push(AccountReadiness { account_id: account, region: region.clone(), checks: vec![not_ok("TargetRole", Reason::TargetAccountAccessDenied, message)] });
                    continue;
                }
            };
            let selected = aws.ec2.instances_selected(&spec.instance_ids, &tags).await.map_err(|e| retry_or_fail(e, "selecting instances"))?;
            for instance_id in selected {
                instances.push(instance(ctx, account.as_deref(), region, &instance_id, uid, who).await?);
            }
        }
    }
    let mut status = summarize(&instances, account_checks);
    status.checked_at = Some(now());
    Ok(status)
}

fn retry_or_fail(e: crate::aws::AwsError, what: &str) -> StepError {
    StepError::on_instance(e, what, Reason::TargetLookupFailed)
}

async fn own_account(ctx: &Context) -> Result<String, StepError> {
    let sts = ctx.aws(&ctx.default_region()).store.sts;
    let identity = sts.get_caller_identity().send().await.map_err(|e| retry_or_fail(crate::aws::AwsError::from_sdk("sts:GetCallerIdentity", e), "the controller's identity"))?;
    Ok(identity.account().unwrap_or_default().to_string())
}

/// One instance: resolved and planned as a full capture of it would be.
async fn instance(ctx: &Context, account: Option<&str>, region: &str, instance_id: &str, uid: &str, who: &str) -> Result<InstanceReadiness, StepError> {
    let mut capture = ForensicCapture::new(&format!("readiness-{instance_id}"), full_capture_spec(instance_id, account, region));
    capture.metadata = ObjectMeta {
        name: capture.metadata.name.clone(),
        uid: Some(uid.to_string()),
        annotations: Some([(crate::manifest::REQUESTED_BY_ANNOTATION.to_string(), who.to_string())].into()),
        ..ObjectMeta::default()
    };
    let unreadable = |reason: Reason, message: String| InstanceReadiness {
        instance_id: instance_id.to_string(),
        account_id: account.unwrap_or_default().to_string(),
        region: region.to_string(),
        ready: false,
        problems: vec![ReadinessProblem { reason: reason.as_str().to_string(), message }],
        containment_needs: Vec::new(),
    };
    let target = match resolve::resolve(ctx, &capture).await {
        Ok(target) => target,
        Err(StepError::Retry { message, source }) => return Err(StepError::Retry { message, source }),
        Err(StepError::Abort { reason, message, .. } | StepError::Failed { reason, message, .. }) => return Ok(unreadable(reason, message)),
    };
    let sc = StepContext::new(ctx, &capture, target.clone()).await?;
    match super::dry_run::make_plan(&sc).await {
        Ok(plan) => Ok(assess(&target, &plan)),
        Err(StepError::Retry { message, source }) => Err(StepError::Retry { message, source }),
        Err(StepError::Abort { reason, message, .. } | StepError::Failed { reason, message, .. }) => Ok(unreadable(reason, message)),
    }
}

fn ok(name: &str, message: String) -> ReadinessCheck {
    ReadinessCheck { name: name.into(), ok: true, reason: None, message }
}

fn not_ok(name: &str, reason: Reason, message: String) -> ReadinessCheck {
    ReadinessCheck { name: name.into(), ok: false, reason: Some(reason.as_str().into()), message }
}

/// What every capture needs in the controller's own account, whatever the instance: the evidence bucket (and
/// its Object Lock when configured), the signing key and the presign role, when configured.
async fn controller_checks(ctx: &Context) -> Result<Vec<ReadinessCheck>, StepError> {
    let config = &ctx.config;
    let store = ctx.aws(&ctx.evidence_region()).store;
    let mut checks = Vec::new();
    if let Some(bucket) = &config.evidence_bucket {
        checks.extend(bucket_checks(ctx, &store, bucket).await?);
    } else {
        checks.push(not_ok("EvidenceBucket", Reason::EvidenceBucketNotConfigured, "no --evidence-bucket: only captures whose spec names a bucket can store evidence".into()));
    }
    if let Some(key) = &config.protection.kms_signing_key_id {
        let kms = ctx.aws(&ctx.signing_region()).kms;
        match kms.signing_algorithms(key).await {
            Ok(algorithms) if crate::custody::signing_algorithm(&algorithms).is_some() => {
                checks.push(ok("SigningKey", format!("{key} signs with {} (kms:DescribeKey)", crate::custody::signing_algorithm(&algorithms).unwrap_or_default())))
            }
            Ok(algorithms) => checks.push(not_ok("SigningKey", Reason::SigningKeyUnusable, format!("{key} offers no SHA-256 signing algorithm: {algorithms:?}"))),
            Err(e) if e.is_retryable() => return Err(retry_or_fail(e, &format!("key {key}"))),
            Err(e) => checks.push(not_ok("SigningKey", Reason::SigningKeyUnusable, format!("{key}: {e}"))),
        }
    }
    if let (Some(role), Some(bucket)) = (&config.presign_role_arn, &config.evidence_bucket) {
        // Signing one URL assumes the role with a session policy, as every capture does; the URL is not used.
        let probe = Presign::Get { bucket: bucket.clone(), key: format!("{}/readiness-probe", config.evidence_prefix) };
        match store.presign(&[probe], Duration::from_secs(60), "forensic-capture-readiness").await {
            Ok(_) => checks.push(ok("PresignRole", format!("assumed {role} and signed a URL (sts:AssumeRole)"))),
            Err(e) if e.is_retryable() => return Err(retry_or_fail(e, &format!("role {role}"))),
            Err(e) => checks.push(not_ok("PresignRole", Reason::PresignFailed, format!("{role}: {e}"))),
        }
    }
    Ok(checks)
}

/// The evidence bucket, and its Object Lock when configured (only looked at when the bucket can be used).
async fn bucket_checks(ctx: &Context, store: &crate::aws::s3::SdkEvidenceStore, bucket: &str) -> Result<Vec<ReadinessCheck>, StepError> {
    let mut checks = Vec::new();
    match store.check_bucket(bucket).await {
        Ok(()) => checks.push(ok("EvidenceBucket", format!("s3://{bucket} exists and the controller may use it (s3:HeadBucket)"))),
        Err(e) if e.is_retryable() => return Err(retry_or_fail(e, &format!("bucket {bucket}"))),
        Err(e) => {
            let reason = match e.class() {
                ErrorClass::NotFound => Reason::EvidenceBucketNotFound,
                ErrorClass::AccessDenied => Reason::EvidenceBucketAccessDenied,
                _ => Reason::EvidenceBucketUnavailable,
            };
            checks.push(not_ok("EvidenceBucket", reason, format!("s3://{bucket}: {e}")));
            return Ok(checks);
        }
    }
    if let Some(mode) = ctx.config.protection.object_lock_mode {
        match store.bucket_protection(bucket).await {
            Ok((versioning, true)) => checks.push(ok("ObjectLock", format!("Object Lock enabled on s3://{bucket} (versioning {}) for {} retention", versioning.unwrap_or_default(), mode.as_str()))),
            Ok((versioning, false)) => checks.push(not_ok(
                "ObjectLock",
                if versioning.as_deref() == Some("Enabled") { Reason::ObjectLockNotEnabled } else { Reason::VersioningNotEnabled },
                format!("--object-lock-mode {} is set but s3://{bucket} has Object Lock off (versioning {})", mode.as_str(), versioning.as_deref().unwrap_or("never enabled")),
            )),
            Err(e) if e.is_retryable() => return Err(retry_or_fail(e, &format!("bucket {bucket}"))),
            Err(e) => checks.push(not_ok("ObjectLock", Reason::ObjectLockNotEnabled, format!("s3://{bucket}: {e}"))),
        }
    }
    Ok(checks)
}

pub async fn reconcile(readiness: Arc<ForensicReadiness>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let namespace = readiness.namespace().unwrap_or_default();
    let name = readiness.name_any();
    let interval = Duration::from_secs(u64::from(readiness.spec.interval_minutes) * 60);
    // A check is due when none was made for this generation or the last is an interval old.
    let last = readiness.status.as_ref().and_then(|s| s.checked_at.as_ref()).map(|t| t.0);
    let observed = readiness.status.as_ref().and_then(|s| s.conditions.first()).and_then(|c| c.observed_generation);
    if let Some(last) = last.filter(|_| observed == readiness.metadata.generation) {
        let age = k8s_openapi::jiff::Timestamp::now().duration_since(last).unsigned_abs();
        if age < interval {
            return Ok(Requeue::requeue(interval - age));
        }
    }
    let who = format!("ForensicReadiness {namespace}/{name}");
    let mut status = check(&ctx, &readiness.spec, &who).await?;
    let (ready, reason, message) = verdict(&status);
    let desired = conditions::Desired { type_: conditions::READY, status: ready, reason: reason.into(), message };
    let previous = readiness.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    status.conditions = conditions::merge(&previous, &[desired], readiness.metadata.generation, &now());
    ctx.metrics.readiness_checked(&format!("{namespace}/{name}"), &status);
    // Only what changed, with what went away as null: a merge patch would otherwise keep a reason or need that
    // no longer applies.
    let old = serde_json::to_value(readiness.status.clone().unwrap_or_default()).unwrap_or_default();
    let new = serde_json::to_value(&status).unwrap_or_default();
    let api: Api<ForensicReadiness> = Api::namespaced(ctx.client.clone(), &namespace);
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({ "status": super::status::merge_diff(&old, &new) }))).await?;
    Ok(Requeue::requeue(interval))
}
