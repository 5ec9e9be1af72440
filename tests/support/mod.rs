//! Test support: a kube `Client` and AWS SDK configuration on the proof environment (`dev/stack`).
//!
//! The stack is taken from the environment that `eval "$(dev/stack up)"` sets (dev/test does this). Tests are isolated
//! by creating their own resources with unique names (namespaces, VPCs, instances, buckets), never by resetting
//! moto, so they can run in parallel.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::OnceLock,
    sync::atomic::{AtomicU32, Ordering},
};

use aws_config::{BehaviorVersion, Region, SdkConfig};

pub struct Stack {
    vars: HashMap<String, String>,
}

static STACK: OnceLock<Stack> = OnceLock::new();

pub fn repo_root() -> PathBuf {
    // Cargo's value when the test runs: the compile-time one can name another checkout whose build a shared
    // target directory reused (CI's clone and a working tree share ~/.cache/forensic-capture/target).
    std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The running stack, started on first use.
pub fn stack() -> &'static Stack {
    STACK.get_or_init(|| {
        const NAMES: [&str; 8] = [
            "FC_STACK_DIR",
            "KUBECONFIG",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_SSM",
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "SSM_SIMULATOR_STATE_DIR",
        ];
        let from_env: HashMap<String, String> =
            NAMES.iter().filter_map(|n| Some((n.to_string(), std::env::var(n).ok()?))).collect();
        let missing: Vec<&str> = NAMES.iter().copied().filter(|n| !from_env.contains_key(*n)).collect();
        // Starting the stack from here would run cargo inside `cargo test`; the test entry points start it.
        assert!(
            missing.is_empty(),
            "the proof environment is not in this test's environment (missing {missing:?}): run the tests with dev/test, or `eval \"$(dev/stack up)\"` first"
        );
        Stack { vars: from_env }
    })
}

impl Stack {
    pub fn var(&self, name: &str) -> &str {
        self.vars.get(name).map(String::as_str).unwrap_or_else(|| panic!("stack variable {name} missing"))
    }

    /// All the stack's variables, for child processes (the controller under test).
    pub fn vars(&self) -> &HashMap<String, String> {
        &self.vars
    }

    pub fn region(&self) -> &str {
        self.var("AWS_REGION")
    }

    pub fn ssm_state_dir(&self) -> PathBuf {
        PathBuf::from(self.var("SSM_SIMULATOR_STATE_DIR"))
    }

    /// A client authenticated as the stack's admin (group system:masters).
    pub async fn kube(&self) -> kube::Client {
        kube::Client::try_from(self.kube_config(None).await).expect("kube client")
    }

    /// A client that impersonates `user` (for example `system:serviceaccount:ns:name`) through the admin.
    pub async fn kube_as(&self, user: &str) -> kube::Client {
        kube::Client::try_from(self.kube_config(Some(user)).await).expect("kube client")
    }

    async fn kube_config(&self, impersonate: Option<&str>) -> kube::Config {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.var("KUBECONFIG")).expect("read kubeconfig");
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("kubeconfig");
        if let Some(user) = impersonate {
            config.auth_info.impersonate = Some(user.to_string());
        }
        config
    }

    /// AWS configuration for moto, with the stack's fake credentials.
    pub async fn aws(&self) -> SdkConfig {
        let credentials = aws_sdk_sts::config::Credentials::new(
            self.var("AWS_ACCESS_KEY_ID"),
            self.var("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "forensic-capture-stack",
        );
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(self.region().to_string()))
            .endpoint_url(self.var("AWS_ENDPOINT_URL"))
            .credentials_provider(credentials)
            .load()
            .await
    }

    /// AWS configuration acting in `account`: keys of a role session there (moto's AssumeRole into any role
    /// ARN of an account gives keys of that account; the role need not exist).
    pub async fn aws_in(&self, account: &str) -> SdkConfig {
        let base = self.aws().await;
        let assumed = aws_sdk_sts::Client::new(&base)
            .assume_role()
            .role_arn(format!("arn:aws:iam::{account}:role/fixture-admin"))
            .role_session_name("fixtures")
            .send()
            .await
            .expect("assume a fixture role");
        let c = assumed.credentials().expect("credentials");
        let credentials =
            aws_sdk_sts::config::Credentials::new(c.access_key_id(), c.secret_access_key(), Some(c.session_token().into()), None, "fixtures");
        base.to_builder().credentials_provider(aws_sdk_sts::config::SharedCredentialsProvider::new(credentials)).build()
    }

    pub async fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.aws().await)
    }

    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.aws().await).force_path_style(true).build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// SSM goes to the simulator, not moto.
    pub async fn ssm(&self) -> aws_sdk_ssm::Client {
        let config = aws_sdk_ssm::config::Builder::from(&self.aws().await)
            .endpoint_url(self.var("AWS_ENDPOINT_URL_SSM"))
            .build();
        aws_sdk_ssm::Client::from_conf(config)
    }
}

/// A name no other test (or earlier run on the same stack) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{n}-{:x}", std::process::id(), nanos & 0xffff)
}

/// A fresh namespace for one test.
pub async fn namespace(client: &kube::Client, prefix: &str) -> String {
    use k8s_openapi::api::core::v1::Namespace;
    let name = unique(prefix);
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    kube::Api::<Namespace>::all(client.clone())
        .create(&Default::default(), &ns)
        .await
        .expect("create namespace");
    name
}

/// An EC2 instance in its own VPC and subnet, with a root volume and `extra_volumes` more EBS volumes.
pub struct TestInstance {
    pub instance_id: String,
    pub vpc_id: String,
    pub subnet_id: String,
}

/// An Amazon-owned x86_64 image in moto: a Windows one, or a Linux one. Looked up once per test process:
/// moto answers DescribeImages with its whole catalogue, which is slow and never changes.
pub async fn amazon_image(ec2: &aws_sdk_ec2::Client, windows: bool) -> String {
    static IMAGES: [tokio::sync::OnceCell<String>; 2] = [tokio::sync::OnceCell::const_new(), tokio::sync::OnceCell::const_new()];
    IMAGES[windows as usize]
        .get_or_init(|| async {
            ec2.describe_images()
                .owners("amazon")
                .send()
                .await
                .expect("describe images")
                .images()
                .iter()
                .find(|i| i.architecture().map(|a| a.as_str()) == Some("x86_64") && i.platform().is_some_and(|p| p.as_str().eq_ignore_ascii_case("windows")) == windows)
                .and_then(|i| i.image_id().map(str::to_string))
                .unwrap_or_else(|| panic!("an x86_64 {} AMI in moto", if windows { "Windows" } else { "Linux" }))
        })
        .await
        .clone()
}

/// `count` Linux instances in one new VPC and subnet, each with a root volume and `extra_volumes` more EBS
/// volumes, made by as few RunInstances calls as moto allows (100 at a time): for tests and benchmarks that need
/// many instances, where one VPC and one call each would spend most of the run in moto.
pub async fn run_instances(ec2: &aws_sdk_ec2::Client, count: usize, extra_volumes: usize) -> Vec<TestInstance> {
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, InstanceType};
    let vpc_id = ec2.create_vpc().cidr_block("10.30.0.0/16").send().await.expect("create vpc").vpc().and_then(|v| v.vpc_id()).unwrap().to_string();
    let subnet_id =
        ec2.create_subnet().vpc_id(&vpc_id).cidr_block("10.30.0.0/18").send().await.expect("create subnet").subnet().and_then(|s| s.subnet_id()).unwrap().to_string();
    let image = amazon_image(ec2, false).await;
    let disk = |device: String, gib| BlockDeviceMapping::builder().device_name(device).ebs(EbsBlockDevice::builder().volume_size(gib).delete_on_termination(true).build()).build();
    let mut instances = Vec::new();
    while instances.len() < count {
        let batch = (count - instances.len()).min(100) as i32;
        let mut request = ec2.run_instances().image_id(&image).instance_type(InstanceType::T3Micro).min_count(batch).max_count(batch).subnet_id(&subnet_id);
        request = request.block_device_mappings(disk("/dev/xvda".into(), 8));
        for i in 0..extra_volumes {
            request = request.block_device_mappings(disk(format!("/dev/sd{}", (b'f' + i as u8) as char), 4));
        }
        let run = request.send().await.expect("run instances");
        instances.extend(
            run.instances()
                .iter()
                .filter_map(|i| i.instance_id())
                .map(|id| TestInstance { instance_id: id.to_string(), vpc_id: vpc_id.clone(), subnet_id: subnet_id.clone() }),
        );
    }
    instances
}

pub async fn run_instance(ec2: &aws_sdk_ec2::Client, extra_volumes: usize, tags: &[(&str, &str)]) -> TestInstance {
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, InstanceType, ResourceType, Tag, TagSpecification};
    let vpc = ec2.create_vpc().cidr_block("10.20.0.0/16").send().await.expect("create vpc");
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).unwrap().to_string();
    let subnet = ec2.create_subnet().vpc_id(&vpc_id).cidr_block("10.20.1.0/24").send().await.expect("create subnet");
    let subnet_id = subnet.subnet().and_then(|s| s.subnet_id()).unwrap().to_string();
    let image_id = amazon_image(ec2, false).await;
    let mut request = ec2
        .run_instances()
        .image_id(image_id)
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .subnet_id(&subnet_id)
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(EbsBlockDevice::builder().volume_size(8).delete_on_termination(true).build())
                .build(),
        );
    for i in 0..extra_volumes {
        let device = format!("/dev/sd{}", (b'f' + i as u8) as char);
        request = request.block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name(device)
                .ebs(EbsBlockDevice::builder().volume_size(4).delete_on_termination(true).build())
                .build(),
        );
    }
    if !tags.is_empty() {
        let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
        for (k, v) in tags {
            spec = spec.tags(Tag::builder().key(*k).value(*v).build());
        }
        request = request.tag_specifications(spec.build());
    }
    let run = request.send().await.expect("run instance");
    let instance_id = run.instances()[0].instance_id().unwrap().to_string();
    TestInstance { instance_id, vpc_id, subnet_id }
}

/// An instance in `ec2`'s account whose root volume is encrypted with the account's AWS managed key for EBS
/// (which EC2 never shares) and whose data volume is not encrypted.
pub async fn run_instance_with_an_encrypted_root(ec2: &aws_sdk_ec2::Client) -> String {
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, InstanceType};
    let vpc = ec2.create_vpc().cidr_block("10.40.0.0/16").send().await.unwrap().vpc().and_then(|v| v.vpc_id()).unwrap().to_string();
    let subnet = ec2.create_subnet().vpc_id(&vpc).cidr_block("10.40.1.0/24").send().await.unwrap().subnet().and_then(|s| s.subnet_id()).unwrap().to_string();
    let disk = |device: &str, gib, encrypted| {
        BlockDeviceMapping::builder().device_name(device).ebs(EbsBlockDevice::builder().volume_size(gib).encrypted(encrypted).delete_on_termination(true).build()).build()
    };
    let run = ec2
        .run_instances()
        .image_id(amazon_image(ec2, false).await)
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet)
        .block_device_mappings(disk("/dev/xvda", 8, true))
        .block_device_mappings(disk("/dev/sdf", 4, false))
        .send()
        .await
        .unwrap();
    run.instances()[0].instance_id().unwrap().to_string()
}

pub mod chart;
pub mod control_plane;
pub mod controller;
pub mod endpoint;
pub mod faults;
pub mod findings;
pub mod fixtures;
pub mod iam;
pub mod leader;
pub mod side_effects;
pub mod vm;
