//! The fault-injecting proxy (dev/fault-proxy) in front of the stack's moto and SSM simulator, as a process of
//! the test's own: its plan set and its counters read over its control endpoint.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{repo_root, stack, unique};

pub struct FaultProxy {
    child: Child,
    /// The proxy's base URL, for AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_SSM.
    pub url: String,
}

fn binary() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| repo_root().join("target"));
    target.join("debug/fault-proxy")
}

impl FaultProxy {
    /// Starts a proxy that forwards to moto, and SSM requests to the simulator, with `plan` in force.
    pub async fn start(plan: Value) -> Self {
        let stack = stack();
        let dir = PathBuf::from(stack.var("FC_STACK_DIR")).join("run");
        std::fs::create_dir_all(&dir).unwrap();
        let name = unique("fault-proxy");
        let port_file = dir.join(format!("{name}.port"));
        let log = std::fs::File::create(PathBuf::from(stack.var("FC_STACK_DIR")).join("logs").join(format!("{name}.log"))).unwrap();
        let child = Command::new(binary())
            .args(["--listen", "127.0.0.1:0", "--port-file"])
            .arg(&port_file)
            .args(["--upstream", stack.var("AWS_ENDPOINT_URL")])
            .arg(format!("--route=ssm={}", stack.var("AWS_ENDPOINT_URL_SSM")))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?} ({e}); dev/stack up builds it", binary()));
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file).ok().and_then(|p| p.trim().parse::<u16>().ok()) {
                break port;
            }
            assert!(Instant::now() < deadline, "fault-proxy wrote no port file");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let proxy = FaultProxy { child, url: format!("http://127.0.0.1:{port}") };
        proxy.set_plan(plan).await;
        proxy
    }

    /// Replaces the plan (see dev/fault-proxy/src/plan.rs); panics with the proxy's reason if it refuses it.
    pub async fn set_plan(&self, plan: Value) {
        let response = put_plan(&self.url, &plan).await;
        let status = response.status();
        assert!(status.is_success(), "the proxy refused the plan {plan}: {status} {}", response.text().await.unwrap_or_default());
    }

    /// The counters: `total` and `operations` keyed `service:operation`, each with requests, forwarded,
    /// faults (by kind), delayed and upstream_errors.
    pub async fn counters(&self) -> Value {
        get_json(&format!("{}/_fault-proxy/counters", self.url)).await
    }

    /// Every request's operation (`service:Operation`), in the order the proxy saw them; an EC2 request sent
    /// with DryRun=true as `service:Operation (DryRun)`.
    pub async fn operations_seen(&self) -> Vec<String> {
        let log = get_json(&format!("{}/_fault-proxy/requests", self.url)).await;
        log.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let operation = r["operation"].as_str().unwrap_or_default();
                if r["dry_run"] == true { format!("{operation}{DRY_RUN}") } else { operation.to_string() }
            })
            .collect()
    }

    /// Environment that points a controller's AWS clients at the proxy.
    pub fn controller_env(&self) -> Vec<(&'static str, String)> {
        vec![("AWS_ENDPOINT_URL", self.url.clone()), ("AWS_ENDPOINT_URL_SSM", self.url.clone())]
    }

    /// AWS configuration with the stack's credentials whose calls go through the proxy (SDK retries as given).
    pub async fn aws(&self, max_attempts: u32) -> aws_config::SdkConfig {
        stack()
            .aws()
            .await
            .to_builder()
            .endpoint_url(&self.url)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(max_attempts))
            .build()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// PUT /_fault-proxy/plan with `plan` as its JSON body.
pub async fn put_plan(url: &str, plan: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .put(format!("{url}/_fault-proxy/plan"))
        .header("content-type", "application/json")
        .body(plan.to_string())
        .send()
        .await
        .expect("PUT plan")
}

/// GET `url`, parsed as JSON.
pub async fn get_json(url: &str) -> Value {
    let text = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}")).text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {text}"))
}

/// A count under `counters.operations[key]` (0 when absent), such as `faults.throttle` or `forwarded`.
pub fn count(counters: &Value, key: &str, field: &str) -> u64 {
    let mut value = &counters["operations"][key];
    for part in field.split('.') {
        value = &value[part];
    }
    value.as_u64().unwrap_or(0)
}

/// How `operations_seen` marks an EC2 dry run.
pub const DRY_RUN: &str = " (DryRun)";

/// The operations that are not reads: anything but Describe, List, Get and Head calls, sts:AssumeRole (the
/// sessions reads in other accounts and presigning need), IAM policy simulations and EC2 dry runs (which EC2
/// answers with DryRunOperation or UnauthorizedOperation, doing nothing).
pub fn writes(operations: &[String]) -> Vec<&String> {
    operations
        .iter()
        .filter(|o| {
            let name = o.split(':').nth(1).unwrap_or_default();
            let read = ["Describe", "List", "Get", "Head"].iter().any(|p| name.starts_with(p))
                || ["sts:AssumeRole", "iam:SimulatePrincipalPolicy"].contains(&o.as_str())
                || (o.starts_with("ec2:") && o.ends_with(DRY_RUN));
            !read
        })
        .collect()
}
