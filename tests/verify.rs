//! `forensic-capture verify` on a fresh capture, and on tampered evidence.

mod support;

use std::process::Command;

use forensic_capture::api::ArtifactType;
use support::fixtures::{CaptureEnv, capture_yaml, set_instance_memory};

/// Runs `forensic-capture verify` against the stack; returns (success, output).
fn verify(manifest_uri: &str) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_forensic-capture"))
        .args(["verify", manifest_uri])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(support::stack().vars())
        .env("FC_S3_FORCE_PATH_STYLE", "true")
        .output()
        .unwrap();
    (output.status.success(), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

#[tokio::test]
async fn verify_passes_on_a_fresh_capture_and_names_each_tampered_artifact() {
    let stack = support::stack();
    let env = CaptureEnv::new("verify").await;
    let ec2 = stack.ec2().await;
    let s3 = stack.s3().await;
    let instance = support::run_instance(&ec2, 1, &[]).await.instance_id;
    set_instance_memory(&instance, 9 * 1024 * 1024);
    let _controller = env.start_controller("verify");
    env.apply(&capture_yaml("v", &instance, "")).await;
    let capture = env.wait_completed("v").await;
    let artifacts = capture.status.unwrap().artifacts;
    let uri_of = |kind: ArtifactType| artifacts.iter().find(|a| a.kind == kind).unwrap().uri.clone();
    let manifest = uri_of(ArtifactType::Manifest);

    let (ok, out) = verify(&manifest);
    assert!(ok, "{out}");
    assert!(out.contains("5 artifacts checked, 0 failed"), "{out}");

    // One byte of the memory image changed.
    let memory = uri_of(ArtifactType::MemoryImage);
    let (bucket, key) = memory.strip_prefix("s3://").unwrap().split_once('/').unwrap();
    let mut image = s3.get_object().bucket(bucket).key(key).send().await.unwrap().body.collect().await.unwrap().to_vec();
    image[4096] ^= 0xff;
    s3.put_object().bucket(bucket).key(key).body(image.into()).send().await.unwrap();
    let (ok, out) = verify(&manifest);
    assert!(!ok, "{out}");
    let line = out.lines().find(|l| l.contains("memory.lime")).unwrap();
    assert!(line.starts_with("FAIL") && line.contains("MISMATCH: expected sha256"), "{line}");

    // An artifact deleted.
    let volatile = uri_of(ArtifactType::VolatileData);
    let (bucket, key) = volatile.strip_prefix("s3://").unwrap().split_once('/').unwrap();
    s3.delete_object().bucket(bucket).key(key).send().await.unwrap();
    let (_, out) = verify(&manifest);
    let line = out.lines().find(|l| l.contains("volatile.tar.gz")).unwrap();
    assert!(line.starts_with("FAIL") && line.contains("MISSING"), "{line}");

    // A snapshot deleted.
    let snapshot = uri_of(ArtifactType::EbsSnapshot);
    ec2.delete_snapshot().snapshot_id(snapshot.rsplit('/').next().unwrap()).send().await.unwrap();
    let (_, out) = verify(&manifest);
    let line = out.lines().find(|l| l.contains(&snapshot)).unwrap();
    assert!(line.starts_with("FAIL") && line.contains("MISSING"), "{line}");
    assert!(out.contains("5 artifacts checked, 3 failed"), "{out}");
}
