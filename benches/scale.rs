//! Scale benchmark (prints figures; asserts nothing about speed): FC_BENCH_SCALE (default 1000) captures of
//! disk + isolation applied at once, then FC_BENCH_FULL (default 200) full captures (volatile, 8 MiB of
//! memory, disk, isolation), each against one controller with its default settings. For each run it prints
//! the wall time; CPU seconds per capture of the controller, moto, the SSM simulator and the on-instance
//! scripts (the simulator's reaped children), the API server and etcd, from /proc; the controller's peak and
//! final RSS and its RSS when a tenth of the captures had completed; Kubernetes API requests (from the API
//! server's own counter) and status patches per capture; AWS calls per capture by operation.
//! FC_BENCH_AWS_RATE_LIMITS (`FAMILY=RATE[/BURST],...`) replaces the controller's client-side pacing.
//! Run: `dev/bench scale`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use support::fixtures::{CaptureEnv, capture_yaml, set_instance_memory};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// utime + stime, and the reaped children's cutime + cstime, in seconds.
fn cpu_seconds(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<f64> = stat.rsplit_once(") ").map(|(_, rest)| rest.split_whitespace().filter_map(|f| f.parse().ok()).collect()).unwrap_or_default();
    // After the state field (dropped by the parse), utime is field 14 of stat, i.e. index 10 here.
    let tick = 100.0;
    let at = |i: usize| fields.get(i).copied().unwrap_or(0.0) / tick;
    (at(10) + at(11), at(12) + at(13))
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn stack_pid(component: &str) -> Option<u32> {
    let dir = PathBuf::from(support::stack().var("FC_STACK_DIR")).join("run");
    std::fs::read_to_string(dir.join(format!("{component}.pid"))).ok()?.trim().parse().ok()
}

/// The API server's request counter, summed over every label (admin token, as the stack's kubeconfig).
async fn apiserver_requests() -> f64 {
    let stack = support::stack();
    let dir = PathBuf::from(stack.var("FC_STACK_DIR"));
    let token = std::fs::read_to_string(dir.join("pki/admin.token")).unwrap();
    let port = std::fs::read_to_string(dir.join("run/kube-apiserver.port")).unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("pki/ca.crt")).unwrap()).unwrap();
    let client = reqwest::Client::builder().add_root_certificate(ca).build().unwrap();
    let text = client.get(format!("https://127.0.0.1:{}/metrics", port.trim())).bearer_auth(token.trim()).send().await.unwrap().text().await.unwrap();
    support::endpoint::Scrape::parse(text).sum("apiserver_request_total", &[])
}

async fn instances(n: usize, memory: bool) -> Vec<String> {
    let ec2 = support::stack().ec2().await;
    let ids: Vec<String> = support::run_instances(&ec2, n, 1).await.into_iter().map(|i| i.instance_id).collect();
    if memory {
        for id in &ids {
            set_instance_memory(id, 8 * 1024 * 1024);
        }
    }
    ids
}

async fn run(label: &str, n: usize, spec: &str, memory: bool) {
    let env = CaptureEnv::new(&format!("bench-scale-{}", if memory { "full" } else { "disk" })).await;
    let creating = Instant::now();
    let ids = instances(n, memory).await;
    eprintln!("{label}: {n} instances made in {:.1} s", creating.elapsed().as_secs_f64());
    // FC_BENCH_AWS_RATE_LIMITS replaces the controller's client-side pacing (--aws-rate-limit), to see what the
    // rest of the system can do when pacing is not what sets the pace.
    let mut settings = env.controller_env();
    let lifted = std::env::var("FC_BENCH_AWS_RATE_LIMITS").ok().filter(|p| !p.is_empty());
    if let Some(rates) = &lifted {
        settings.push(("FC_AWS_RATE_LIMITS", rates.clone()));
    }
    let pacing = lifted.unwrap_or_else(|| "the controller's defaults".into());
    eprintln!("{label}: AWS pacing {pacing}");
    let controller = support::controller::ControllerProcess::start(&settings, &format!("{}-bench-scale", env.namespace));
    let pid = controller.pid().unwrap();
    let address = controller.metrics_address(Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let others: Vec<(&str, Option<u32>)> = ["moto", "ssm-simulator", "kube-apiserver", "etcd"].iter().map(|c| (*c, stack_pid(c))).collect();
    let cpu_before: Vec<(f64, f64)> = others.iter().map(|(_, p)| p.map(cpu_seconds).unwrap_or_default()).collect();
    let controller_before = cpu_seconds(pid).0;
    let requests_before = apiserver_requests().await;
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let started = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        env.apply(&capture_yaml(&format!("c{i}"), id, spec)).await;
        if (i + 1) % 100 == 0 {
            eprintln!("[{:>6.1} s] applied {}", started.elapsed().as_secs_f64(), i + 1);
        }
    }
    let applied = started.elapsed();
    // The controller's RSS when the first 100 captures have completed and at each tenth of the run, to show
    // whether it grows with the number of captures it has seen.
    let mut rss_samples: Vec<(usize, u64)> = Vec::new();
    let marks: Vec<usize> = std::iter::once(n.min(100)).chain((1..=10).map(|k| n * k / 10)).collect();
    // This loop's own list requests reach the API server too; they are taken off the per-capture figure.
    let mut own_requests = 0.0;
    let mut last_progress = Instant::now();
    let done = loop {
        let list = env.captures().list(&Default::default()).await.unwrap().items;
        own_requests += 1.0;
        let done = list.iter().filter(|c| c.status.as_ref().is_some_and(|s| s.completed_at.is_some())).count();
        for &mark in &marks {
            if done >= mark && !rss_samples.iter().any(|(at, _)| *at == mark) {
                rss_samples.push((mark, rss_kib(pid, "VmRSS:")));
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(30) {
            last_progress = Instant::now();
            eprintln!(
                "[{:>6.1} s] {done}/{n} completed; controller RSS {:.1} MiB; load {}",
                started.elapsed().as_secs_f64(),
                rss_kib(pid, "VmRSS:") as f64 / 1024.0,
                std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
            );
        }
        if done == n || started.elapsed() > Duration::from_secs(setting("FC_BENCH_TIMEOUT_SECONDS", 5400) as u64) {
            break list;
        }
        // Listing a thousand captures is work for the API server too: poll less often the more there are.
        tokio::time::sleep(Duration::from_secs(if n > 200 { 5 } else { 1 })).await;
    };
    let wall = started.elapsed().as_secs_f64();
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let completed = done.iter().filter(|c| c.status.as_ref().is_some_and(|s| s.completed_at.is_some())).count();
    let isolated = done.iter().filter(|c| c.status.as_ref().and_then(|s| s.phase) == Some(forensic_capture::api::Phase::Isolated)).count();
    let controller_cpu = cpu_seconds(pid).0 - controller_before;
    let requests = apiserver_requests().await - requests_before - own_requests;
    let scrape = support::endpoint::scrape(address).await;
    let per = |x: f64| x / n as f64;
    println!("{label}: {n} captures applied in {:.1} s; {completed} completed ({isolated} Isolated) in {wall:.1} s wall", applied.as_secs_f64());
    println!("  AWS pacing: {pacing}");
    println!("  load before: {}", load_before.trim());
    println!("  CPU seconds per capture: controller {:.3}", per(controller_cpu));
    for ((name, pid), (own, children)) in others.iter().zip(&cpu_before) {
        if let Some(pid) = pid {
            let (own_now, children_now) = cpu_seconds(*pid);
            let extra = if *name == "ssm-simulator" { format!(", on-instance scripts {:.3}", per(children_now - children)) } else { String::new() };
            println!("  CPU seconds per capture: {name} {:.3}{extra}", per(own_now - own));
        }
    }
    println!("  load after: {}", load_after.trim());
    println!(
        "  controller RSS: peak {:.1} MiB, final {:.1} MiB",
        rss_kib(pid, "VmHWM:") as f64 / 1024.0,
        rss_kib(pid, "VmRSS:") as f64 / 1024.0
    );
    let samples: Vec<String> = rss_samples.iter().map(|(at, kib)| format!("{at}: {:.1}", *kib as f64 / 1024.0)).collect();
    println!("  controller RSS (MiB) by captures completed: {}", samples.join(", "));
    println!(
        "  per capture: {:.1} Kubernetes API requests (all clients of the API server but this bench's polling), {:.1} status patches, {:.1} reconciles",
        per(requests),
        per(scrape.sum("forensic_capture_status_patches_total", &[])),
        per(scrape.sum("forensic_capture_reconciles_total", &[("controller", "capture")]))
    );
    let mut calls: BTreeMap<String, f64> = BTreeMap::new();
    for line in scrape.text.lines().filter(|l| l.starts_with("forensic_capture_aws_calls_total{")) {
        let operation = line.split("operation=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("?").to_string();
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *calls.entry(operation).or_default() += value;
    }
    println!("  AWS calls per capture: {:.1} in all (beside: the fewest the flow needs for this instance, and why)", per(calls.values().sum()));
    for (operation, count) in &calls {
        let (least, why) = minimum(operation, memory);
        println!("    {operation:<48} {:>6.2}   min {least:<5} {why}", per(*count));
    }
}

/// The fewest calls of `operation` one capture of a bench instance (two volumes, one interface, no Auto Scaling
/// group, load balancer or Elastic IP) needs, and why; `full` with the volatile and memory steps.
fn minimum(operation: &str, full: bool) -> (&'static str, &'static str) {
    let op = operation.split_once(':').map(|(_, op)| op).unwrap_or(operation);
    match op {
        "DescribeInstances" => ("2", "resolve; prior groups read right before containment"),
        "DescribeInstanceTypes" => ("0", "memory size, once per instance type and process"),
        "DescribeInstanceInformation" => (if full { "1" } else { "0" }, "SSM agent online (only when a step needs it)"),
        "CreateSnapshots" | "CreateTags" | "RevokeSecurityGroupEgress" | "CreateMultipartUpload" | "CompleteMultipartUpload" => ("1", "the change itself"),
        "DescribeSnapshots" => ("1", "completion (more while snapshots are pending)"),
        "DescribeInstanceAttribute" => ("2", "prior termination protection and shutdown behaviour, one attribute per call"),
        "ModifyInstanceAttribute" => ("3", "protection, shutdown behaviour, DeleteOnTermination: one attribute per call"),
        "CreateSecurityGroup" => ("2", "isolation and transition groups"),
        "AuthorizeSecurityGroupIngress" => ("1", "transition group's allow-all (isolation ingress only with allowIngressCidrs)"),
        "DescribeSecurityGroups" => ("1", "the isolation group's default egress rules, before revoking them"),
        "ModifyNetworkInterfaceAttribute" => ("2", "per interface: transition, then isolation"),
        "DescribeAutoScalingInstances" | "DescribeLoadBalancers" | "DescribeTargetGroups" => ("1", "prior state"),
        "DescribeTargetHealth" => ("1/TG", "per target group in the region: no API lists an instance's groups"),
        "HeadBucket" => ("1", "bucket check before the first presigned URL"),
        "ListMultipartUploads" => ("0", "kept: finds an upload a restart left, instead of a status patch before the create"),
        "HeadObject" => ("1", "memory object size after completion"),
        "GetObject" => ("4", "re-hash volatile, symbols and memory; read the parts list"),
        "PutObject" => (if full { "2" } else { "1" }, "manifest (and the ISF)"),
        "SendCommand" => ("2", "volatile and memory commands"),
        "GetCommandInvocation" => ("2+", "one per 2 s poll while a command runs"),
        "AssumeRole" => ("2", "a presign session per command, named after the capture"),
        _ => ("?", ""),
    }
}

#[tokio::main]
async fn main() {
    let scale = setting("FC_BENCH_SCALE", 1000);
    let full = setting("FC_BENCH_FULL", 200);
    if scale > 0 {
        run("disk + isolation", scale, "  memory: {enabled: false}\n  volatile: {enabled: false}\n", false).await;
    }
    if full > 0 {
        run("full (volatile, memory, disk, isolation)", full, "", true).await;
    }
}
