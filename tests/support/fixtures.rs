//! Capture fixtures: the CRD installed, an evidence bucket, the fake AVML uploaded as the operator would, a
//! namespace, a controller configured for all of it.

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use forensic_capture::api::ForensicCapture;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, api::{Patch, PatchParams}};
use sha2::{Digest, Sha256};

use super::{controller::ControllerProcess, stack, unique};

pub const PRESIGN_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/forensic-capture-presign";

/// Applies the committed CRDs (every document of crds/forensic-capture.dev.yaml) and waits until served.
pub async fn install_crd(client: &kube::Client) {
    use serde::Deserialize;
    let yaml = std::fs::read_to_string(super::repo_root().join("crds/forensic-capture.dev.yaml")).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for document in serde_yaml::Deserializer::from_str(&yaml) {
        let crd = CustomResourceDefinition::deserialize(document).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(&name, &PatchParams::apply("forensic-capture-tests").force(), &Patch::Apply(crd)).await.expect("apply the committed CRD");
        kube::runtime::wait::await_condition(crds.clone(), &name, kube::runtime::wait::conditions::is_crd_established()).await.unwrap();
    }
}

pub async fn bucket(s3: &aws_sdk_s3::Client) -> String {
    let name = unique("evidence").to_lowercase();
    s3.create_bucket()
        .bucket(&name)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(stack().region()))
                .build(),
        )
        .send()
        .await
        .expect("create bucket");
    name
}

/// Uploads the fake AVML binary to `s3://<bucket>/tools/avml-x86_64`; returns (uri, sha256).
pub async fn upload_avml(s3: &aws_sdk_s3::Client, bucket: &str) -> (String, String) {
    let target_dir = std::env::var("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| super::repo_root().join("target"));
    let path = target_dir.join("debug/fake-avml");
    let binary = std::fs::read(&path).unwrap_or_else(|e| panic!("fake-avml at {path:?} ({e}); dev/stack up builds it"));
    let sha = hex::encode(Sha256::digest(&binary));
    s3.put_object().bucket(bucket).key("tools/avml-x86_64").body(ByteStream::from(binary)).send().await.unwrap();
    (format!("s3://{bucket}/tools/avml-x86_64"), sha)
}

/// Splits `s3://bucket/key`.
pub fn split_s3_uri(uri: &str) -> (&str, &str) {
    uri.strip_prefix("s3://").and_then(|u| u.split_once('/')).unwrap_or_else(|| panic!("{uri} is not s3://bucket/key"))
}

/// The whole object at an `s3://bucket/key` URI.
pub async fn download(s3: &aws_sdk_s3::Client, uri: &str) -> Vec<u8> {
    let (bucket, key) = split_s3_uri(uri);
    s3.get_object().bucket(bucket).key(key).send().await.unwrap().body.collect().await.unwrap().to_vec()
}

/// Sets the simulated instance's memory image size (read by fake-avml through the agent environment).
pub fn set_instance_memory(instance_id: &str, bytes: u64) {
    set_instance_memory_with(instance_id, bytes, "");
}

/// Like set_instance_memory, with more fake-avml settings (`NAME=value` lines), such as a broken image.
pub fn set_instance_memory_with(instance_id: &str, bytes: u64, extra: &str) {
    let dir = stack().ssm_state_dir().join("instances").join(instance_id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("agent.env"), format!("FAKE_AVML_SIZE_BYTES={bytes}\nFAKE_AVML_RANGES=3\n{extra}")).unwrap();
}

/// Everything one capture test needs, isolated from other tests by its namespace.
pub struct CaptureEnv {
    pub kube: kube::Client,
    pub namespace: String,
    pub bucket: String,
    pub avml_uri: String,
    pub avml_sha256: String,
}

impl CaptureEnv {
    pub async fn new(prefix: &str) -> Self {
        Self::on(stack().kube().await, prefix).await
    }

    /// The environment on another API server than the stack's (one a test may stop and start).
    pub async fn on(kube: kube::Client, prefix: &str) -> Self {
        install_crd(&kube).await;
        let namespace = super::namespace(&kube, prefix).await;
        let s3 = stack().s3().await;
        let bucket = bucket(&s3).await;
        let (avml_uri, avml_sha256) = upload_avml(&s3, &bucket).await;
        CaptureEnv { kube, namespace, bucket, avml_uri, avml_sha256 }
    }

    /// Controller settings for this environment; it watches only this test's namespace.
    pub fn controller_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("FC_EVIDENCE_BUCKET", self.bucket.clone()),
            ("FC_EVIDENCE_PREFIX", "evidence".into()),
            ("FC_AVML_X86_64_URI", self.avml_uri.clone()),
            ("FC_AVML_X86_64_SHA256", self.avml_sha256.clone()),
            ("FC_PRESIGN_ROLE_ARN", PRESIGN_ROLE_ARN.into()),
            ("FC_LOCK_NAMESPACE", self.namespace.clone()),
            ("FC_WATCH_NAMESPACE", self.namespace.clone()),
            ("FC_COMMAND_DELIVERY_TIMEOUT_SECONDS", "30".into()),
            // moto and the SSM simulator list what was created at once; a kill between the recorded intent and
            // the create would otherwise stall the crash tests for the production window (120 s) per step.
            ("FC_CREATE_LOOKUP_WINDOW_SECONDS", "5".into()),
            // The stand-in's images are a few MiB for a 1 GiB instance type; the gate's coverage check has its
            // own tests.
            ("FC_MEMORY_MIN_COVERAGE_PERCENT", "0.1".into()),
        ]
    }

    pub fn start_controller(&self, log_name: &str) -> ControllerProcess {
        ControllerProcess::start(&self.controller_env(), &format!("{}-{log_name}", self.namespace))
    }

    /// The controller with the production default of the image quality gate's coverage check.
    pub fn start_controller_with_default_gate(&self, log_name: &str) -> ControllerProcess {
        let mut vars = self.controller_env();
        vars.retain(|(k, _)| *k != "FC_MEMORY_MIN_COVERAGE_PERCENT");
        ControllerProcess::start(&vars, &format!("{}-{log_name}", self.namespace))
    }

    pub fn captures(&self) -> Api<ForensicCapture> {
        Api::namespaced(self.kube.clone(), &self.namespace)
    }

    pub async fn apply(&self, yaml: &str) -> ForensicCapture {
        let capture: ForensicCapture = serde_yaml::from_str(yaml).expect("capture fixture");
        self.captures().create(&Default::default(), &capture).await.expect("create ForensicCapture")
    }

    /// Waits until the capture satisfies `done`, or panics with its last status.
    pub async fn wait_for(&self, name: &str, timeout: Duration, done: impl Fn(&ForensicCapture) -> bool) -> ForensicCapture {
        let deadline = Instant::now() + timeout;
        loop {
            let capture = self.captures().get(name).await.expect("get capture");
            if done(&capture) {
                return capture;
            }
            if Instant::now() > deadline {
                panic!("capture {name} did not get there in {timeout:?}; status: {}", serde_json::to_string_pretty(&capture.status).unwrap());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Creates ContainmentRelease `name` for `capture` and waits until it is Released or Failed; returns its status.
    pub async fn release(&self, name: &str, capture: &str, reason: &str) -> forensic_capture::api::ContainmentReleaseStatus {
        let releases: Api<forensic_capture::api::ContainmentRelease> = Api::namespaced(self.kube.clone(), &self.namespace);
        let release: forensic_capture::api::ContainmentRelease = serde_yaml::from_str(&format!(
            "apiVersion: forensic-capture.dev/v1alpha1\nkind: ContainmentRelease\nmetadata:\n  name: {name}\nspec:\n  captureName: {capture}\n  reason: {reason}\n"
        ))
        .unwrap();
        releases.create(&Default::default(), &release).await.expect("create ContainmentRelease");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = releases.get(name).await.unwrap().status;
            if let Some(status) = status.as_ref().filter(|s| s.released_at.is_some() || s.phase.as_deref() == Some("Failed")) {
                return status.clone();
            }
            assert!(Instant::now() < deadline, "release {name} did not finish: {status:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn wait_completed(&self, name: &str) -> ForensicCapture {
        self.wait_for(name, Duration::from_secs(180), |c| c.status.as_ref().is_some_and(|s| s.completed_at.is_some())).await
    }
}

pub fn capture_yaml(name: &str, instance_id: &str, extra: &str) -> String {
    format!("apiVersion: forensic-capture.dev/v1alpha1\nkind: ForensicCapture\nmetadata:\n  name: {name}\nspec:\n  caseId: INC-4711\n  target:\n    instanceId: {instance_id}\n{extra}")
}

/// (path, contents) of each regular file in a .tar.gz.
pub fn tar_entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    archive_entries(archive, "-xzf")
}

/// (path, contents) of each regular file in an uncompressed tar (a container checkpoint).
pub fn plain_tar_entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    archive_entries(archive, "-xf")
}

fn archive_entries(archive: &[u8], tar_flags: &str) -> Vec<(String, Vec<u8>)> {
    let dir = tempdir();
    let file = dir.join("archive");
    std::fs::write(&file, archive).unwrap();
    let out = dir.join("x");
    std::fs::create_dir_all(&out).unwrap();
    let ok = std::process::Command::new("tar").arg(tar_flags).arg(&file).arg("-C").arg(&out).status().unwrap().success();
    assert!(ok, "archive extracts");
    let mut entries = Vec::new();
    let mut pending = vec![out.clone()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let kind = e.file_type().unwrap();
            if kind.is_dir() {
                pending.push(e.path());
            } else if kind.is_file() {
                entries.push((e.path().strip_prefix(&out).unwrap().display().to_string(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    entries
}

pub fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique("fc-test"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
