//! Scale benchmark (prints figures; asserts nothing about speed): FC_BENCH_SCALE (default 1000) captures of
//! disk + isolation applied at once, then FC_BENCH_FULL (default 200) full captures (volatile, 8 MiB of
//! memory, disk, isolation), each against one controller with its default settings. For each run it prints
//! the wall time; CPU seconds per capture of the controller, moto, the SSM simulator and the on-instance
//! scripts (the simulator's reaped children), the API server and etcd, from /proc; the controller's peak and
//! final RSS and its RSS when a tenth of the captures had completed; Kubernetes API requests (from the API
//! server's own counter) and status patches per capture; AWS calls per capture by operation.
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
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, InstanceType};
    let ec2 = support::stack().ec2().await;
    let vpc = ec2.create_vpc().cidr_block("10.30.0.0/16").send().await.unwrap().vpc().unwrap().vpc_id().unwrap().to_string();
    let subnet = ec2.create_subnet().vpc_id(&vpc).cidr_block("10.30.0.0/18").send().await.unwrap().subnet().unwrap().subnet_id().unwrap().to_string();
    let image = support::amazon_image(&ec2, false).await;
    let mut ids = Vec::new();
    while ids.len() < n {
        let batch = (n - ids.len()).min(100) as i32;
        let disk = |device: &str, gib| BlockDeviceMapping::builder().device_name(device).ebs(EbsBlockDevice::builder().volume_size(gib).delete_on_termination(true).build()).build();
        let run = ec2
            .run_instances()
            .image_id(&image)
            .instance_type(InstanceType::T3Micro)
            .min_count(batch)
            .max_count(batch)
            .subnet_id(&subnet)
            .block_device_mappings(disk("/dev/xvda", 8))
            .block_device_mappings(disk("/dev/sdf", 4))
            .send()
            .await
            .unwrap();
        ids.extend(run.instances().iter().filter_map(|i| i.instance_id().map(str::to_string)));
    }
    if memory {
        for id in &ids {
            set_instance_memory(id, 8 * 1024 * 1024);
        }
    }
    ids
}

async fn run(label: &str, n: usize, spec: &str, memory: bool) {
    let env = CaptureEnv::new(&format!("bench-scale-{}", if memory { "full" } else { "disk" })).await;
    let ids = instances(n, memory).await;
    let controller = env.start_controller("bench-scale");
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
    }
    let applied = started.elapsed();
    let mut rss_at_tenth = None;
    let done = loop {
        let list = env.captures().list(&Default::default()).await.unwrap().items;
        let done = list.iter().filter(|c| c.status.as_ref().is_some_and(|s| s.completed_at.is_some())).count();
        if rss_at_tenth.is_none() && done >= n / 10 {
            rss_at_tenth = Some(rss_kib(pid, "VmRSS:"));
        }
        if done == n || started.elapsed() > Duration::from_secs(5400) {
            break list;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let wall = started.elapsed().as_secs_f64();
    let completed = done.iter().filter(|c| c.status.as_ref().is_some_and(|s| s.completed_at.is_some())).count();
    let isolated = done.iter().filter(|c| c.status.as_ref().and_then(|s| s.phase) == Some(forensic_capture::api::Phase::Isolated)).count();
    let controller_cpu = cpu_seconds(pid).0 - controller_before;
    let requests = apiserver_requests().await - requests_before;
    let scrape = support::endpoint::scrape(address).await;
    let per = |x: f64| x / n as f64;
    println!("{label}: {n} captures applied in {:.1} s; {completed} completed ({isolated} Isolated) in {wall:.1} s wall", applied.as_secs_f64());
    println!("  load before: {}", load_before.trim());
    println!("  CPU seconds per capture: controller {:.3}", per(controller_cpu));
    for ((name, pid), (own, children)) in others.iter().zip(&cpu_before) {
        if let Some(pid) = pid {
            let (own_now, children_now) = cpu_seconds(*pid);
            let extra = if *name == "ssm-simulator" { format!(", on-instance scripts {:.3}", per(children_now - children)) } else { String::new() };
            println!("  CPU seconds per capture: {name} {:.3}{extra}", per(own_now - own));
        }
    }
    println!(
        "  controller RSS: peak {:.1} MiB, at {} completed {:.1} MiB, final {:.1} MiB",
        rss_kib(pid, "VmHWM:") as f64 / 1024.0,
        n / 10,
        rss_at_tenth.unwrap_or(0) as f64 / 1024.0,
        rss_kib(pid, "VmRSS:") as f64 / 1024.0
    );
    println!(
        "  per capture: {:.1} Kubernetes API requests (all clients of the API server), {:.1} status patches, {:.1} reconciles",
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
    println!("  AWS calls per capture: {:.1} in all", per(calls.values().sum()));
    for (operation, count) in &calls {
        println!("    {operation:<48} {:>6.2}", per(*count));
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
