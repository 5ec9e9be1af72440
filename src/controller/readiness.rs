//! Readiness, the reads: for each selected instance, the dry run of a full capture (the target resolved as a
//! capture would, then dry_run::make_plan), judged by readiness.rs; for the controller's own account, the
//! evidence bucket, its Object Lock, the signing key and the presign role; for each other account, its target
//! role; for every account and Region, the permissions (the controller's, or the target role's), simulated
//! with iam:SimulatePrincipalPolicy or, where that cannot be used, tried with EC2 dry runs. Nothing here
//! changes an AWS resource: every call is a Describe, List, Get or Head, an STS AssumeRole, a policy
//! simulation, an EC2 call with DryRun set, or the local signing of a URL that is never used.
//!
//! `check` is shared by the ForensicReadiness reconciler (`reconcile`) and `forensic-capture readiness`.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

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
    aws::{
        CaptureClients, ErrorClass,
        ec2::{Ec2Api, tags},
        kms::SignerApi,
        permissions::{DryRunAnswer, DryRunProbe, SimulatedAction},
        s3::{EvidenceStore, Presign},
    },
    readiness::{Denial, PermissionFindings, StatementSimulation, assess, full_capture_spec, permissions_check, simulation_principal, statement_simulations, summarize, verdict},
};

/// The policies the Permissions check holds identities to, as shipped (tests/iam_policy.rs keeps them in step
/// with the calls the code makes): the controller's own, and the target role's in other accounts.
const CONTROLLER_POLICY: (&str, &str) = ("iam/controller-policy.json", include_str!("../../iam/controller-policy.json"));
const TARGET_ROLE_POLICY: (&str, &str) = ("iam/target-role-policy.json", include_str!("../../iam/target-role-policy.json"));

/// The controller's identity, from sts:GetCallerIdentity.
struct Identity {
    account: String,
    arn: String,
}

/// Runs one check. `who` names the asker in target-account session names (as a capture's requester does).
pub async fn check(ctx: &Context, spec: &ForensicReadinessSpec, who: &str) -> Result<ForensicReadinessStatus, StepError> {
    let uid = format!("readiness-{}", uuid::Uuid::new_v4().simple());
    let result = check_with(ctx, spec, who, &uid).await;
    ctx.forget_sessions(&uid);
    result
}

async fn check_with(ctx: &Context, spec: &ForensicReadinessSpec, who: &str, uid: &str) -> Result<ForensicReadinessStatus, StepError> {
    let me = own_identity(ctx).await?;
    let own = me.account.clone();
    let accounts: Vec<Option<String>> = if spec.accounts.is_empty() { vec![None] } else { spec.accounts.iter().map(|a| Some(a.clone()).filter(|a| *a != own)).collect() };
    let regions = if spec.regions.is_empty() { vec![ctx.default_region()] } else { spec.regions.clone() };
    let tags: Vec<(String, String)> = spec.instance_tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut account_checks = vec![AccountReadiness { account_id: own.clone(), region: ctx.evidence_region(), checks: controller_checks(ctx).await? }];
    let mut instances = Vec::new();
    // IAM is global: each account's identity is simulated once, whatever the Regions.
    let mut simulations: BTreeMap<String, Simulated> = BTreeMap::new();
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
            let subject = match account {
                None => controller_subject(ctx, &me),
                Some(account) => target_subject(ctx, account),
            };
            let check = permissions(&aws, &subject, selected.first().map(String::as_str), uid, &mut simulations).await?;
            add_check(&mut account_checks, &subject.account, region, check);
            for instance_id in selected {
                instances.push(instance(ctx, account.as_deref(), region, &instance_id, uid, who).await?);
            }
        }
    }
    let mut status = summarize(&instances, account_checks);
    status.checked_at = Some(now());
    Ok(status)
}

/// Adds a check to its account and Region's entry, making the entry when there is none yet.
fn add_check(entries: &mut Vec<AccountReadiness>, account: &str, region: &str, check: ReadinessCheck) {
    match entries.iter_mut().find(|e| e.account_id == account && e.region == region) {
        Some(entry) => entry.checks.push(check),
        None => entries.push(AccountReadiness { account_id: account.to_string(), region: region.to_string(), checks: vec![check] }),
    }
}

/// Whose permissions are checked, against which policy, and the deployment values its placeholders stand for.
struct Subject {
    account: String,
    /// The IAM user or role to simulate; Err: why there is none.
    principal: Result<String, String>,
    /// How the identity is named in messages.
    name: String,
    policy: (&'static str, &'static str),
    values: BTreeMap<&'static str, String>,
    /// Why a placeholder has no value, where "not configured" would not say it.
    unknown: BTreeMap<&'static str, String>,
}

/// The name of the role an ARN (or ARN template) names: what follows `:role/`.
fn role_name(arn: &str) -> String {
    arn.split_once(":role/").map(|(_, name)| name.to_string()).unwrap_or_default()
}

/// The controller's identity against iam/controller-policy.json, its placeholders filled from the settings.
fn controller_subject(ctx: &Context, me: &Identity) -> Subject {
    let config = &ctx.config;
    let principal = simulation_principal(&me.arn);
    let mut values: BTreeMap<&'static str, String> = BTreeMap::new();
    values.insert("AccountId", me.account.clone());
    values.insert("EvidencePrefix", config.evidence_prefix.clone());
    values.insert("TargetRoleName", role_name(&config.accounts.target_role_arn_template));
    values.insert("ForensicRoleName", role_name(&config.accounts.forensic_role_arn_template));
    if let Some(bucket) = &config.evidence_bucket {
        values.insert("EvidenceBucket", bucket.clone());
    }
    if let Some(role) = &config.presign_role_arn {
        values.insert("PresignRoleArn", role.clone());
    }
    let mut unknown: BTreeMap<&'static str, String> = BTreeMap::new();
    if let Some(key) = config.protection.kms_signing_key_id.as_deref() {
        // IAM names the key by its ARN; a key ID is one in the signing Region. An alias is not: the statement is
        // then left out (the SigningKey check still describes the key).
        if key.starts_with("arn:") && key.contains(":key/") {
            values.insert("SigningKeyArn", key.to_string());
        } else if !key.contains('/') && !key.starts_with("arn:") {
            values.insert("SigningKeyArn", format!("arn:aws:kms:{}:{}:key/{key}", ctx.signing_region(), me.account));
        } else {
            unknown.insert("SigningKeyArn", format!("--kms-signing-key-id {key} is an alias, and IAM grants on the key's ARN"));
        }
    }
    values.insert("ControllerRoleArn", principal.clone().unwrap_or_else(|| me.arn.clone()));
    Subject {
        account: me.account.clone(),
        principal: principal.ok_or_else(|| format!("the controller's identity {} is not an IAM user or role session, which a simulation needs", me.arn)),
        name: me.arn.clone(),
        policy: CONTROLLER_POLICY,
        values,
        unknown,
    }
}

/// Another account's target role against iam/target-role-policy.json.
fn target_subject(ctx: &Context, account: &str) -> Subject {
    let role = ctx.config.accounts.role_arn(account);
    let values: BTreeMap<&'static str, String> = [("AccountId", account.to_string()), ("TargetRoleName", role_name(&role))].into();
    Subject { account: account.to_string(), principal: Ok(role.clone()), name: role, policy: TARGET_ROLE_POLICY, values, unknown: BTreeMap::new() }
}

/// One account's simulation: each action's verdict per statement, or why the simulation could not be used.
enum Simulated {
    Done(Vec<(StatementSimulation, Vec<SimulatedAction>)>),
    /// `refused`: IAM denied the simulation itself (so iam:SimulatePrincipalPolicy is missing).
    Unusable { why: String, refused: Option<String> },
}

async fn simulate(aws: &CaptureClients, principal: &str, statements: &[StatementSimulation]) -> Simulated {
    let mut done = Vec::new();
    for statement in statements {
        match aws.iam.simulate(principal, &statement.actions, &statement.resources).await {
            Ok(results) => done.push((statement.clone(), results)),
            // Denied or unavailable (an emulator without it, IAM down after the SDK's retries): EC2 dry runs
            // instead, saying why.
            Err(e) => {
                let refused = (e.class() == ErrorClass::AccessDenied).then(|| e.code.clone());
                return Simulated::Unusable { why: e.to_string(), refused };
            }
        }
    }
    Simulated::Done(done)
}

/// The Permissions check of one account and Region: the subject's policy simulated for its identity, else
/// the EC2 calls that offer a dry run tried with DryRun against `instance_id` (the first instance selected
/// there).
async fn permissions(
    aws: &CaptureClients,
    subject: &Subject,
    instance_id: Option<&str>,
    uid: &str,
    simulations: &mut BTreeMap<String, Simulated>,
) -> Result<ReadinessCheck, StepError> {
    let (policy_file, document) = subject.policy;
    let (statements, left_out) = statement_simulations(document, &subject.values);
    let mut found = PermissionFindings { principal: subject.name.clone(), policy: policy_file.to_string(), ..PermissionFindings::default() };
    found.unchecked = left_out
        .iter()
        .map(|(statement, placeholder)| match subject.unknown.get(placeholder.as_str()) {
            Some(why) => format!("{statement} ({why})"),
            None => format!("{statement} (no {placeholder} configured)"),
        })
        .collect();
    if !simulations.contains_key(&subject.account) {
        let outcome = match &subject.principal {
            Ok(principal) => simulate(aws, principal, &statements).await,
            Err(why) => Simulated::Unusable { why: why.clone(), refused: None },
        };
        simulations.insert(subject.account.clone(), outcome);
    }
    match &simulations[&subject.account] {
        Simulated::Done(results) => {
            found.method = "iam:SimulatePrincipalPolicy".into();
            if let Ok(principal) = &subject.principal {
                found.principal = principal.clone();
            }
            // An action may be in several statements (sts:AssumeRole: the presign role, the target roles): it
            // is allowed when allowed on every resource of every one.
            let mut allowed = BTreeSet::new();
            let mut denied: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (_, actions) in results {
                for action in actions {
                    if action.denied.is_empty() {
                        allowed.insert(action.action.clone());
                    }
                    for (resource, decision) in &action.denied {
                        let decision = if resource == "*" { decision.clone() } else { format!("{decision} on {resource}") };
                        denied.entry(action.action.clone()).or_default().push(decision);
                    }
                }
            }
            found.allowed = allowed.into_iter().filter(|a| !denied.contains_key(a)).collect();
            found.denied = denied.into_iter().map(|(action, decisions)| Denial { action, decision: decisions.join("; ") }).collect();
        }
        Simulated::Unusable { why, refused } => {
            found.method = format!("EC2 DryRun, as iam:SimulatePrincipalPolicy could not be used ({why})");
            let actions: BTreeSet<String> = statements.iter().flat_map(|s| s.actions.iter().cloned()).collect();
            if let Some(code) = refused.as_ref().filter(|_| actions.contains("iam:SimulatePrincipalPolicy")) {
                found.denied.push(Denial { action: "iam:SimulatePrincipalPolicy".into(), decision: code.clone() });
            }
            dry_runs(aws, instance_id, &actions, uid, &mut found).await?;
        }
    }
    Ok(permissions_check(&found))
}

/// The EC2 calls of `actions` that can be dry-run against an instance, tried with DryRun.
async fn dry_runs(aws: &CaptureClients, instance_id: Option<&str>, actions: &BTreeSet<String>, uid: &str, found: &mut PermissionFindings) -> Result<(), StepError> {
    let instance = match instance_id {
        Some(id) => aws.ec2.describe_instance(id).await.map_err(|e| retry_or_fail(e, &format!("instance {id}")))?,
        None => None,
    };
    let mut probes = Vec::new();
    if let Some(instance) = &instance {
        let id = instance.instance_id.clone();
        probes.push(DryRunProbe::CreateSnapshots { instance_id: id.clone() });
        probes.push(DryRunProbe::ModifyInstanceAttribute { instance_id: id.clone() });
        probes.push(DryRunProbe::CreateTags { instance_id: id });
        if let Some(vpc_id) = &instance.vpc_id {
            probes.push(DryRunProbe::CreateSecurityGroup { vpc_id: vpc_id.clone() });
        }
        if let Some(interface) = instance.interfaces.first() {
            probes.push(DryRunProbe::ModifyNetworkInterfaceAttribute { network_interface_id: interface.network_interface_id.clone(), group_ids: interface.security_group_ids.clone() });
        }
    }
    probes.retain(|p| actions.contains(p.action()));
    let capture_tags = [(tags::CAPTURE_UID.to_string(), uid.to_string())];
    for probe in &probes {
        match aws.ec2.dry_run(probe, &capture_tags).await {
            Ok(DryRunAnswer::Allowed) => found.allowed.push(probe.action().to_string()),
            Ok(DryRunAnswer::Denied(e)) => found.denied.push(Denial { action: probe.action().to_string(), decision: e.code }),
            Err(e) if e.is_retryable() => return Err(retry_or_fail(e, &format!("a dry run of {}", probe.action()))),
            Err(e) => found.unchecked.push(format!("{} (the dry run failed: {e})", probe.action())),
        }
    }
    let tried: BTreeSet<&str> = probes.iter().map(DryRunProbe::action).collect();
    let rest: Vec<&String> = actions.iter().filter(|a| !tried.contains(a.as_str()) && !found.denied.iter().any(|d| d.action == **a)).collect();
    if !rest.is_empty() {
        let why = match instance_id {
            None => "no instance is selected here to dry-run against",
            Some(_) if instance.is_none() => "the instance to dry-run against is gone",
            Some(_) => "they have no dry run",
        };
        found.unchecked.push(format!("{} action(s): {why}", rest.len()));
    }
    Ok(())
}

fn retry_or_fail(e: crate::aws::AwsError, what: &str) -> StepError {
    StepError::on_instance(e, what, Reason::TargetLookupFailed)
}

async fn own_identity(ctx: &Context) -> Result<Identity, StepError> {
    let sts = ctx.aws(&ctx.default_region()).store.sts;
    let identity = sts.get_caller_identity().send().await.map_err(|e| retry_or_fail(crate::aws::AwsError::from_sdk("sts:GetCallerIdentity", e), "the controller's identity"))?;
    Ok(Identity { account: identity.account().unwrap_or_default().to_string(), arn: identity.arn().unwrap_or_default().to_string() })
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
