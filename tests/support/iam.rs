//! AWS with IAM enforced: a moto server of the test's own, plus an SSM simulator that asks it about instances.
//!
//! moto's enforcement switch (`POST /moto-api/reset-auth`) is global to a server, and with it on only keys of
//! IAM users moto knows are accepted: the stack's fake admin keys would stop working for every test running
//! at the same time. So a test that wants enforcement starts its own server (through dev/moto-server, which
//! fixes moto's signature checks for the Rust SDK) and gets an admin IAM user to build its fixtures with.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aws_config::{BehaviorVersion, Region, SdkConfig};

use super::{fixtures, repo_root, stack, unique};

/// An IAM user's access key.
#[derive(Clone, Debug)]
pub struct Keys {
    pub access_key_id: String,
    pub secret_access_key: String,
}

pub const ACCOUNT_ID: &str = "123456789012";

/// Allows everything: the identity tests build their fixtures with.
const ADMIN_POLICY: &str = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}"#;

pub struct EnforcedAws {
    pub endpoint: String,
    pub ssm_endpoint: String,
    pub admin: Keys,
    dir: PathBuf,
    moto: Child,
    simulator: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn(program: impl AsRef<std::ffi::OsStr>, args: &[&str], env: &[(&str, &str)], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn")
}

async fn wait_until(what: &str, timeout: Duration, mut ready: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready().await {
        assert!(Instant::now() < deadline, "{what} did not become ready within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl EnforcedAws {
    /// A fresh moto with an admin user and enforcement switched on, and an SSM simulator in front of it.
    pub async fn start(name: &str) -> Self {
        let python = std::env::var("FC_MOTO_PYTHON").expect("FC_MOTO_PYTHON (exported by dev/stack env): the moto venv's python");
        let dir = PathBuf::from(stack().var("FC_STACK_DIR")).join("iam").join(unique(name));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port().to_string();
        let launcher = repo_root().join("dev/moto-server");
        let moto = spawn(&python, &[launcher.to_str().unwrap(), "-H", "127.0.0.1", "-p", &port], &[], &dir.join("moto.log"));
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        wait_until("moto", Duration::from_secs(60), async || {
            http.get(&endpoint).send().await.is_ok_and(|r| r.status().is_success())
        })
        .await;

        // Before enforcement any key is accepted: use one to create the admin user.
        let bootstrap = Keys { access_key_id: "AKIAFCIAMBOOTSTRAP01".into(), secret_access_key: "bootstrap".into() };
        let iam = aws_sdk_iam::Client::new(&config(&endpoint, &bootstrap).await);
        let admin = create_user(&iam, "fc-test-admin", ADMIN_POLICY).await;

        let ssm_dir = dir.join("ssm");
        let port_file = dir.join("ssm.port");
        let simulator = spawn(
            target_dir().join("debug/ssm-simulator"),
            &[
                "--listen", "127.0.0.1:0",
                "--port-file", port_file.to_str().unwrap(),
                "--ec2-endpoint", &endpoint,
                "--state-dir", ssm_dir.to_str().unwrap(),
                "--default-region", stack().region(),
                "--max-delivery-timeout-seconds", "5",
            ],
            &[("AWS_ACCESS_KEY_ID", &admin.access_key_id), ("AWS_SECRET_ACCESS_KEY", &admin.secret_access_key), ("AWS_REGION", stack().region())],
            &dir.join("ssm-simulator.log"),
        );
        wait_until("ssm-simulator", Duration::from_secs(30), async || std::fs::read_to_string(&port_file).is_ok_and(|p| !p.is_empty())).await;
        let ssm_endpoint = format!("http://127.0.0.1:{}", std::fs::read_to_string(&port_file).unwrap().trim());

        let aws = EnforcedAws { endpoint, ssm_endpoint, admin, dir, moto, simulator };
        aws.enforce(true).await;
        aws
    }

    /// Switches moto's IAM enforcement on or off (for this server only).
    pub async fn enforce(&self, on: bool) {
        let count = if on { "0" } else { "inf" };
        let response =
            reqwest::Client::new().post(format!("{}/moto-api/reset-auth", self.endpoint)).body(count).send().await.expect("reset-auth");
        assert!(response.status().is_success(), "reset-auth answered {}", response.status());
    }

    pub async fn config(&self, keys: &Keys) -> SdkConfig {
        config(&self.endpoint, keys).await
    }

    pub async fn admin_config(&self) -> SdkConfig {
        self.config(&self.admin).await
    }

    pub async fn s3(&self, keys: &Keys) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&self.config(keys).await).force_path_style(true).build())
    }

    /// A new IAM user whose only permissions are `policy` (an inline policy document); its access key.
    pub async fn user(&self, name: &str, policy: &str) -> Keys {
        create_user(&aws_sdk_iam::Client::new(&self.admin_config().await), name, policy).await
    }

    /// A role that `trusted_user` may assume, with `policy` inline; its ARN.
    pub async fn role(&self, name: &str, trusted_user: &str, policy: &str) -> String {
        let iam = aws_sdk_iam::Client::new(&self.admin_config().await);
        let trust = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"AWS": user_arn(trusted_user)}, "Action": "sts:AssumeRole"}]
        });
        let role = iam.create_role().role_name(name).assume_role_policy_document(trust.to_string()).send().await.expect("create role");
        iam.put_role_policy().role_name(name).policy_name(name).policy_document(policy).send().await.expect("role policy");
        role.role().unwrap().arn().to_string()
    }

    /// A capture environment whose bucket and AVML binary live in this moto (the namespace is on the stack).
    pub async fn capture_env(&self, prefix: &str) -> fixtures::CaptureEnv {
        let kube = stack().kube().await;
        fixtures::install_crd(&kube).await;
        let namespace = super::namespace(&kube, prefix).await;
        let s3 = self.s3(&self.admin).await;
        let bucket = fixtures::bucket(&s3).await;
        let (avml_uri, avml_sha256) = fixtures::upload_avml(&s3, &bucket).await;
        fixtures::CaptureEnv { kube, namespace, bucket, avml_uri, avml_sha256 }
    }

    /// What a controller process needs to reach this moto and simulator as `keys`, on top of the stack's
    /// settings (ControllerProcess::start takes the stack's environment and these replace parts of it).
    pub fn controller_env(&self, keys: &Keys) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ENDPOINT_URL_SSM", self.ssm_endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", keys.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", keys.secret_access_key.clone()),
        ]
    }

    /// Sets the simulated instance's memory image size (fake-avml reads it from the agent environment).
    pub fn set_instance_memory(&self, instance_id: &str, bytes: u64) {
        let dir = self.dir.join("ssm/instances").join(instance_id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("agent.env"), format!("FAKE_AVML_SIZE_BYTES={bytes}\nFAKE_AVML_RANGES=3\n")).unwrap();
    }
}

impl Drop for EnforcedAws {
    fn drop(&mut self) {
        for child in [&mut self.simulator, &mut self.moto] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn user_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT_ID}:user/{name}")
}

fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| repo_root().join("target"))
}

async fn config(endpoint: &str, keys: &Keys) -> SdkConfig {
    let credentials =
        aws_sdk_sts::config::Credentials::new(&keys.access_key_id, &keys.secret_access_key, None, None, "forensic-capture-iam-tests");
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(stack().region().to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .load()
        .await
}

async fn create_user(iam: &aws_sdk_iam::Client, name: &str, policy: &str) -> Keys {
    iam.create_user().user_name(name).send().await.expect("create user");
    iam.put_user_policy().user_name(name).policy_name(name).policy_document(policy).send().await.expect("user policy");
    let key = iam.create_access_key().user_name(name).send().await.expect("access key");
    let key = key.access_key().unwrap();
    Keys { access_key_id: key.access_key_id().to_string(), secret_access_key: key.secret_access_key().to_string() }
}

/// Reads a policy document from iam/ and fills its `${Name}` placeholders.
pub fn policy(file: &str, values: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(repo_root().join("iam").join(file)).unwrap_or_else(|e| panic!("iam/{file}: {e}"));
    for (name, value) in values {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    assert!(!text.contains("${"), "iam/{file} has a placeholder the test did not fill: {text}");
    text
}
