//! Benchmark program (prints figures; asserts nothing about speed):
//!   1. controller overhead from a ForensicCapture's creation to its first SSM command;
//!   2. wall time and controller peak RSS for 100 concurrent captures on the local stack.
//! Run: `dev/bench` (or, with the stack's environment, `cargo bench --profile dev --bench captures`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant, SystemTime};

use support::fixtures::{CaptureEnv, capture_yaml, set_instance_memory};

const CONCURRENT: usize = 100;
const OVERHEAD_SAMPLES: usize = 7;

#[tokio::main]
async fn main() {
    let stack = support::stack();
    let ec2 = stack.ec2().await;
    let ssm = stack.ssm().await;

    // 1. Creation to first SSM command, one capture at a time, controller already running and idle.
    let env = CaptureEnv::new("bench-overhead").await;
    let controller = env.start_controller("bench-overhead");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut overheads = Vec::new();
    for i in 0..OVERHEAD_SAMPLES {
        let instance = support::run_instance(&ec2, 0, &[]).await.instance_id;
        set_instance_memory(&instance, 8 * 1024 * 1024);
        let created = SystemTime::now();
        env.apply(&capture_yaml(&format!("overhead-{i}"), &instance, "")).await;
        let requested = loop {
            let listed = ssm.list_commands().instance_id(&instance).send().await.unwrap();
            if let Some(first) = listed.commands().iter().filter_map(|c| c.requested_date_time()).min_by_key(|t| t.as_nanos()) {
                break *first;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let created_ns = created.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as i128;
        overheads.push(Duration::from_nanos((requested.as_nanos() - created_ns).max(0) as u64));
        env.wait_completed(&format!("overhead-{i}")).await;
    }
    drop(controller);
    overheads.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "creation -> first SSM command: median {:.0} ms, min {:.0} ms, max {:.0} ms ({OVERHEAD_SAMPLES} captures)",
        ms(overheads[OVERHEAD_SAMPLES / 2]),
        ms(overheads[0]),
        ms(overheads[OVERHEAD_SAMPLES - 1])
    );

    // 2. 100 captures at once.
    let env = CaptureEnv::new("bench-concurrent").await;
    let mut instances = Vec::new();
    for _ in 0..CONCURRENT {
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
    while done < CONCURRENT {
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
        "{CONCURRENT} concurrent captures (volatile + 8 MiB memory + 2 snapshots + isolation each): {:.1} s wall, {isolated} Isolated, controller peak RSS {:.1} MiB (now {:.1} MiB)",
        elapsed.as_secs_f64(),
        field("VmHWM:") as f64 / 1024.0,
        field("VmRSS:") as f64 / 1024.0
    );
}
