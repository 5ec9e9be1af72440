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

use super::{controller::ControllerProcess, fixtures, repo_root, stack, unique};

/// An IAM user's access key.
#[derive(Clone, Debug)]
pub struct Keys {
    pub access_key_id: String,
    pub secret_access_key: String,
}

pub const ACCOUNT_ID: &str = "123456789012";
pub const CONTROLLER_USER: &str = "forensic-capture-controller";

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

    /// The controller's IAM user, bound to `policy` alone, and the presign role (iam/presign-role-policy.json)
    /// that it may assume; returns the user's access key.
    pub async fn controller_identity(&self, env: &fixtures::CaptureEnv, policy: &str) -> Keys {
        let keys = self.user(CONTROLLER_USER, policy).await;
        let role = self.role("forensic-capture-presign", CONTROLLER_USER, &presign_role_policy(env)).await;
        assert_eq!(role, fixtures::PRESIGN_ROLE_ARN, "the role the controller is configured with");
        keys
    }

    /// The controller as a process reaching this moto and simulator as `keys`, configured for `env`.
    pub fn start_controller(&self, env: &fixtures::CaptureEnv, keys: &Keys, log_name: &str) -> ControllerProcess {
        self.start_controller_with(env, &env.controller_env(), keys, log_name)
    }

    /// Like `start_controller`, with these controller settings instead of the environment's defaults.
    pub fn start_controller_with(&self, env: &fixtures::CaptureEnv, settings: &[(&'static str, String)], keys: &Keys, log_name: &str) -> ControllerProcess {
        let mut vars = settings.to_vec();
        vars.extend([
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ENDPOINT_URL_SSM", self.ssm_endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", keys.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", keys.secret_access_key.clone()),
        ]);
        ControllerProcess::start(&vars, &format!("{}-{log_name}", env.namespace))
    }

    /// Sets the simulated instance's memory image size (fake-avml reads it from the agent environment).
    pub fn set_instance_memory(&self, instance_id: &str, bytes: u64) {
        self.agent_env(instance_id, &format!("FAKE_AVML_SIZE_BYTES={bytes}\nFAKE_AVML_RANGES=3\n"));
    }

    /// Like `set_instance_memory`, with AVML streaming the image at `bytes_per_second`.
    pub fn set_slow_instance_memory(&self, instance_id: &str, bytes: u64, bytes_per_second: u64) {
        self.agent_env(instance_id, &format!("FAKE_AVML_SIZE_BYTES={bytes}\nFAKE_AVML_RANGES=3\nFAKE_AVML_BYTES_PER_SECOND={bytes_per_second}\n"));
    }

    fn agent_env(&self, instance_id: &str, contents: &str) {
        let dir = self.dir.join("ssm/instances").join(instance_id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("agent.env"), contents).unwrap();
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

/// iam/controller-policy.json for a capture environment (no manifest is signed here: the key is a stand-in).
pub fn controller_policy(env: &fixtures::CaptureEnv) -> String {
    controller_policy_signing_with(env, "arn:aws:kms:eu-west-1:123456789012:key/not-used-by-these-tests")
}

/// iam/controller-policy.json with `SigningKeyArn` set to the key that signs manifests.
pub fn controller_policy_signing_with(env: &fixtures::CaptureEnv, signing_key_arn: &str) -> String {
    policy(
        "controller-policy.json",
        &[
            ("AccountId", ACCOUNT_ID),
            ("EvidenceBucket", &env.bucket),
            ("EvidencePrefix", "evidence"),
            ("PresignRoleArn", fixtures::PRESIGN_ROLE_ARN),
            ("TargetRoleName", "ForensicCaptureTarget"),
            ("ForensicRoleName", "ForensicCaptureCopy"),
            ("SigningKeyArn", signing_key_arn),
            ("ControllerRoleArn", &user_arn(CONTROLLER_USER)),
        ],
    )
}

/// iam/controller-credentials-policy.json, for any instance role and the given quarantine role.
pub fn credentials_policy(quarantine_role_arn: &str) -> String {
    policy("controller-credentials-policy.json", &[("AccountId", ACCOUNT_ID), ("QuarantineRoleArn", quarantine_role_arn), ("WorkloadRolePath", "")])
}

/// iam/presign-role-policy.json for a capture environment (its AVML binary sits under tools/ in the bucket).
pub fn presign_role_policy(env: &fixtures::CaptureEnv) -> String {
    policy(
        "presign-role-policy.json",
        &[("ToolsBucket", &env.bucket), ("ToolsPrefix", "tools/"), ("EvidenceBucket", &env.bucket), ("EvidencePrefix", "evidence")],
    )
}

/// A role and an instance profile holding it; returns (profile ARN, role name).
pub async fn instance_profile(iam: &aws_sdk_iam::Client, prefix: &str) -> (String, String) {
    let role = unique(prefix);
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    iam.create_role().role_name(&role).assume_role_policy_document(trust.to_string()).send().await.unwrap();
    let profile = iam.create_instance_profile().instance_profile_name(&role).send().await.unwrap();
    iam.add_role_to_instance_profile().instance_profile_name(&role).role_name(&role).send().await.unwrap();
    (profile.instance_profile().unwrap().arn().to_string(), role)
}

/// An Auto Scaling group of two, both instances registered in one target group on port 80.
pub struct Fleet {
    pub group_name: String,
    pub target_group_arn: String,
    pub instances: Vec<String>,
}

/// Builds a [`Fleet`] in a fresh VPC with whatever AWS `aws` reaches (the stack's moto or an enforced one).
pub async fn fleet_behind_a_load_balancer(aws: &SdkConfig) -> Fleet {
    use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
    use aws_sdk_ec2::types::{InstanceType, RequestLaunchTemplateData};
    use aws_sdk_elasticloadbalancingv2::types::{ProtocolEnum, TargetDescription, TargetTypeEnum};
    let ec2 = aws_sdk_ec2::Client::new(aws);
    let asg = aws_sdk_autoscaling::Client::new(aws);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(aws);
    let vpc = ec2.create_vpc().cidr_block("10.30.0.0/16").send().await.unwrap().vpc().unwrap().vpc_id().unwrap().to_string();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.30.1.0/24")
        .availability_zone(format!("{}a", stack().region()))
        .send()
        .await
        .unwrap()
        .subnet()
        .unwrap()
        .subnet_id()
        .unwrap()
        .to_string();
    let image = super::amazon_image(&ec2, false).await;
    let template_name = unique("web");
    ec2.create_launch_template()
        .launch_template_name(&template_name)
        .launch_template_data(RequestLaunchTemplateData::builder().image_id(image).instance_type(InstanceType::T3Micro).build())
        .send()
        .await
        .unwrap();
    let group_name = unique("web-asg");
    asg.create_auto_scaling_group()
        .auto_scaling_group_name(&group_name)
        .launch_template(LaunchTemplateSpecification::builder().launch_template_name(&template_name).version("$Latest").build())
        .min_size(1)
        .max_size(4)
        .desired_capacity(2)
        .vpc_zone_identifier(&subnet)
        .send()
        .await
        .unwrap();
    let described = asg.describe_auto_scaling_groups().auto_scaling_group_names(&group_name).send().await.unwrap();
    let instances: Vec<String> =
        described.auto_scaling_groups()[0].instances().iter().filter_map(|i| i.instance_id().map(String::from)).collect();
    assert_eq!(instances.len(), 2);
    let target_group_arn = elb
        .create_target_group()
        .name(unique("tg").chars().take(32).collect::<String>())
        .protocol(ProtocolEnum::Http)
        .port(80)
        .vpc_id(&vpc)
        .target_type(TargetTypeEnum::Instance)
        .send()
        .await
        .unwrap()
        .target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_string();
    for id in &instances {
        elb.register_targets().target_group_arn(&target_group_arn).targets(TargetDescription::builder().id(id).port(80).build()).send().await.unwrap();
    }
    Fleet { group_name, target_group_arn, instances }
}
