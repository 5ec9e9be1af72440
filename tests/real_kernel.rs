//! Real evidence from a real kernel: instances backed by a QEMU guest running Debian's generic kernel (the SSM
//! simulator's VM tier), the real AVML 0.21 fetched from S3 and checked by SHA-256, the real on-instance scripts,
//! the controller as a process, and stock Volatility 3 from PyPI as the judge of every image.
//!
//! Guests are few and shared (each boot costs about 15 s of one core under TCG): one ordinary guest for the
//! capture and the AVML interface checks, one booted with `lockdown=confidentiality`.

mod support;

use std::{path::Path, time::Duration};

use forensic_capture::api::{ArtifactType, ForensicCapture, Phase, StepState};
use sha2::{Digest, Sha256};
use support::{
    fixtures::{CaptureEnv, capture_yaml, download, tar_entries, tempdir},
    vm,
};
use tokio::sync::OnceCell;

const LOCKDOWN_TAG: (&str, &str) = ("ssm-simulator:kernel-args", "lockdown=confidentiality");
/// Booting under TCG, then a real acquisition at a few MB/s.
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(900);

static GUEST: OnceCell<String> = OnceCell::const_new();
static LOCKED_GUEST: OnceCell<String> = OnceCell::const_new();

/// A VM-backed instance whose guest has booted (its first command waits for the guest agent).
async fn booted_instance(tags: &[(&str, &str)]) -> String {
    let instance = vm::vm_instance(tags).await;
    let (code, stdout, stderr) = run_in_guest(&instance, "uname -r").await;
    assert_eq!(code, 0, "guest of {instance} did not answer: {stdout} {stderr}");
    instance
}

async fn guest() -> &'static str {
    GUEST.get_or_init(|| booted_instance(&[])).await
}

async fn locked_guest() -> &'static str {
    LOCKED_GUEST.get_or_init(|| booted_instance(&[LOCKDOWN_TAG])).await
}

/// Runs a shell command on the instance through SSM and waits for its end: (exit code, stdout, stderr).
async fn run_in_guest(instance_id: &str, command: &str) -> (i32, String, String) {
    let out = vm::run(&support::stack().ssm().await, instance_id, &[command]).await;
    (out.response_code(), vm::stdout(&out).to_string(), vm::stderr(&out).to_string())
}

/// A setting of the VM tier that dev/test exports (dev/install-volatility).
fn tier(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the real-kernel tests with dev/test, which sets up the VM tier"))
}

/// The capture environment with the real AVML uploaded where an operator would put it.
async fn real_capture_env(prefix: &str) -> CaptureEnv {
    let mut env = CaptureEnv::new(prefix).await;
    let binary = std::fs::read(vm::real_avml()).expect("the real AVML (dev/install-vm builds it)");
    env.avml_sha256 = hex::encode(Sha256::digest(&binary));
    let s3 = support::stack().s3().await;
    s3.put_object().bucket(&env.bucket).key("tools/avml-0.21.0-x86_64").body(binary.into()).send().await.unwrap();
    env.avml_uri = format!("s3://{}/tools/avml-0.21.0-x86_64", env.bucket);
    env
}

fn step(capture: &ForensicCapture, pick: impl Fn(&forensic_capture::api::Steps) -> &Option<forensic_capture::api::StepRecord>) -> (StepState, String, String) {
    let record = pick(&capture.status.as_ref().unwrap().steps).clone().expect("step recorded");
    (record.state, record.reason.unwrap_or_default(), record.message.unwrap_or_default())
}

/// Stock Volatility 3 on `image` with only the symbols directory `symbols`: the text of `plugin`'s output.
fn volatility(image: &Path, symbols: &Path, plugin: &str) -> String {
    let vol = tier("FC_VOLATILITY");
    let cache = image.parent().unwrap().join("volatility-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let output = std::process::Command::new(vol)
        .arg("--offline") // never fetch remote symbol packs: only the capture's own ISF may be used
        .arg("--quiet")
        .arg("--renderer")
        .arg("quick")
        .arg("--cache-path")
        .arg(&cache)
        .arg("--symbol-dirs")
        .arg(symbols)
        .arg("-f")
        .arg(image)
        .arg(plugin)
        .output()
        .expect("run vol");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "vol {plugin} failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    (nanos as u32) ^ std::process::id().rotate_left(16)
}

#[tokio::test]
async fn a_real_guest_is_captured_and_volatility_lists_its_processes_from_the_captures_own_symbols() {
    let stack = support::stack();
    let instance = guest().await;
    // A process the image and the triage must both show. The kernel names a task after the file it executed
    // (at most 15 characters), so the marker is a uniquely named link to sleep.
    let marker = format!("fcm{:08x}", rand_u32());
    let start = format!("ln -sf /bin/sleep /dev/shm/{marker} && setsid nohup /dev/shm/{marker} 3600 >/dev/null 2>&1 </dev/null &");
    let (code, _, stderr) = run_in_guest(instance, &start).await;
    assert_eq!(code, 0, "{stderr}");
    let (_, release, _) = run_in_guest(instance, "uname -r; cat /proc/version").await;
    let kernel_release = release.lines().next().unwrap().to_string();
    let banner = release.lines().nth(1).unwrap().to_string();
    assert_eq!(kernel_release, vm::kernel_release(), "the guest runs the VM tier's kernel");

    let env = real_capture_env("realvm").await;
    let _controller = env.start_controller_with_default_gate("realvm");
    let started = std::time::Instant::now();
    env.apply(&capture_yaml("real", instance, "  isolation:\n    allowIngressCidrs: [203.0.113.7/32]\n")).await;
    let capture = env.wait_for("real", CAPTURE_TIMEOUT, |c| c.status.as_ref().is_some_and(|s| s.completed_at.is_some())).await;
    let wall = started.elapsed();
    let status = capture.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Isolated), "{}", serde_json::to_string_pretty(&status).unwrap());
    assert!(status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));

    // The memory image: its SHA-256 equals the status and a recomputation; the gate found the guest's banner.
    let memory = status.artifacts.iter().find(|a| a.kind == ArtifactType::MemoryImage).expect("memory artifact");
    let dir = tempdir();
    let image = download(&stack.s3().await, &memory.uri).await;
    assert_eq!(memory.sha256.as_deref(), Some(hex::encode(Sha256::digest(&image)).as_str()));
    assert_eq!(memory.size_bytes, Some(image.len() as i64));
    let quality = memory.image.as_ref().expect("quality recorded");
    assert_eq!(quality.kernel_banner.as_deref(), Some(banner.as_str()), "the banner in memory is /proc/version");
    let image_path = dir.join("memory.lime");
    std::fs::write(&image_path, &image).unwrap();
    drop(image);

    // Volatility with nothing but the capture's own ISF.
    let isf = status.artifacts.iter().find(|a| a.kind == ArtifactType::VolatilitySymbols).expect("Volatility symbols artifact");
    let isf_bytes = download(&stack.s3().await, &isf.uri).await;
    assert_eq!(isf.sha256.as_deref(), Some(hex::encode(Sha256::digest(&isf_bytes)).as_str()));
    let symbols = dir.join("symbols");
    std::fs::create_dir_all(symbols.join("linux")).unwrap();
    std::fs::write(symbols.join("linux").join("volatility-symbols.json.xz"), &isf_bytes).unwrap();
    let analysed = std::time::Instant::now();
    let pslist = volatility(&image_path, &symbols, "linux.pslist");
    let analysis = analysed.elapsed();
    assert!(pslist.contains(&marker), "linux.pslist does not list {marker}:\n{pslist}");
    assert!(pslist.lines().any(|l| l.split_whitespace().any(|w| w == "init" || w == "bash")), "{pslist}");

    // The triage saw it too.
    let volatile = status.artifacts.iter().find(|a| a.kind == ArtifactType::VolatileData).expect("volatile artifact");
    let entries = tar_entries(&download(&stack.s3().await, &volatile.uri).await);
    let processes = entries.iter().find(|(p, _)| p == "volatile/processes.txt").map(|(_, b)| String::from_utf8_lossy(b).into_owned()).unwrap();
    assert!(processes.contains(&marker), "volatile/processes.txt does not list {marker}");

    let memory_step = status.steps.memory.as_ref().unwrap();
    let (Some(s), Some(e)) = (memory_step.started_at.as_ref(), memory_step.completed_at.as_ref()) else { panic!("memory step times") };
    let seconds = (e.0.as_millisecond() - s.0.as_millisecond()) as f64 / 1000.0;
    println!(
        "FIGURES real capture: wall {:.1} s; memory step {seconds:.1} s for {} bytes ({:.2} MB/s end to end); coverage {:?}% zero pages {}%; ISF {} bytes; linux.pslist {:.1} s",
        wall.as_secs_f64(),
        memory.size_bytes.unwrap(),
        memory.size_bytes.unwrap() as f64 / 1e6 / seconds,
        quality.coverage_percent,
        quality.zero_page_percent,
        isf_bytes.len(),
        analysis.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_guest_under_lockdown_ends_memory_with_kernel_lockdown_and_containment_follows_the_policy() {
    let instance = locked_guest().await;
    let (_, lockdown, _) = run_in_guest(instance, "cat /sys/kernel/security/lockdown").await;
    assert!(lockdown.contains("[confidentiality]"), "{lockdown}");
    let env = real_capture_env("lockdown").await;
    let _controller = env.start_controller_with_default_gate("lockdown");

    env.apply(&capture_yaml("isolate", instance, "  disk: {enabled: false}\n")).await;
    let capture = env.wait_for("isolate", CAPTURE_TIMEOUT, |c| c.status.as_ref().is_some_and(|s| s.completed_at.is_some())).await;
    let (state, reason, message) = step(&capture, |s| &s.memory);
    assert_eq!((state, reason.as_str()), (StepState::Failed, "KernelLockdown"), "{message}");
    assert!(message.contains(instance) && message.contains("confidentiality"), "{message}");
    assert_eq!(step(&capture, |s| &s.isolation).0, StepState::Succeeded, "onAcquisitionFailure: Isolate (the default)");

    env.apply(&capture_yaml("hold", instance, "  disk: {enabled: false}\n  isolation:\n    onAcquisitionFailure: Hold\n")).await;
    let capture = env.wait_for("hold", CAPTURE_TIMEOUT, |c| c.status.as_ref().is_some_and(|s| s.completed_at.is_some())).await;
    assert_eq!(step(&capture, |s| &s.memory).1, "KernelLockdown");
    let (state, reason, _) = step(&capture, |s| &s.isolation);
    assert_eq!((state, reason.as_str()), (StepState::Skipped, "HeldAfterAcquisitionFailure"));
}

/// The stand-in may only accept what the real AVML accepts: both refuse a symlinked output (O_NOFOLLOW), an
/// unknown flag and a missing file name, on the same real kernel.
#[tokio::test]
async fn stand_in_and_real_avml_refuse_the_same_command_lines() {
    let instance = guest().await;
    let real = vm::real_avml().display().to_string();
    let target = std::env::var("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| support::repo_root().join("target"));
    let fake = target.join("debug/fake-avml").display().to_string();
    for avml in [&real, &fake] {
        let (code, stdout, stderr) = run_in_guest(instance, &format!("{avml} acquire --source /proc/kcore /dev/stdout | head -c 1 | wc -c")).await;
        assert_eq!(stdout.trim(), "0", "{avml} wrote to a symlinked output: {stderr}");
        assert!(stderr.contains("Too many levels of symbolic links"), "{avml}: {stderr} (exit {code})");
        for bad in ["acquire --bogus /dev/shm/x.lime", "acquire", "/dev/shm/x.lime"] {
            let (code, _, stderr) = run_in_guest(instance, &format!("{avml} {bad}")).await;
            assert_eq!(code, 2, "{avml} {bad}: a usage error: {stderr}");
        }
    }
    // The options each accepts for `acquire` are the same list.
    let options = |help: &str| -> Vec<String> {
        help.lines().filter_map(|l| l.trim_start().strip_prefix("--")).map(|l| l.split_whitespace().next().unwrap().to_string()).collect()
    };
    let (_, real_help, _) = run_in_guest(instance, &format!("{real} acquire --help")).await;
    let (_, fake_help, _) = run_in_guest(instance, &format!("{fake} acquire --help")).await;
    assert_eq!(options(&fake_help), options(&real_help), "fake:\n{fake_help}\nreal:\n{real_help}");
    assert!(!options(&real_help).is_empty(), "{real_help}");
}
