//! Benchmark program (prints figures; asserts nothing about speed):
//!   1. controller overhead from a ForensicCapture's creation to its first SSM command, and what the median
//!      capture's spent it on (AWS calls through a clean dev/fault-proxy, which adds its own hop to each);
//!   2. wall time and controller peak RSS for 100 concurrent captures on the local stack (FC_BENCH_CONCURRENT).
//! Run: `dev/bench` (or, with the stack's environment, `cargo bench --profile dev --bench captures`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use forensic_capture::api::ForensicCapture;
use futures::StreamExt;
use kube::runtime::watcher;
use support::{
    faults::FaultProxy,
    fixtures::{CaptureEnv, capture_yaml, set_instance_memory},
};

const OVERHEAD_SAMPLES: usize = 7;

#[tokio::main]
async fn main() {
    let stack = support::stack();
    let ec2 = stack.ec2().await;
    let ssm = stack.ssm().await;

    // 1. Creation to first SSM command, one capture at a time, controller already running and idle. Its AWS
    //    calls go through a clean fault-proxy, whose request log gives the breakdown; a watch on the captures
    //    gives the times of their status writes.
    let env = CaptureEnv::new("bench-overhead").await;
    let proxy = FaultProxy::start(serde_json::json!({})).await;
    let mut vars = env.controller_env();
    vars.extend(proxy.controller_env());
    let controller = support::controller::ControllerProcess::start(&vars, &format!("{}-bench-overhead", env.namespace));
    let writes = record_status_writes(env.captures());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut samples = Vec::new();
    for i in 0..OVERHEAD_SAMPLES {
        let instance = support::run_instance(&ec2, 0, &[]).await.instance_id;
        set_instance_memory(&instance, 8 * 1024 * 1024);
        let name = format!("overhead-{i}");
        let created = unix_ms(SystemTime::now());
        env.apply(&capture_yaml(&name, &instance, "")).await;
        let requested = loop {
            let listed = ssm.list_commands().instance_id(&instance).send().await.unwrap();
            if let Some(first) = listed.commands().iter().filter_map(|c| c.requested_date_time()).min_by_key(|t| t.as_nanos()) {
                break first.as_nanos() as f64 / 1e6;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        env.wait_completed(&name).await;
        samples.push(Sample { name, created, requested });
    }
    drop(controller);
    let requests = support::faults::get_json(&format!("{}/_fault-proxy/requests", proxy.url)).await;
    let requests = requests.as_array().cloned().unwrap_or_default();
    let writes = writes.lock().unwrap().clone();
    samples.sort_by(|a, b| (a.requested - a.created).total_cmp(&(b.requested - b.created)));
    let ms: Vec<f64> = samples.iter().map(|s| s.requested - s.created).collect();
    println!(
        "creation -> first SSM command: median {:.0} ms, min {:.0} ms, max {:.0} ms ({OVERHEAD_SAMPLES} captures)",
        ms[OVERHEAD_SAMPLES / 2],
        ms[0],
        ms[OVERHEAD_SAMPLES - 1]
    );
    print_breakdown(&samples[OVERHEAD_SAMPLES / 2], &requests, &writes);

    // 2. 100 captures at once (FC_BENCH_CONCURRENT, 0 to skip).
    let concurrent: usize = std::env::var("FC_BENCH_CONCURRENT").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    if concurrent == 0 {
        return;
    }
    let env = CaptureEnv::new("bench-concurrent").await;
    let mut instances = Vec::new();
    for _ in 0..concurrent {
        let id = support::run_instance(&ec2, 1, &[]).await.instance_id;
        set_instance_memory(&id, 8 * 1024 * 1024);
        instances.push(id);
    }
    let controller = env.start_controller("bench-concurrent");
    let pid = controller.pid().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    for (i, id) in instances.iter().enumerate() {
        env.apply(&capture_yaml(&format!("c-{i}"), id, "")).await;
    }
    let mut done = 0;
    while done < concurrent {
        let list = env.captures().list(&Default::default()).await.unwrap();
        done = list.items.iter().filter(|c| c.status.as_ref().is_some_and(|s| s.completed_at.is_some())).count();
        assert!(started.elapsed() < Duration::from_secs(1800), "captures did not finish");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| status.lines().find(|l| l.starts_with(name)).unwrap_or("").split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0);
    let list = env.captures().list(&Default::default()).await.unwrap();
    let isolated = list.items.iter().filter(|c| c.status.as_ref().and_then(|s| s.phase) == Some(forensic_capture::api::Phase::Isolated)).count();
    println!(
        "{concurrent} concurrent captures (volatile + 8 MiB memory + 2 snapshots + isolation each): {:.1} s wall, {isolated} Isolated, controller peak RSS {:.1} MiB (now {:.1} MiB)",
        elapsed.as_secs_f64(),
        field("VmHWM:") as f64 / 1024.0,
        field("VmRSS:") as f64 / 1024.0
    );
}

struct Sample {
    name: String,
    /// Unix milliseconds.
    created: f64,
    requested: f64,
}

fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0
}

/// Every change of a capture the watch delivers: (unix ms when seen, capture name, phase).
fn record_status_writes(api: kube::Api<ForensicCapture>) -> Arc<Mutex<Vec<(f64, String, String)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(capture)) = event {
                let phase = capture.status.as_ref().and_then(|s| s.phase).map(|p| format!("{p:?}")).unwrap_or_else(|| "no status".into());
                sink.lock().unwrap().push((unix_ms(SystemTime::now()), capture.metadata.name.clone().unwrap_or_default(), phase));
            }
        }
    });
    seen
}

/// What the time from creation to the first SSM command of `sample` was spent on: the AWS calls the
/// controller made meanwhile (from the proxy's log), the status writes (from the watch), and the rest
/// (Kubernetes round trips for the watch, the lock Lease and the writes, and the controller itself).
fn print_breakdown(sample: &Sample, requests: &[serde_json::Value], writes: &[(f64, String, String)]) {
    let window = |at: f64| at >= sample.created && at <= sample.requested + 1.0;
    let calls: Vec<(f64, f64, String)> = requests
        .iter()
        .filter_map(|r| Some((r["at_ms"].as_f64()?, r["ms"].as_f64()?, r["operation"].as_str()?.to_string())))
        .filter(|(at, _, _)| window(*at))
        .collect();
    let status_writes = writes.iter().filter(|(at, name, _)| *name == sample.name && window(*at)).count();
    let aws_ms: f64 = calls.iter().map(|(_, ms, _)| ms).sum();
    let total = sample.requested - sample.created;
    println!(
        "  median capture {}: {total:.0} ms = {aws_ms:.0} ms in {} AWS calls + {:.0} ms elsewhere ({status_writes} status changes seen by a watch meanwhile; the rest is Kubernetes round trips and the controller)",
        sample.name,
        calls.len(),
        total - aws_ms
    );
    for (at, ms, operation) in &calls {
        println!("    +{:>5.0} ms  {operation:<44} {ms:>5.1} ms", at - sample.created);
    }
    for (at, _, phase) in writes.iter().filter(|(at, name, _)| *name == sample.name && window(*at)) {
        println!("    +{:>5.0} ms  status written (phase {phase})", at - sample.created);
    }
}
