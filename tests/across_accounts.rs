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
