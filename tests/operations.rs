//! Running the controller as an operator does: /metrics scraped after a capture, the health probes, JSON logs
//! that name the capture and instance, a prompt clean exit on SIGTERM. Default settings (leader election on)
//! except a free port for the endpoint.

mod support;

use std::time::{Duration, Instant};

use support::{
    controller::ControllerProcess,
    endpoint::{self, Scrape},
    fixtures::{CaptureEnv, capture_yaml, set_instance_memory},
};

const MIB: u64 = 1024 * 1024;

fn start(env: &CaptureEnv, name: &str, extra: &[(&str, String)]) -> ControllerProcess {
    let mut vars = env.controller_env();
    vars.extend([
        ("FC_LOG_FORMAT", "json".to_string()),
        ("FC_LEADER_ELECT", "true".to_string()),
        // The production level: what is asserted below must be there without debug logging.
        ("RUST_LOG", "info".to_string()),
    ]);
    vars.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    ControllerProcess::start(&vars, &format!("{}-{name}", env.namespace))
}

fn assert_stops_promptly_on_sigterm(controller: &mut ControllerProcess) {
    let sent = Instant::now();
    let status = controller.terminate(Duration::from_secs(15)).expect("the controller exits after SIGTERM");
    println!("SIGTERM to exit: {:.2} s", sent.elapsed().as_secs_f64());
    assert!(status.success(), "exit status {status}");
    assert!(sent.elapsed() < Duration::from_secs(10), "took {:?}", sent.elapsed());
}

fn positive(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let value = scrape.sum(name, labels);
    assert!(value > 0.0, "{name}{labels:?} is {value}:\n{}", scrape.text);
    value
}

#[tokio::test]
async fn a_capture_shows_in_metrics_and_logs_and_sigterm_exits_cleanly() {
    let env = CaptureEnv::new("ops").await;
    let ec2 = support::stack().ec2().await;
    let instance = support::run_instance(&ec2, 1, &[]).await.instance_id;
    set_instance_memory(&instance, 20 * MIB + 3);
    let mut controller = start(&env, "ops", &[]);
    let address = controller.metrics_address(Duration::from_secs(30));
    assert_eq!(endpoint::status(address, "/healthz").await, 200);
    endpoint::wait_status(address, "/readyz", 200, Duration::from_secs(30)).await;

    let applied = Instant::now();
    env.apply(&capture_yaml("observed", &instance, "")).await;
    env.wait_completed("observed").await;
    let took = applied.elapsed().as_secs_f64();
    let m = endpoint::scrape(address).await;

    assert_eq!(m.value("forensic_capture_leader", &[]), Some(1.0));
    assert!(positive(&m, "forensic_capture_reconciles_total", &[("controller", "capture")]) >= 3.0);
    assert_eq!(m.value("forensic_capture_captures", &[("phase", "Isolated")]), Some(1.0), "{}", m.text);
    for phase in ["Pending", "Acquiring", "Snapshotted", "Completed", "Failed"] {
        assert_eq!(m.value("forensic_capture_captures", &[("phase", phase)]), Some(0.0), "{phase}");
    }

    // AWS calls by operation: the two SSM commands and the one CreateSnapshots, timed.
    let calls = |operation: &str| m.value("forensic_capture_aws_calls_total", &[("operation", operation), ("outcome", "success")]);
    assert_eq!(calls("ssm:SendCommand"), Some(2.0), "{}", m.text);
    assert_eq!(calls("ec2:CreateSnapshots"), Some(1.0));
    positive(&m, "forensic_capture_aws_calls_total", &[("operation", "s3:CompleteMultipartUpload")]);
    assert_eq!(m.value("forensic_capture_aws_call_duration_seconds_count", &[("operation", "ssm:SendCommand")]), Some(2.0));
    let send_seconds = positive(&m, "forensic_capture_aws_call_duration_seconds_sum", &[("operation", "ssm:SendCommand")]);
    assert!(send_seconds < took, "{send_seconds} s in SendCommand, longer than the capture");
    assert_eq!(m.sum("forensic_capture_aws_calls_total", &[("operation", "ssm:Unknown")]), 0.0, "every operation is named");

    // Time from creation to each phase: observed once each, in order, within the capture's duration.
    let mut previous = 0.0;
    for phase in ["Acquiring", "Snapshotted", "Isolated"] {
        assert_eq!(m.value("forensic_capture_phase_seconds_count", &[("phase", phase)]), Some(1.0), "{phase}:\n{}", m.text);
        let seconds = m.value("forensic_capture_phase_seconds_sum", &[("phase", phase)]).unwrap();
        assert!(seconds >= previous && seconds <= took + 2.0, "{phase} reached after {seconds} s (capture took {took} s)");
        previous = seconds;
    }

    // JSON logs: lines inside a reconcile carry the capture and the instance.
    let log = std::fs::read_to_string(controller.log_path()).unwrap();
    let capture_key = format!("{}/observed", env.namespace);
    let in_reconcile: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["span"]["capture"] == capture_key.as_str())
        .collect();
    assert!(!in_reconcile.is_empty(), "no JSON log line names capture {capture_key}:\n{log}");
    let phase_line = in_reconcile.iter().find(|l| l["message"] == "phase reached" && l["phase"] == "Isolated").expect("a phase line");
    assert_eq!(phase_line["span"]["instance"], instance.as_str(), "{phase_line}");
    assert_eq!(phase_line["level"], "INFO");

    assert_stops_promptly_on_sigterm(&mut controller);
}

#[tokio::test]
async fn failing_aws_calls_and_reconciles_are_counted_by_outcome_and_reason() {
    let env = CaptureEnv::new("ops-errors").await;
    let ec2 = support::stack().ec2().await;
    let instance = support::run_instance(&ec2, 0, &[]).await.instance_id;
    // SSM at an address nothing listens on: every SSM call fails in transport, and the capture retries.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut controller = start(&env, "ops-errors", &[("AWS_ENDPOINT_URL_SSM", format!("http://{closed}"))]);
    let address = controller.metrics_address(Duration::from_secs(30));
    env.apply(&capture_yaml("unreachable", &instance, "")).await;

    let deadline = Instant::now() + Duration::from_secs(90);
    let m = loop {
        let m = endpoint::scrape(address).await;
        if m.sum("forensic_capture_reconcile_errors_total", &[("reason", "Transient")]) >= 2.0 {
            break m;
        }
        assert!(Instant::now() < deadline, "no Transient reconcile errors counted:\n{}", m.text);
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(m.text.lines().any(|l| l.starts_with("forensic_capture_aws_calls_total{operation=\"ssm:") && l.contains("transport_error")), "{}", m.text);
    positive(&m, "forensic_capture_aws_calls_total", &[("operation", "ec2:DescribeInstances"), ("outcome", "success")]);
    assert_eq!(m.value("forensic_capture_captures", &[("phase", "Isolated")]), Some(0.0));

    // The failure is logged with its reason, inside the capture's span.
    let log = std::fs::read_to_string(controller.log_path()).unwrap();
    let failure = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "reconcile failed; will retry")
        .unwrap_or_else(|| panic!("no failure logged:\n{log}"));
    assert_eq!(failure["reason"], "Transient");
    assert_eq!(failure["span"]["capture"], format!("{}/unreachable", env.namespace).as_str());
    assert_eq!(failure["span"]["instance"], instance.as_str());

    // Still retrying, yet SIGTERM ends it at once.
    assert_stops_promptly_on_sigterm(&mut controller);
}
