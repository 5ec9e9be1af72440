//! scripts/memory.sh's part uploads, run for real on a simulated instance against a small S3-like endpoint of
//! the test's own (the script only follows URLs): parts go up several at once but never more than
//! FC_UPLOAD_CONCURRENCY, the parts list stays in order with each part's ETag, the reported SHA-256 is that of
//! the bytes received in part order, and a part S3 keeps refusing fails the script with PartUploadFailed.

mod support;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{get, put},
};
use sha2::{Digest, Sha256};
use support::fixtures::set_instance_memory;

const MIB: u64 = 1024 * 1024;
const PART_SIZE: u64 = 8 * MIB;

#[derive(Default)]
struct Endpoint {
    avml: Vec<u8>,
    plan: Mutex<String>,
    parts: Mutex<BTreeMap<u32, Vec<u8>>>,
    parts_list: Mutex<Option<String>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    /// A part answered 500 every time.
    refused_part: Option<u32>,
}

async fn avml(State(e): State<Arc<Endpoint>>) -> Vec<u8> {
    e.avml.clone()
}

async fn plan(State(e): State<Arc<Endpoint>>) -> String {
    e.plan.lock().unwrap().clone()
}

async fn upload_part(State(e): State<Arc<Endpoint>>, Path(n): Path<u32>, body: Bytes) -> impl IntoResponse {
    let now = e.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    e.most_in_flight.fetch_max(now, Ordering::SeqCst);
    // Long enough that the next parts are read and sent while this one is in flight.
    tokio::time::sleep(Duration::from_millis(400)).await;
    e.in_flight.fetch_sub(1, Ordering::SeqCst);
    if e.refused_part == Some(n) {
        return (StatusCode::INTERNAL_SERVER_ERROR, [("etag", String::new())], "InternalError".to_string());
    }
    e.parts.lock().unwrap().insert(n, body.to_vec());
    (StatusCode::OK, [("etag", format!("\"etag-{n}\""))], String::new())
}

async fn parts_list(State(e): State<Arc<Endpoint>>, body: String) -> StatusCode {
    *e.parts_list.lock().unwrap() = Some(body);
    StatusCode::OK
}

/// Serves the endpoint; returns its base URL.
async fn serve(endpoint: Arc<Endpoint>) -> String {
    let app = Router::new()
        .route("/avml", get(avml))
        .route("/plan", get(plan))
        .route("/part/{n}", put(upload_part))
        .route("/parts", put(parts_list))
        // S3 takes parts of up to 5 GiB; axum's default limit is 2 MB.
        .layer(axum::extract::DefaultBodyLimit::max((2 * PART_SIZE) as usize))
        .with_state(endpoint);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

struct Run {
    endpoint: Arc<Endpoint>,
    stdout: String,
    status: String,
}

/// Runs the memory script on a fresh instance whose image is `image_bytes`, uploading `concurrency` parts at once.
async fn run(image_bytes: u64, concurrency: &str, refused_part: Option<u32>) -> Run {
    let target = std::env::var("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| support::repo_root().join("target"));
    let binary = std::fs::read(target.join("debug/fake-avml")).expect("fake-avml (dev/stack up builds it)");
    let avml_sha256 = hex::encode(Sha256::digest(&binary));
    let endpoint = Arc::new(Endpoint { avml: binary, refused_part, ..Default::default() });
    let base = serve(endpoint.clone()).await;
    let part_count = image_bytes.div_ceil(PART_SIZE) + 2;
    let mut plan = format!("part-size {PART_SIZE}\nparts-url {base}/parts\n");
    for n in 1..=part_count {
        plan.push_str(&format!("part {n} {base}/part/{n}\n"));
    }
    *endpoint.plan.lock().unwrap() = plan;

    let instance = support::run_instance(&support::stack().ec2().await, 0, &[]).await.instance_id;
    set_instance_memory(&instance, image_bytes);
    let lines = forensic_capture::acquisition::command_lines(
        forensic_capture::acquisition::MEMORY_SCRIPT,
        &[
            ("FC_AVML_URL", &format!("{base}/avml")),
            ("FC_AVML_SHA256", &avml_sha256),
            ("FC_ARCH", std::env::consts::ARCH),
            ("FC_AVML_SOURCE", ""),
            ("FC_PLAN_URL", &format!("{base}/plan")),
            ("FC_UPLOAD_CONCURRENCY", concurrency),
        ],
    )
    .unwrap();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let ssm = support::stack().ssm().await;
    let out = support::vm::run(&ssm, &instance, &lines).await;
    Run { endpoint, stdout: support::vm::stdout(&out).to_string(), status: format!("{:?}", out.status()) }
}

fn result_field<'a>(stdout: &'a str, name: &str) -> &'a str {
    let line = stdout.lines().find(|l| l.starts_with("FC-RESULT memory ")).unwrap_or_else(|| panic!("no result: {stdout}"));
    line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}="))).unwrap_or_else(|| panic!("no {name}: {line}"))
}

#[tokio::test]
async fn parts_go_up_several_at_once_within_the_limit_and_are_listed_in_order() {
    let image = 40 * MIB + 123; // six parts, the last one short
    let Run { endpoint, stdout, status } = run(image, "4", None).await;
    assert!(status.contains("Success"), "{status}: {stdout}");
    let most = endpoint.most_in_flight.load(Ordering::SeqCst);
    assert!((2..=4).contains(&most), "parts uploaded at once: {most} (limit 4)");
    let parts = endpoint.parts.lock().unwrap().clone();
    let numbers: Vec<u32> = parts.keys().copied().collect();
    assert_eq!(numbers, (1..=numbers.len() as u32).collect::<Vec<_>>());
    let listed = endpoint.parts_list.lock().unwrap().clone().expect("a parts list");
    let expected: String = parts.iter().map(|(n, body)| format!("part {n} \"etag-{n}\" {}\n", body.len())).collect();
    assert_eq!(listed, expected, "the parts list is in part order with each part's ETag and size");
    let mut whole = Sha256::new();
    let mut bytes = 0;
    for body in parts.values() {
        whole.update(body);
        bytes += body.len();
    }
    assert_eq!(result_field(&stdout, "sha256"), hex::encode(whole.finalize()), "the SHA-256 is that of the parts in order");
    assert_eq!(result_field(&stdout, "bytes"), bytes.to_string());
    assert_eq!(result_field(&stdout, "parts"), parts.len().to_string());
    assert!(parts.len() >= 5, "{} parts", parts.len());
}

#[tokio::test]
async fn a_concurrency_of_one_uploads_one_part_at_a_time() {
    let Run { endpoint, stdout, status } = run(20 * MIB, "1", None).await;
    assert!(status.contains("Success"), "{status}: {stdout}");
    assert_eq!(endpoint.most_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(result_field(&stdout, "parts"), "3");
}

#[tokio::test]
async fn a_part_s3_keeps_refusing_fails_the_script_with_part_upload_failed() {
    let Run { endpoint, stdout, status } = run(40 * MIB, "4", Some(2)).await;
    assert!(status.contains("Failed"), "{status}: {stdout}");
    let error = stdout.lines().find(|l| l.starts_with("FC-ERROR ")).unwrap_or_else(|| panic!("no error line: {stdout}"));
    assert!(error.starts_with("FC-ERROR PartUploadFailed part 2: "), "{error}");
    assert!(!stdout.contains("FC-RESULT"), "{stdout}");
    assert!(endpoint.parts_list.lock().unwrap().is_none(), "no parts list is written for an incomplete upload");
}
