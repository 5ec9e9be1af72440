//! Across accounts and regions: the controller in the stack's account (A) captures an instance in a workload
//! account (B) through a role session named after the capture, keeps the evidence in A, and reaches A's
//! bucket and signing key in their own region whatever the instance's. Every AWS call goes through a clean
//! fault proxy, whose request log says who signed each request and for which region; moto says which
//! account each session key belongs to (dev/moto-server keeps each session's SourceIdentity and tags).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use forensic_capture::api::{ArtifactType, ForensicCapture, Phase, Reason, StepState};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{
    controller::ControllerProcess,
    faults::{FaultProxy, get_json},
    fixtures::{CaptureEnv, download, set_instance_memory},
};

const ACCOUNT_B: &str = "222233334444";
const REQUESTER: &str = "alice@example.com";

fn capture_in(name: &str, instance_id: &str, target_extra: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: forensic-capture.dev/v1alpha1\nkind: ForensicCapture\nmetadata:\n  name: {name}\n  annotations:\n    forensic-capture.dev/requested-by: {REQUESTER}\nspec:\n  caseId: INC-4711\n  target:\n    instanceId: {instance_id}\n{target_extra}{spec_extra}"
    )
}

/// moto's assumed-role sessions (dev/moto-server).
async fn sessions() -> Vec<Value> {
    let value = get_json(&format!("{}/_moto-server/sts-sessions", support::stack().var("AWS_ENDPOINT_URL"))).await;
    value.as_array().cloned().expect("a list of sessions")
}

/// The proxy's request log: (service:operation, access key, region).
async fn requests(proxy: &FaultProxy) -> Vec<(String, String, String)> {
    let log = get_json(&format!("{}/_fault-proxy/requests", proxy.url)).await;
    log.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let field = |name: &str| r[name].as_str().unwrap_or_default().to_string();
            (field("operation"), field("access_key"), field("region"))
        })
        .collect()
}

fn service(operation: &str) -> &str {
    operation.split(':').next().unwrap_or_default()
}

fn step_states(capture: &ForensicCapture) -> BTreeMap<&'static str, StepState> {
    let status = capture.status.as_ref().unwrap();
    forensic_capture::api::Step::ALL.iter().filter_map(|s| s.record(status).map(|r| (s.name(), r.state))).collect()
}

async fn instance_groups(ec2: &aws_sdk_ec2::Client, instance_id: &str) -> BTreeSet<String> {
    let found = ec2.describe_instances().instance_ids(instance_id).send().await.unwrap();
    let instance = &found.reservations()[0].instances()[0];
    // The groups of its network interfaces: containment swaps those.
    instance.network_interfaces().iter().flat_map(|eni| eni.groups()).filter_map(|g| g.group_id().map(str::to_string)).collect()
}

#[tokio::test]
async fn a_capture_in_another_account_acts_there_through_a_session_named_after_it_and_keeps_the_evidence_home() {
    let stack = support::stack();
    let env = CaptureEnv::new("accounts").await;
    let ec2_a = stack.ec2().await;
    let ec2_b = aws_sdk_ec2::Client::new(&stack.aws_in(ACCOUNT_B).await);
    let s3 = stack.s3().await;
    let instance = support::run_instance(&ec2_b, 1, &[]).await;
    let id = instance.instance_id.clone();
    set_instance_memory(&id, 9 * 1024 * 1024);
    let groups_before = instance_groups(&ec2_b, &id).await;
    assert!(ec2_a.describe_instances().instance_ids(&id).send().await.is_err(), "the instance is not in account A");

    let proxy = FaultProxy::start(json!({})).await;
    let mut vars = env.controller_env();
    vars.extend(proxy.controller_env());
    vars.push(("FC_TARGET_ROLE_EXTERNAL_ID", "ir-external-id".into()));
    let _controller = ControllerProcess::start(&vars, &format!("{}-accounts", env.namespace));

    env.apply(&capture_in("b", &id, &format!("    accountId: \"{ACCOUNT_B}\"\n"), "")).await;
    let capture = env.wait_completed("b").await;
    let status = capture.status.clone().unwrap();
    let uid = capture.metadata.uid.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Isolated), "{status:#?}");
    assert!(step_states(&capture).values().all(|s| *s == StepState::Succeeded), "{:?}", step_states(&capture));
    assert_eq!(status.target.as_ref().unwrap().account_id.as_deref(), Some(ACCOUNT_B));

    // The evidence is in A's bucket, with correct hashes.
    for artifact in status.artifacts.iter().filter(|a| a.uri.starts_with("s3://")) {
        assert!(artifact.uri.starts_with(&format!("s3://{}/", env.bucket)), "{}", artifact.uri);
        let bytes = download(&s3, &artifact.uri).await;
        assert_eq!(artifact.sha256.as_deref(), Some(hex::encode(Sha256::digest(&bytes)).as_str()), "{}", artifact.uri);
    }
    // The snapshots are in B, tagged with the capture; A has none of them.
    let snapshots: Vec<String> = status.artifacts.iter().filter(|a| a.kind == ArtifactType::EbsSnapshot).map(|a| a.uri.rsplit('/').next().unwrap().to_string()).collect();
    assert_eq!(snapshots.len(), 2, "{status:#?}");
    let in_b = ec2_b.describe_snapshots().set_snapshot_ids(Some(snapshots.clone())).send().await.unwrap();
    for snapshot in in_b.snapshots() {
        assert_eq!(snapshot.owner_id(), Some(ACCOUNT_B));
        assert!(snapshot.tags().iter().any(|t| t.key() == Some("forensic-capture.dev/capture-uid") && t.value() == Some(uid.as_str())), "{snapshot:?}");
    }
    assert_eq!(in_b.snapshots().len(), 2);
    assert!(ec2_a.describe_snapshots().set_snapshot_ids(Some(snapshots.clone())).send().await.is_err(), "A sees none of B's snapshots");
    // Isolation applied in B.
    let groups_isolated = instance_groups(&ec2_b, &id).await;
    assert_ne!(groups_isolated, groups_before);
    let group_in_b = ec2_b.describe_security_groups().set_group_ids(Some(groups_isolated.iter().cloned().collect())).send().await.unwrap();
    assert!(group_in_b.security_groups().iter().all(|g| g.owner_id() == Some(ACCOUNT_B)));

    // One session for this capture in B, named after it, carrying who asked, the capture and the case.
    let ours: Vec<Value> = sessions().await.into_iter().filter(|s| s["sessionName"] == format!("forensic-capture-{uid}")).collect();
    assert!(!ours.is_empty(), "no session named after the capture");
    for session in &ours {
        assert_eq!(session["account"], ACCOUNT_B);
        assert_eq!(session["roleArn"], format!("arn:aws:iam::{ACCOUNT_B}:role/ForensicCaptureTarget"));
        assert_eq!(session["sourceIdentity"], REQUESTER);
        assert_eq!(session["externalId"], "ir-external-id");
        let tags: BTreeMap<String, String> =
            session["tags"].as_array().unwrap().iter().map(|t| (t["Key"].as_str().unwrap().into(), t["Value"].as_str().unwrap().into())).collect();
        assert_eq!(tags.get("forensic-capture:capture-uid"), Some(&uid));
        assert_eq!(tags.get("forensic-capture:case-id").map(String::as_str), Some("INC-4711"));
    }
    let b_keys: BTreeSet<String> = ours.iter().map(|s| s["accessKeyId"].as_str().unwrap().to_string()).collect();

    // Every call about the instance was signed with B's session; the evidence, the presign role and the
    // signing key with the controller's own identity.
    let log = requests(&proxy).await;
    let about_instance = ["ec2", "ssm", "autoscaling", "elasticloadbalancing", "iam"];
    let mut seen = BTreeSet::new();
    for (operation, key, _) in &log {
        if about_instance.contains(&service(operation)) {
            assert!(b_keys.contains(key), "{operation} was signed by {key}, not by the capture's session in B");
            seen.insert(service(operation).to_string());
        } else if ["s3", "kms", "sts"].contains(&service(operation)) {
            assert!(!b_keys.contains(key), "{operation} was signed by B's session");
        }
    }
    assert!(seen.contains("ec2") && seen.contains("ssm"), "the log holds the instance's calls: {seen:?}");

    // A release restores B's instance, through the same account.
    let release = env.release("b-release", "b", "contained by mistake").await;
    assert!(release.released_at.is_some(), "{release:?}");
    assert_eq!(instance_groups(&ec2_b, &id).await, groups_before, "B's instance has its groups back");
    let after_release = requests(&proxy).await;
    assert!(after_release[log.len()..].iter().any(|(op, _, _)| service(op) == "ec2"), "the release called EC2");
    let release_sessions: Vec<Value> = sessions().await.into_iter().filter(|s| s["sessionName"] == format!("forensic-capture-{uid}")).collect();
    let all_b_keys: BTreeSet<String> = release_sessions.iter().map(|s| s["accessKeyId"].as_str().unwrap().to_string()).collect();
    for (operation, key, _) in &after_release[log.len()..] {
        if about_instance.contains(&service(operation)) {
            assert!(all_b_keys.contains(key), "the release's {operation} was signed by {key}, not by a session of the capture in B");
        }
    }
}

#[tokio::test]
async fn a_role_that_cannot_be_assumed_fails_the_capture_naming_the_account_and_role_with_nothing_done() {
    let aws = support::iam::EnforcedAws::start("accounts-denied").await;
    let env = aws.capture_env("accounts-denied").await;
    let keys = aws.controller_identity(&env, &support::iam::controller_policy(&env)).await;
    let ec2_admin = aws_sdk_ec2::Client::new(&aws.admin_config().await);
    // The instance exists in A, so only the role stands between the controller and it: a capture naming B
    // must not find it, or anything else, without B's session.
    let instance = support::run_instance(&ec2_admin, 1, &[]).await;
    let role = format!("arn:aws:iam::{ACCOUNT_B}:role/NotGrantedToTheController");
    let mut vars = env.controller_env();
    vars.push(("FC_TARGET_ROLES", format!("{ACCOUNT_B}={role}")));
    let _controller = aws.start_controller_with(&env, &vars, &keys, "accounts-denied");

    env.apply(&capture_in("denied", &instance.instance_id, &format!("    accountId: \"{ACCOUNT_B}\"\n"), "")).await;
    let capture = env.wait_completed("denied").await;
    let status = capture.status.clone().unwrap();
    let failed = status.conditions.iter().find(|c| c.type_ == "Failed").expect("a Failed condition");
    assert_eq!(failed.status, "True", "{status:#?}");
    assert_eq!(failed.reason, Reason::TargetAccountAccessDenied.as_str(), "{status:#?}");
    for needle in [ACCOUNT_B, role.as_str(), "sts:AssumeRole", "AccessDenied", instance.instance_id.as_str()] {
        assert!(failed.message.contains(needle), "the message names {needle}: {}", failed.message);
    }
    assert!(status.target.is_none(), "nothing was resolved: {status:#?}");
    assert!(status.artifacts.is_empty() && status.isolation.is_none(), "{status:#?}");
    assert!(step_states(&capture).values().all(|s| *s == StepState::Skipped), "{:?}", step_states(&capture));
    let snapshots = ec2_admin.describe_snapshots().owner_ids("self").send().await.unwrap();
    assert!(snapshots.snapshots().iter().all(|s| s.tags().iter().all(|t| t.key() != Some("forensic-capture.dev/capture-uid"))), "no snapshot taken");
}

#[tokio::test]
async fn an_instance_in_another_region_is_captured_with_urls_and_signature_of_the_evidence_region() {
    let stack = support::stack();
    let home = stack.region().to_string();
    let away = if home == "eu-west-1" { "us-west-2" } else { "eu-west-1" };
    let env = CaptureEnv::new("regions").await;
    let base = stack.aws().await;
    let ec2_away = aws_sdk_ec2::Client::from_conf(aws_sdk_ec2::config::Builder::from(&base).region(aws_sdk_ec2::config::Region::new(away)).build());
    let kms = aws_sdk_kms::Client::new(&base);
    let key = kms.create_key().key_usage(KeyUsageType::SignVerify).key_spec(KeySpec::EccNistP256).send().await.unwrap();
    let key_arn = key.key_metadata().unwrap().arn().unwrap().to_string();
    assert!(key_arn.contains(&format!(":{home}:")), "the key is in the home region: {key_arn}");
    let instance = support::run_instance(&ec2_away, 1, &[]).await;
    set_instance_memory(&instance.instance_id, 9 * 1024 * 1024);

    let proxy = FaultProxy::start(json!({})).await;
    let mut vars = env.controller_env();
    vars.extend(proxy.controller_env());
    vars.push(("FC_KMS_SIGNING_KEY_ID", key_arn.clone()));
    let _controller = ControllerProcess::start(&vars, &format!("{}-regions", env.namespace));

    env.apply(&capture_in("away", &instance.instance_id, &format!("    region: {away}\n"), "")).await;
    let capture = env.wait_completed("away").await;
    let status = capture.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Isolated), "{status:#?}");
    assert!(step_states(&capture).values().all(|s| *s == StepState::Succeeded), "{:?}", step_states(&capture));
    assert_eq!(status.target.as_ref().unwrap().region, away);
    assert!(status.artifacts.iter().any(|a| a.kind == ArtifactType::ManifestSignature), "the manifest is signed: {status:#?}");
    let warnings: Vec<_> = status.conditions.iter().filter(|c| c.reason.contains("Signing")).collect();
    assert!(warnings.is_empty(), "{warnings:?}");

    // Which region each request was signed for: the instance's calls in its own, the evidence and the key
    // in the home region, and so every presigned URL the instance used.
    let log = requests(&proxy).await;
    let mut regions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (operation, _, region) in &log {
        regions.entry(service(operation).to_string()).or_default().insert(region.clone());
    }
    for about_instance in ["ec2", "ssm"] {
        assert_eq!(regions.get(about_instance), Some(&BTreeSet::from([away.to_string()])), "{about_instance}: {regions:?}");
    }
    for home_service in ["s3", "kms", "sts"] {
        assert_eq!(regions.get(home_service), Some(&BTreeSet::from([home.clone()])), "{home_service}: {regions:?}");
    }
    let uploads = log.iter().filter(|(op, _, _)| op == "s3:UploadPart" || op == "s3:PutObject").count();
    assert!(uploads > 0, "the instance's presigned uploads went through the proxy too");

    // The snapshots are where the instance is, and `verify` finds them there and checks the signature with
    // the key in its region.
    let manifest = status.artifacts.iter().find(|a| a.kind == ArtifactType::Manifest).unwrap().uri.clone();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_forensic-capture"))
        .args(["verify", &manifest, "--require-signature"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(stack.vars())
        .env("FC_S3_FORCE_PATH_STYLE", "true")
        .output()
        .unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{out}");
    assert!(out.contains("signature valid"), "{out}");
    assert!(out.lines().filter(|l| l.contains("snapshot")).all(|l| l.starts_with("OK")), "{out}");
}

#[tokio::test]
async fn an_instance_that_is_not_in_the_named_account_is_not_found_there_naming_the_account() {
    let stack = support::stack();
    let env = CaptureEnv::new("accounts-missing").await;
    // The instance is in A; the capture says it is in B, whose session cannot see it.
    let instance = support::run_instance(&stack.ec2().await, 0, &[]).await.instance_id;
    let _controller = env.start_controller("accounts-missing");
    env.apply(&capture_in("elsewhere", &instance, &format!("    accountId: \"{ACCOUNT_B}\"\n"), "")).await;
    let capture = env.wait_completed("elsewhere").await;
    let status = capture.status.clone().unwrap();
    let failed = status.conditions.iter().find(|c| c.type_ == "Failed").expect("a Failed condition");
    assert_eq!((failed.status.as_str(), failed.reason.as_str()), ("True", Reason::InstanceNotFound.as_str()), "{status:#?}");
    assert!(failed.message.contains(&format!("account {ACCOUNT_B}")) && failed.message.contains(&instance), "{}", failed.message);
    assert!(status.artifacts.is_empty() && status.isolation.is_none(), "{status:#?}");
}

const ACCOUNT_C: &str = "666677778888";

fn config_in_region(config: &aws_config::SdkConfig, region: &str) -> aws_config::SdkConfig {
    config.to_builder().region(aws_config::Region::new(region.to_string())).build()
}

async fn create_volume_permissions(ec2: &aws_sdk_ec2::Client, snapshot_id: &str) -> Vec<String> {
    use aws_sdk_ec2::types::SnapshotAttributeName;
    let attribute = ec2.describe_snapshot_attribute().snapshot_id(snapshot_id).attribute(SnapshotAttributeName::CreateVolumePermission).send().await.unwrap();
    attribute.create_volume_permissions().iter().filter_map(|p| p.user_id().map(str::to_string)).collect()
}

/// The hand-over to a forensic account (C) in another region: the snapshot under B's AWS managed key is
/// re-encrypted in B to the share key, shared with C, copied by C under C's key and unshared; the unencrypted
/// one is shared and copied as it is. Every copy is recorded, tagged, and checked by `verify` through
/// read-only roles in B and C.
#[tokio::test]
async fn snapshots_are_handed_to_a_forensic_account_under_its_key_with_every_intermediate_recorded() {
    let stack = support::stack();
    let home = stack.region().to_string();
    let region_c = if home == "eu-central-1" { "eu-west-1" } else { "eu-central-1" };
    let env = CaptureEnv::new("forensic-copy").await;
    let config_b = stack.aws_in(ACCOUNT_B).await;
    let config_c = config_in_region(&stack.aws_in(ACCOUNT_C).await, region_c);
    let (ec2_b, ec2_c) = (aws_sdk_ec2::Client::new(&config_b), aws_sdk_ec2::Client::new(&config_c));
    // C's key for the copies; its ARN is the share key too (its key policy would admit B to encrypt with it).
    let key_c = aws_sdk_kms::Client::new(&config_c).create_key().description("forensic copies").send().await.unwrap();
    let key_c = key_c.key_metadata().unwrap().arn().unwrap().to_string();
    let id = support::run_instance_with_an_encrypted_root(&ec2_b).await;
    set_instance_memory(&id, 9 * 1024 * 1024);

    // Half of the copies and shares are made but their answers lost (the connection cut mid-response): the
    // controller must find what it made by its tags rather than make it twice.
    let faults = json!({"seed": 13, "rules": [
        {"service": "ec2", "operation": "CopySnapshot", "share": 0.5, "faults": ["reset"]},
        {"service": "ec2", "operation": "ModifySnapshotAttribute", "share": 0.5, "faults": ["reset"]}
    ]});
    let proxy = FaultProxy::start(faults).await;
    let mut vars = env.controller_env();
    vars.extend(proxy.controller_env());
    vars.push(("FC_FORENSIC_ACCOUNT_ID", ACCOUNT_C.into()));
    vars.push(("FC_FORENSIC_REGION", region_c.into()));
    let _controller = ControllerProcess::start(&vars, &format!("{}-forensic-copy", env.namespace));
    // The spec names the key; the account and region come from the controller.
    let spec = format!("  disk:\n    forensicCopy:\n      kmsKeyId: {key_c}\n");
    env.apply(&capture_in("handover", &id, &format!("    accountId: \"{ACCOUNT_B}\"\n"), &spec)).await;
    let capture = env.wait_completed("handover").await;
    let status = capture.status.clone().unwrap();
    let uid = capture.metadata.uid.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Isolated), "{status:#?}");
    assert!(step_states(&capture).values().all(|s| *s == StepState::Succeeded), "{:?}", step_states(&capture));
    assert_eq!(step_states(&capture).get("forensicCopy"), Some(&StepState::Succeeded));
    let copied = status.conditions.iter().find(|c| c.type_ == "ForensicCopied").expect("a ForensicCopied condition");
    assert_eq!((copied.status.as_str(), copied.reason.as_str()), ("True", Reason::ForensicCopied.as_str()), "{copied:?}");

    let originals: Vec<_> = status.artifacts.iter().filter(|a| a.kind == ArtifactType::EbsSnapshot).collect();
    assert_eq!(originals.len(), 2, "{status:#?}");
    let copies = |purpose: &str| -> Vec<_> {
        status.artifacts.iter().filter(|a| a.kind == ArtifactType::EbsSnapshotCopy && a.copy.as_ref().unwrap().purpose == purpose).cloned().collect()
    };
    let (forensic, shareable) = (copies("Forensic"), copies("Shareable"));
    assert_eq!(forensic.len(), 2, "one forensic copy per snapshot: {status:#?}");
    assert_eq!(shareable.len(), 1, "only the snapshot under the AWS managed key is re-encrypted: {status:#?}");
    let snapshot_id = |uri: &str| uri.rsplit('/').next().unwrap().to_string();

    // B: the original under B's AWS managed key was never shared; its re-encrypted copy is under the share
    // key, tagged, and no longer shared; the unencrypted original is no longer shared either.
    let managed_b = aws_sdk_kms::Client::new(&config_b).describe_key().key_id("alias/aws/ebs").send().await.unwrap();
    let managed_b = managed_b.key_metadata().unwrap().arn().unwrap().to_string();
    for original in &originals {
        let described = ec2_b.describe_snapshots().snapshot_ids(snapshot_id(&original.uri)).send().await.unwrap();
        let described = &described.snapshots()[0];
        if described.encrypted() == Some(true) {
            assert_eq!(described.kms_key_id(), Some(managed_b.as_str()), "the root's snapshot is under B's AWS managed key");
        }
        assert!(create_volume_permissions(&ec2_b, &snapshot_id(&original.uri)).await.is_empty(), "{} is shared with nobody", original.uri);
    }
    let shareable = &shareable[0];
    let shareable_copy = shareable.copy.as_ref().unwrap();
    assert_eq!(shareable_copy.account_id.as_deref(), Some(ACCOUNT_B));
    assert_eq!(shareable_copy.kms_key_id.as_deref(), Some(key_c.as_str()));
    let in_b = ec2_b.describe_snapshots().snapshot_ids(snapshot_id(&shareable.uri)).send().await.unwrap();
    let in_b = &in_b.snapshots()[0];
    assert_eq!((in_b.owner_id(), in_b.kms_key_id()), (Some(ACCOUNT_B), Some(key_c.as_str())));
    assert!(create_volume_permissions(&ec2_b, &snapshot_id(&shareable.uri)).await.is_empty(), "the share was removed");

    // C: each copy is C's, in C's region, under C's key, tagged with the capture and the snapshot it holds.
    for copy in &forensic {
        let record = copy.copy.as_ref().unwrap();
        assert_eq!((record.account_id.as_deref(), record.region.as_str()), (Some(ACCOUNT_C), region_c));
        assert!(copy.uri.starts_with(&format!("arn:aws:ec2:{region_c}::snapshot/")), "{}", copy.uri);
        assert!(record.share_removed_at.is_some(), "{record:?}");
        assert!(originals.iter().any(|o| snapshot_id(&o.uri) == record.source_snapshot_id), "{record:?}");
        let described = ec2_c.describe_snapshots().snapshot_ids(snapshot_id(&copy.uri)).send().await.unwrap();
        let described = &described.snapshots()[0];
        assert_eq!(described.owner_id(), Some(ACCOUNT_C));
        assert_eq!((described.encrypted(), described.kms_key_id()), (Some(true), Some(key_c.as_str())));
        let tags: BTreeMap<&str, &str> = described.tags().iter().filter_map(|t| Some((t.key()?, t.value()?))).collect();
        assert_eq!(tags.get("forensic-capture.dev/capture-uid"), Some(&uid.as_str()));
        assert_eq!(tags.get("forensic-capture.dev/copy-of"), Some(&record.source_snapshot_id.as_str()));
        assert_eq!(tags.get("forensic-capture.dev/case-id"), Some(&"INC-4711"));
    }
    // Exactly one copy of each kind per snapshot, whatever answers were lost.
    let counters = proxy.counters().await;
    let resets = |key: &str| support::faults::count(&counters, key, "faults.reset");
    assert!(resets("ec2:CopySnapshot") > 0 && resets("ec2:ModifySnapshotAttribute") > 0, "answers were lost: {}", counters["operations"]);
    let tagged = |ec2: aws_sdk_ec2::Client, purpose: &'static str| {
        let uid = uid.clone();
        async move {
            let found = ec2
                .describe_snapshots()
                .owner_ids("self")
                .filters(aws_sdk_ec2::types::Filter::builder().name("tag:forensic-capture.dev/capture-uid").values(uid).build())
                .filters(aws_sdk_ec2::types::Filter::builder().name("tag:forensic-capture.dev/copy-purpose").values(purpose).build())
                .send()
                .await
                .unwrap();
            found.snapshots().iter().filter_map(|s| s.snapshot_id().map(str::to_string)).collect::<BTreeSet<_>>()
        }
    };
    let recorded = |artifacts: &[forensic_capture::api::Artifact]| artifacts.iter().map(|a| snapshot_id(&a.uri)).collect::<BTreeSet<_>>();
    assert_eq!(tagged(ec2_c.clone(), "Forensic").await, recorded(&forensic), "C holds exactly the recorded copies");
    assert_eq!(tagged(ec2_b.clone(), "Shareable").await, recorded(std::slice::from_ref(shareable)), "B holds exactly the recorded copy");
    let from_shareable: Vec<_> = forensic.iter().filter_map(|c| c.copy.as_ref().unwrap().copied_from_snapshot_id.clone()).collect();
    assert_eq!(from_shareable, vec![snapshot_id(&shareable.uri)], "the root's copy was made from its re-encrypted copy");

    // The forensic account was reached through its role, in a session named after the capture.
    let in_c: Vec<Value> = sessions().await.into_iter().filter(|s| s["account"] == ACCOUNT_C && s["sessionName"] == format!("forensic-capture-{uid}")).collect();
    assert!(!in_c.is_empty(), "a session in C named after the capture");
    assert!(in_c.iter().all(|s| s["roleArn"] == format!("arn:aws:iam::{ACCOUNT_C}:role/ForensicCaptureCopy") && s["sourceIdentity"] == REQUESTER));

    // verify checks the originals in B and the copies in C through read-only roles there.
    let manifest = status.artifacts.iter().find(|a| a.kind == ArtifactType::Manifest).unwrap().uri.clone();
    let verify = |roles: &[String]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_forensic-capture"));
        command.arg("verify").arg(&manifest);
        for role in roles {
            command.arg("--account-role").arg(role);
        }
        let output = command.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).envs(stack.vars()).env("FC_S3_FORCE_PATH_STYLE", "true").output().unwrap();
        (output.status.success(), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
    };
    let roles = [format!("{ACCOUNT_B}=arn:aws:iam::{ACCOUNT_B}:role/ForensicCaptureReadOnly"), format!("{ACCOUNT_C}=arn:aws:iam::{ACCOUNT_C}:role/ForensicCaptureReadOnly")];
    let (ok, out) = verify(&roles);
    assert!(ok, "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("OK") && l.contains(&format!("exists in account {ACCOUNT_C}"))).count(), 2, "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("OK") && l.contains(&format!("exists in account {ACCOUNT_B}"))).count(), 1, "{out}");
    // Without the roles, the auditor's own account sees none of them.
    let (ok, out) = verify(&[]);
    assert!(!ok && out.lines().filter(|l| l.starts_with("FAIL") && l.contains("snapshot")).count() >= 5, "{out}");
    // A copy deleted in C (no lock was asked for here, so C's own credentials can) fails verify, by name.
    let deleted = snapshot_id(&forensic[0].uri);
    ec2_c.delete_snapshot().snapshot_id(&deleted).send().await.unwrap();
    let (ok, out) = verify(&roles);
    assert!(!ok, "{out}");
    let failures: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(failures.len(), 1, "only the deleted copy fails: {out}");
    assert!(failures[0].contains(&deleted), "{out}");
}

/// Copies asked for with nothing to say where they go fail on their own, after containment, naming what is
/// missing; a forensic account that is the instance's own gets its copies without any share.
#[tokio::test]
async fn copies_without_a_destination_fail_alone_and_copies_in_the_instances_own_account_need_no_share() {
    let stack = support::stack();
    let env = CaptureEnv::new("forensic-copy-own").await;
    let ec2 = stack.ec2().await;
    let own_account = support::iam::ACCOUNT_ID;
    let key = aws_sdk_kms::Client::new(&stack.aws().await).create_key().description("copies").send().await.unwrap();
    let key = key.key_metadata().unwrap().arn().unwrap().to_string();
    let nowhere = support::run_instance(&ec2, 0, &[]).await.instance_id;
    let own = support::run_instance_with_an_encrypted_root(&ec2).await;
    for id in [&nowhere, &own] {
        set_instance_memory(id, 9 * 1024 * 1024);
    }
    let _controller = env.start_controller("forensic-copy-own");
    env.apply(&capture_in("nowhere", &nowhere, "", "  disk:\n    forensicCopy: {}\n")).await;
    env.apply(&capture_in("own", &own, "", &format!("  disk:\n    forensicCopy:\n      accountId: \"{own_account}\"\n      kmsKeyId: {key}\n"))).await;

    let capture = env.wait_completed("nowhere").await;
    let status = capture.status.clone().unwrap();
    let states = step_states(&capture);
    assert_eq!((states["disk"], states["isolation"], states["forensicCopy"]), (StepState::Succeeded, StepState::Succeeded, StepState::Failed), "{states:?}");
    let failed = status.conditions.iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!(failed.reason, Reason::ForensicCopyNotConfigured.as_str(), "{failed:?}");
    assert!(failed.message.contains(&nowhere) && failed.message.contains("--forensic-account-id"), "{}", failed.message);
    assert!(status.artifacts.iter().all(|a| a.kind != ArtifactType::EbsSnapshotCopy), "{status:#?}");

    let capture = env.wait_completed("own").await;
    let status = capture.status.clone().unwrap();
    assert!(step_states(&capture).values().all(|s| *s == StepState::Succeeded), "{:?}", step_states(&capture));
    let copies: Vec<_> = status.artifacts.iter().filter(|a| a.kind == ArtifactType::EbsSnapshotCopy).collect();
    assert_eq!(copies.len(), 2, "two forensic copies, no shareable one: {status:#?}");
    for copy in copies {
        let record = copy.copy.as_ref().unwrap();
        assert_eq!((record.purpose.as_str(), record.copied_from_snapshot_id.as_deref(), record.share_removed_at.as_ref()), ("Forensic", None, None), "{record:?}");
        let described = ec2.describe_snapshots().snapshot_ids(copy.uri.rsplit('/').next().unwrap()).send().await.unwrap();
        assert_eq!(described.snapshots()[0].kms_key_id(), Some(key.as_str()));
    }
    for original in status.artifacts.iter().filter(|a| a.kind == ArtifactType::EbsSnapshot) {
        assert!(create_volume_permissions(&ec2, original.uri.rsplit('/').next().unwrap()).await.is_empty(), "nothing shared");
    }
}
