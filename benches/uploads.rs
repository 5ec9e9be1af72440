//! Upload-path benchmark (prints figures; asserts nothing about speed). One memory stream, the stand-in AVML's
//! image of FC_BENCH_UPLOAD_MIB (default 1024) MiB, goes to moto through dev/fault-proxy with a per-connection
//! bandwidth cap and a round trip added to every request (FC_BENCH_CAP_MBPS, default 50 MB/s;
//! FC_BENCH_RTT_MS, default 20):
//! Each runs on a simulated instance through SSM (the same round trips in every timing):
//!   ceiling   the stand-in AVML writing to /dev/null
//!   N=1, N=4  scripts/memory.sh on a simulated instance, through presigned URLs as the controller makes them
//!   aws s3 cp the AWS CLI v1 from PyPI reading the same stream from a pipe (defaults: 8 MiB parts, 10 at once)
//! Run: `dev/bench uploads`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use aws_sdk_s3::presigning::PresigningConfig;
use serde_json::json;
use support::{faults::FaultProxy, fixtures};

const MIB: u64 = 1024 * 1024;
const PART_SIZE: u64 = 8 * MIB;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Figure {
    what: String,
    seconds: f64,
}

#[tokio::main]
async fn main() {
    let image_bytes = setting("FC_BENCH_UPLOAD_MIB", 1024) * MIB;
    let cap = setting("FC_BENCH_CAP_MBPS", 50) * 1_000_000;
    let rtt = setting("FC_BENCH_RTT_MS", 20);
    let stack = support::stack();
    let s3 = stack.s3().await;
    let proxy = FaultProxy::start(json!({"round_trip_ms": rtt, "bandwidth_bytes_per_second": cap})).await;
    let through_proxy = {
        let config = proxy.aws(3).await;
        aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build())
    };
    let bucket = fixtures::bucket(&s3).await;
    let (avml_uri, avml_sha256) = fixtures::upload_avml(&s3, &bucket).await;
    let (_, avml_key) = fixtures::split_s3_uri(&avml_uri);
    let presign = || PresigningConfig::expires_in(Duration::from_secs(3600)).unwrap();
    let mut figures = Vec::new();

    // Every contender runs on a simulated instance through SSM, as the memory script does: the sandbox gives the
    // stand-in its /dev/crash to read, and each timing includes the same SSM round trips.
    let ssm = stack.ssm().await;
    let avml_url = through_proxy.get_object().bucket(&bucket).key(avml_key).presigned(presign()).await.unwrap().uri().to_string();
    let shell = |instance: &str, lines: Vec<String>| {
        let ssm = ssm.clone();
        let instance = instance.to_string();
        async move {
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            let started = Instant::now();
            let out = support::vm::run(&ssm, &instance, &lines).await;
            let seconds = started.elapsed().as_secs_f64();
            assert!(format!("{:?}", out.status()).contains("Success"), "{}\n{}", support::vm::stdout(&out), support::vm::stderr(&out));
            seconds
        }
    };
    let fetch_avml = format!("curl -sf -o /tmp/avml '{avml_url}' && chmod +x /tmp/avml");

    // The ceiling: the stream alone.
    let instance = support::run_instance(&stack.ec2().await, 0, &[]).await.instance_id;
    fixtures::set_instance_memory(&instance, image_bytes);
    let seconds = shell(&instance, vec![fetch_avml.clone(), "/tmp/avml acquire --source /dev/crash /dev/null".into()]).await;
    figures.push(Figure { what: "stand-in AVML to /dev/null (ceiling)".into(), seconds });

    // The memory script, as the controller runs it.
    for concurrency in [1u32, 4] {
        let instance = support::run_instance(&stack.ec2().await, 0, &[]).await.instance_id;
        fixtures::set_instance_memory(&instance, image_bytes);
        let key = format!("bench/{instance}/memory.lime");
        let upload_id = s3.create_multipart_upload().bucket(&bucket).key(&key).send().await.unwrap().upload_id().unwrap().to_string();
        let part_count = image_bytes.div_ceil(PART_SIZE) + 1;
        let mut part_urls = Vec::new();
        for n in 1..=part_count {
            let signed = through_proxy.upload_part().bucket(&bucket).key(&key).upload_id(&upload_id).part_number(n as i32).presigned(presign()).await.unwrap();
            part_urls.push(signed.uri().to_string());
        }
        let parts_key = format!("{key}.parts");
        let parts_url = through_proxy.put_object().bucket(&bucket).key(&parts_key).presigned(presign()).await.unwrap().uri().to_string();
        let plan = forensic_capture::acquisition::upload_plan(PART_SIZE, &parts_url, &part_urls, None);
        let plan_key = format!("{key}.plan");
        s3.put_object().bucket(&bucket).key(&plan_key).body(plan.into_bytes().into()).send().await.unwrap();
        let plan_url = through_proxy.get_object().bucket(&bucket).key(&plan_key).presigned(presign()).await.unwrap().uri().to_string();
        let lines = forensic_capture::acquisition::command_lines(
            forensic_capture::acquisition::MEMORY_SCRIPT,
            &[
                ("FC_AVML_URL", &avml_url),
                ("FC_AVML_SHA256", &avml_sha256),
                ("FC_ARCH", std::env::consts::ARCH),
                ("FC_AVML_SOURCE", ""),
                ("FC_PLAN_URL", &plan_url),
                ("FC_UPLOAD_CONCURRENCY", &concurrency.to_string()),
            ],
        )
        .unwrap();
        let started = Instant::now();
        let out = support::vm::run(&ssm, &instance, &lines.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let seconds = started.elapsed().as_secs_f64();
        let stdout = support::vm::stdout(&out);
        let result = forensic_capture::acquisition::result(stdout, "memory").unwrap_or_else(|| panic!("no result: {stdout}\n{}", support::vm::stderr(&out)));
        let bytes: u64 = result["bytes"].parse().unwrap();
        assert!(bytes >= image_bytes, "the script streamed {bytes} bytes");
        figures.push(Figure { what: format!("scripts/memory.sh, {concurrency} part(s) at once"), seconds });
    }

    // aws s3 cp -, reading the same stream from a FIFO (the stand-in, like AVML, refuses a symlinked output). The
    // bench hands the CLI the stack's fake credentials in its command text; the controller never does that.
    let aws = String::from_utf8(Command::new(support::repo_root().join("dev/install-awscli")).output().unwrap().stdout).unwrap().trim().to_string();
    let instance = support::run_instance(&stack.ec2().await, 0, &[]).await.instance_id;
    fixtures::set_instance_memory(&instance, image_bytes);
    let cli = format!(
        "export AWS_ACCESS_KEY_ID='{}' AWS_SECRET_ACCESS_KEY='{}' AWS_DEFAULT_REGION='{}' AWS_CONFIG_FILE=/tmp/aws-config; \
         printf '[default]\\ns3 =\\n    addressing_style = path\\n' > /tmp/aws-config; mkfifo /tmp/image.fifo; \
         /tmp/avml acquire --source /dev/crash /tmp/image.fifo & '{aws}' s3 cp --no-progress --expected-size {image_bytes} - 's3://{bucket}/bench/cli.lime' --endpoint-url '{}' < /tmp/image.fifo; wait",
        stack.var("AWS_ACCESS_KEY_ID"),
        stack.var("AWS_SECRET_ACCESS_KEY"),
        stack.region(),
        proxy.url,
    );
    let seconds = shell(&instance, vec![fetch_avml.clone(), cli]).await;
    figures.push(Figure { what: "aws s3 cp - (AWS CLI 1.46.3 defaults: 8 MiB parts, 10 at once)".into(), seconds });
    let uploaded = s3.head_object().bucket(&bucket).key("bench/cli.lime").send().await.unwrap().content_length().unwrap_or(0) as u64;
    assert!(uploaded >= image_bytes, "aws s3 cp uploaded {uploaded} bytes");

    println!(
        "upload path: {} MiB through dev/fault-proxy to moto, {} MB/s per connection, {rtt} ms round trip, load {}",
        image_bytes / MIB,
        cap / 1_000_000,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    let cli = figures.last().unwrap().seconds;
    for figure in &figures {
        println!(
            "  {:<62} {:>7.1} s {:>7.1} MB/s   {:.2}x the time of aws s3 cp",
            figure.what,
            figure.seconds,
            image_bytes as f64 / 1e6 / figure.seconds,
            figure.seconds / cli
        );
    }
    let counters = proxy.counters().await;
    println!("  proxy: {} requests, {} UploadPart", counters["total"]["requests"], counters["operations"]["s3:UploadPart"]["requests"]);
}
