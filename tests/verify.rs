//! Chain of custody on the proof environment: `forensic-capture verify` on a fresh signed capture and on each
//! kind of tampering, and Object Lock on every artifact.

mod support;

use std::process::Command;

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use forensic_capture::{
    api::{ArtifactType, ForensicCapture},
    custody::SignatureDocument,
};
use support::{
    controller::ControllerProcess,
    fixtures::{CaptureEnv, capture_yaml, download, set_instance_memory, split_s3_uri},
};

/// Runs `forensic-capture verify <target> [args]` against the stack; returns (success, output).
fn verify(target: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_forensic-capture"))
        .arg("verify")
        .arg(target)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(support::stack().vars())
        .env("FC_S3_FORCE_PATH_STYLE", "true")
        .output()
        .unwrap();
    (output.status.success(), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

fn line<'a>(out: &'a str, needle: &str) -> &'a str {
    out.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle} in:\n{out}"))
}

async fn put(s3: &aws_sdk_s3::Client, uri: &str, body: Vec<u8>) {
    let (bucket, key) = split_s3_uri(uri);
    s3.put_object().bucket(bucket).key(key).body(body.into()).send().await.unwrap();
}

fn uri_of(capture: &ForensicCapture, kind: ArtifactType) -> String {
    capture.status.as_ref().unwrap().artifacts.iter().find(|a| a.kind == kind).unwrap_or_else(|| panic!("no {kind:?} artifact")).uri.clone()
}

#[tokio::test]
async fn verify_passes_on_a_signed_capture_and_names_each_kind_of_tampering() {
    let stack = support::stack();
    let env = CaptureEnv::new("verify").await;
    let ec2 = stack.ec2().await;
    let s3 = stack.s3().await;
    let kms = aws_sdk_kms::Client::new(&stack.aws().await);
    let key = kms.create_key().key_usage(KeyUsageType::SignVerify).key_spec(KeySpec::EccNistP256).send().await.unwrap();
    let key_arn = key.key_metadata().unwrap().arn().unwrap().to_string();
    let instance = support::run_instance(&ec2, 1, &[]).await.instance_id;
    set_instance_memory(&instance, 9 * 1024 * 1024);
    let mut vars = env.controller_env();
    vars.push(("FC_KMS_SIGNING_KEY_ID", key.key_metadata().unwrap().key_id().to_string()));
    let _controller = ControllerProcess::start(&vars, &format!("{}-verify", env.namespace));
    env.apply(&capture_yaml("v", &instance, "")).await;
    let capture = env.wait_completed("v").await;
    let manifest = uri_of(&capture, ArtifactType::Manifest);
    let signature_uri = uri_of(&capture, ArtifactType::ManifestSignature);
    assert_eq!(signature_uri, format!("{manifest}.sig"));
    let signature_artifact = capture.status.as_ref().unwrap().artifacts.iter().find(|a| a.kind == ArtifactType::ManifestSignature).unwrap();
    assert_eq!(signature_artifact.key_id.as_deref(), Some(key_arn.as_str()), "the signing key is recorded");

    // The manifest describes every snapshot with its volume, times and tags.
    let manifest_json: serde_json::Value = serde_json::from_slice(&download(&s3, &manifest).await).unwrap();
    let snapshot = &manifest_json["snapshots"][0];
    assert!(snapshot["snapshotId"].as_str().unwrap().starts_with("snap-"), "{snapshot}");
    assert!(snapshot["volumeId"].as_str().unwrap().starts_with("vol-"), "{snapshot}");
    assert!(snapshot["startedAt"].is_string() && snapshot["completedAt"].is_string(), "{snapshot}");
    assert_eq!(snapshot["tags"]["forensic-capture.dev/capture-uid"], capture.metadata.uid.clone().unwrap());
    let memory_entry = manifest_json["artifacts"].as_array().unwrap().iter().find(|a| a["name"] == "memory").unwrap();
    assert!(memory_entry["startedAt"].is_string() && memory_entry["createdAt"].is_string(), "{memory_entry}");

    let (ok, out) = verify(&manifest, &[]);
    assert!(ok, "{out}");
    assert!(line(&out, "manifest-signature").contains(&format!("signature valid: ECDSA_SHA_256")), "{out}");
    assert!(out.contains("6 checks, 0 failed"), "{out}");
    let by_capture = format!("{}/v", env.namespace);
    let (ok, out) = verify(&by_capture, &[]);
    assert!(ok, "{out}");
    assert!(line(&out, "OK   manifest ").contains("as recorded in the capture's status"), "{out}");

    // The signature replaced: a genuine KMS signature, but over other bytes.
    let original_signature = download(&s3, &signature_uri).await;
    let mut forged: SignatureDocument = serde_json::from_slice(&original_signature).unwrap();
    let other = kms
        .sign()
        .key_id(&key_arn)
        .message(aws_sdk_kms::primitives::Blob::new(vec![7u8; 32]))
        .message_type(aws_sdk_kms::types::MessageType::Digest)
        .signing_algorithm(aws_sdk_kms::types::SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap();
    use base64::Engine;
    forged.signature = base64::engine::general_purpose::STANDARD.encode(other.signature().unwrap().as_ref());
    put(&s3, &signature_uri, serde_json::to_vec(&forged).unwrap()).await;
    let (ok, out) = verify(&manifest, &[]);
    assert!(!ok, "{out}");
    let l = line(&out, "manifest-signature");
    assert!(l.starts_with("FAIL") && l.contains("MISMATCH: KMS reports the signature invalid"), "{l}");
    put(&s3, &signature_uri, original_signature).await;

    // The manifest edited: the case ID changed.
    let original_manifest = download(&s3, &manifest).await;
    let edited = String::from_utf8(original_manifest.clone()).unwrap().replace("INC-4711", "INC-4712");
    put(&s3, &manifest, edited.into_bytes()).await;
    let (ok, out) = verify(&manifest, &[]);
    assert!(!ok, "{out}");
    let l = line(&out, "manifest-signature");
    assert!(l.starts_with("FAIL") && l.contains("MISMATCH: the signature covers manifest sha256"), "{l}");
    let (ok, out) = verify(&by_capture, &[]);
    assert!(!ok, "{out}");
    assert!(line(&out, "FAIL manifest ").contains("MISMATCH: the capture's status recorded sha256"), "{out}");
    put(&s3, &manifest, original_manifest).await;

    // The signature deleted: verifying the capture requires it, because its status recorded one.
    let (bucket, signature_key) = split_s3_uri(&signature_uri);
    s3.delete_object().bucket(bucket).key(signature_key).send().await.unwrap();
    let (ok, out) = verify(&by_capture, &[]);
    assert!(!ok, "{out}");
    assert!(line(&out, "manifest-signature").contains("MISSING: no signature beside"), "{out}");
    let (ok, out) = verify(&manifest, &[]);
    assert!(ok, "{out}");
    assert!(line(&out, "manifest-signature").contains("UNSIGNED"), "{out}");
    let (ok, _) = verify(&manifest, &["--require-signature"]);
    assert!(!ok);

    // One byte of the memory image changed.
    let memory = uri_of(&capture, ArtifactType::MemoryImage);
    let mut image = download(&s3, &memory).await;
    image[4096] ^= 0xff;
    put(&s3, &memory, image).await;
    let (ok, out) = verify(&manifest, &[]);
    assert!(!ok, "{out}");
    let l = line(&out, "memory.lime");
    assert!(l.starts_with("FAIL") && l.contains("MISMATCH: expected sha256"), "{l}");

    // An artifact deleted.
    let volatile = uri_of(&capture, ArtifactType::VolatileData);
    let (bucket, key) = split_s3_uri(&volatile);
    s3.delete_object().bucket(bucket).key(key).send().await.unwrap();
    let (_, out) = verify(&manifest, &[]);
    let l = line(&out, "volatile.tar.gz");
    assert!(l.starts_with("FAIL") && l.contains("MISSING"), "{l}");

    // A snapshot deleted.
    let snapshot = uri_of(&capture, ArtifactType::EbsSnapshot);
    ec2.delete_snapshot().snapshot_id(snapshot.rsplit('/').next().unwrap()).send().await.unwrap();
    let (_, out) = verify(&manifest, &[]);
    let l = line(&out, &snapshot);
    assert!(l.starts_with("FAIL") && l.contains("MISSING"), "{l}");
    assert!(out.contains("6 checks, 3 failed"), "{out}");
}

#[tokio::test]
async fn with_object_lock_every_artifact_is_retained_and_deleting_a_version_is_refused() {
    use aws_sdk_s3::types::{DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode, ObjectLockRule};
    let stack = support::stack();
    let mut env = CaptureEnv::new("objectlock").await;
    let ec2 = stack.ec2().await;
    let s3 = stack.s3().await;
    // A bucket created with Object Lock and a default retention, as docs/evidence-bucket.md sets it up: with a
    // default retention, S3 refuses any PUT without Content-MD5 or a checksum, so the instance scripts' uploads
    // are checked for it too.
    let bucket = support::unique("locked").to_lowercase();
    s3.create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(true)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(stack.region()))
                .build(),
        )
        .send()
        .await
        .unwrap();
    s3.put_object_lock_configuration()
        .bucket(&bucket)
        .object_lock_configuration(
            ObjectLockConfiguration::builder()
                .object_lock_enabled(ObjectLockEnabled::Enabled)
                .rule(ObjectLockRule::builder().default_retention(DefaultRetention::builder().mode(ObjectLockRetentionMode::Governance).days(1).build()).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    env.bucket = bucket.clone();
    let instance = support::run_instance(&ec2, 1, &[]).await.instance_id;
    set_instance_memory(&instance, 9 * 1024 * 1024);
    let mut vars = env.controller_env();
    vars.push(("FC_OBJECT_LOCK_MODE", "COMPLIANCE".into()));
    vars.push(("FC_OBJECT_LOCK_RETENTION_DAYS", "2".into()));
    vars.push(("FC_OBJECT_LOCK_LEGAL_HOLD", "true".into()));
    let _controller = ControllerProcess::start(&vars, &format!("{}-objectlock", env.namespace));
    env.apply(&capture_yaml("locked", &instance, "")).await;
    let capture = env.wait_completed("locked").await;
    let status = capture.status.clone().unwrap();
    assert_eq!(status.phase, Some(forensic_capture::api::Phase::Isolated), "{:#?}", status);

    let objects: Vec<_> = status.artifacts.iter().filter(|a| a.uri.starts_with("s3://")).collect();
    assert_eq!(objects.len(), 4, "memory, volatile, symbols, manifest: {:#?}", status.artifacts);
    for artifact in &objects {
        let lock = artifact.lock.as_ref().unwrap_or_else(|| panic!("{} has no lock recorded", artifact.name));
        assert_eq!(lock.mode.as_deref(), Some("COMPLIANCE"), "{}", artifact.name);
        assert!(lock.legal_hold, "{}", artifact.name);
        let (bucket, key) = split_s3_uri(&artifact.uri);
        // Read back through HeadObject: moto answers GetObjectRetention with the object's body.
        let head = s3.head_object().bucket(bucket).key(key).send().await.unwrap();
        assert_eq!(head.object_lock_mode().map(|m| m.as_str()), Some("COMPLIANCE"), "{}", artifact.name);
        assert_eq!(head.object_lock_legal_hold_status().map(|s| s.as_str()), Some("ON"), "{}", artifact.name);
        let until = head.object_lock_retain_until_date().expect("retain-until date").secs();
        let expected = lock.until.as_ref().unwrap().0.as_second();
        assert!((until - expected).abs() <= 1, "{}: S3 retains until {until}, status says {expected}", artifact.name);
    }

    // Deleting the memory image's version is refused, and the image is still there.
    let memory = uri_of(&capture, ArtifactType::MemoryImage);
    let (bucket, key) = split_s3_uri(&memory);
    let version = s3.head_object().bucket(bucket).key(key).send().await.unwrap().version_id().unwrap().to_string();
    let refused = s3.delete_object().bucket(bucket).key(key).version_id(&version).send().await.unwrap_err();
    let refused = refused.into_service_error();
    assert_eq!(aws_sdk_s3::error::ProvideErrorMetadata::code(&refused), Some("AccessDenied"), "{refused:?}");
    s3.head_object().bucket(bucket).key(key).version_id(&version).send().await.expect("the locked version survives");
    let (ok, out) = verify(&uri_of(&capture, ArtifactType::Manifest), &[]);
    assert!(ok, "{out}");
}
