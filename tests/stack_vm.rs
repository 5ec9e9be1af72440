//! The SSM simulator's VM tier through aws-sdk-ssm: an instance tagged `ssm-simulator:target=qemu` runs its
//! commands in a QEMU guest with a real Linux kernel, with the same statuses, timeouts, cancellation and
//! truncation as the sandbox, the instance's disk visible to the test, and the real AVML reading the guest's
//! /proc/kcore. Most tests share one guest (a boot costs ~15 s of scarce CPU); two need their own boots.

mod support;

use std::time::{Duration, Instant};

use aws_sdk_ssm::types::CommandInvocationStatus;
use support::vm::{self, shared_guest};

#[tokio::test]
async fn commands_on_a_vm_backed_instance_run_on_the_guest_kernel() {
    let ssm = support::stack().ssm().await;
    let id = shared_guest().await;
    let result = vm::run(&ssm, &id, &["uname -r", "hostname"]).await;
    assert_eq!(result.status(), Some(&CommandInvocationStatus::Success), "{}", vm::stderr(&result));
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap().trim().to_string();
    let guest_release = vm::kernel_release();
    assert_ne!(guest_release, host_release, "the guest must not be the host's kernel");
    assert_eq!(vm::stdout(&result), format!("{guest_release}\n{id}\n"));
}

#[tokio::test]
async fn exit_code_stdout_and_stderr_round_trip_from_the_guest() {
    let ssm = support::stack().ssm().await;
    let id = shared_guest().await;
    let result = vm::run(&ssm, &id, &["echo partial", "echo to-stderr >&2", "exit 7"]).await;
    assert_eq!(result.status(), Some(&CommandInvocationStatus::Failed));
    assert_eq!(result.response_code(), 7);
    assert_eq!(vm::stdout(&result), "partial\n");
    assert_eq!(vm::stderr(&result), "to-stderr\n");
    let ok = vm::run(&ssm, &id, &["echo fine"]).await;
    assert_eq!(ok.status(), Some(&CommandInvocationStatus::Success));
    assert_eq!(ok.response_code(), 0);
}

#[tokio::test]
async fn execution_timeout_ends_timed_out_and_kills_the_job() {
    let ssm = support::stack().ssm().await;
    let id = shared_guest().await;
    // Boot first, so the timeout measures the job and not the boot.
    vm::run(&ssm, &id, &["true"]).await;
    let started = Instant::now();
    // A background child in the job's process group dies with it.
    let command = vm::send(&ssm, &id, &["sleep 3602 &", "sleep 3601"], Some(3)).await;
    let result = vm::wait_for_result(&ssm, &command, &id).await;
    assert_eq!(result.status(), Some(&CommandInvocationStatus::TimedOut));
    assert_eq!(result.status_details(), Some("ExecutionTimedOut"));
    assert!(started.elapsed() < Duration::from_secs(60), "ended at the timeout, not when the sleep would have");
    let survivors = vm::run(&ssm, &id, &["pgrep -f 'sleep 360[12]' || echo none"]).await;
    assert_eq!(vm::stdout(&survivors), "none\n", "the timed-out job's processes are gone");
}

#[tokio::test]
async fn cancel_command_ends_cancelled_and_kills_the_job() {
    let ssm = support::stack().ssm().await;
    let id = shared_guest().await;
    let command = vm::send(&ssm, &id, &["sleep 3612 &", "echo started > /tmp/cancel-test-started", "sleep 3611"], None).await;
    vm::wait_for_status(&ssm, &command, &id, |s| *s == CommandInvocationStatus::InProgress).await;
    // Cancel once the job really runs in the guest, so the kill (not the spool) is what is tested.
    let started = vm::instance_dir(&id).join("disk/tmp/cancel-test-started");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the job never started in the guest");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ssm.cancel_command().command_id(&command).send().await.expect("CancelCommand");
    let result = vm::wait_for_result(&ssm, &command, &id).await;
    assert_eq!(result.status(), Some(&CommandInvocationStatus::Cancelled));
    let survivors = vm::run(&ssm, &id, &["pgrep -f 'sleep 361[12]' || echo none"]).await;
    assert_eq!(vm::stdout(&survivors), "none\n", "the cancelled job's processes are gone");
}

#[tokio::test]
async fn guest_stdout_is_cut_at_24000_characters() {
    let ssm = support::stack().ssm().await;
    let id = shared_guest().await;
    let result = vm::run(&ssm, &id, &["head -c 30000 /dev/zero | tr '\\0' x", "head -c 9000 /dev/zero | tr '\\0' y >&2"]).await;
    assert_eq!(result.status(), Some(&CommandInvocationStatus::Success));
    assert_eq!(vm::stdout(&result).chars().count(), 24_000);
    assert_eq!(vm::stderr(&result).chars().count(), 8_000);
}

#[tokio::test]
async fn a_process_started_with_setsid_survives_its_command_and_a_later_command_sees_it() {
    let ssm = support::stack().ssm().await;
    let id = shared_guest().await;
    let first = vm::run(&ssm, &id, &["setsid sleep 3621 </dev/null >/dev/null 2>&1 &", "echo launched"]).await;
    assert_eq!(first.status(), Some(&CommandInvocationStatus::Success));
    let later = vm::run(&ssm, &id, &["pgrep -f 'sleep 3621'"]).await;
    assert_eq!(later.status(), Some(&CommandInvocationStatus::Success), "the setsid process is still running");
    assert!(vm::stdout(&later).trim().parse::<u32>().is_ok(), "{:?}", vm::stdout(&later));
}

#[tokio::test]
async fn a_write_to_tmp_lands_in_the_instance_disk_dir_and_the_root_is_read_only() {
    let ssm = support::stack().ssm().await;
    let id = shared_guest().await;
    let name = support::unique("vm-marker");
    let write = format!("echo on-guest-disk > /tmp/{name}");
    let write_var = format!("echo on-guest-var-tmp > /var/tmp/{name}");
    let result = vm::run(&ssm, &id, &[&write, &write_var, "touch /etc/forensic-capture-vm-escape"]).await;
    assert_eq!(result.status(), Some(&CommandInvocationStatus::Failed), "the host root is read-only in the guest");
    assert!(vm::stderr(&result).contains("Read-only file system"), "{}", vm::stderr(&result));
    let disk = vm::instance_dir(&id).join("disk");
    assert_eq!(std::fs::read_to_string(disk.join("tmp").join(&name)).unwrap(), "on-guest-disk\n");
    assert_eq!(std::fs::read_to_string(disk.join("var-tmp").join(&name)).unwrap(), "on-guest-var-tmp\n");
    assert!(!std::path::Path::new("/etc/forensic-capture-vm-escape").exists());
}

#[tokio::test]
async fn real_avml_streams_a_lime_image_of_the_guest_through_a_fifo_and_refuses_dev_stdout() {
    let ssm = support::stack().ssm().await;
    let id = shared_guest().await;
    let (url, sha) = vm::real_avml_url().await;
    let mut lines = vm::fetch_avml_lines(&url, &sha);
    // AVML writes to a FIFO (it refuses /dev/stdout); the reader is sha256sum, with tee giving the first
    // 32 bytes (the first LiME range header) and the byte count to two more readers.
    lines.extend(
        [
            "cd /dev/shm",
            "mkfifo memory.fifo header.fifo count.fifo",
            "head -c 32 header.fifo | od -An -tx1 -v | tr -d ' \\n' > header & header_reader=$!",
            "wc -c < count.fifo > size & count_reader=$!",
            "./avml acquire --source /proc/kcore memory.fifo & avml=$!",
            "tee -p header.fifo count.fifo < memory.fifo | sha256sum | cut -d' ' -f1 > sha",
            "avml_rc=0; wait $avml || avml_rc=$?",
            "wait $header_reader $count_reader",
            "echo \"avml_rc=$avml_rc header=$(cat header) size=$(cat size) sha256=$(cat sha)\"",
            // Why the FIFO: the real AVML opens its output with O_NOFOLLOW, and /dev/stdout is a symlink.
            "./avml acquire --source /proc/kcore /dev/stdout > /dev/null || echo \"stdout_rc=$?\"",
        ]
        .map(str::to_string),
    );
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let result = vm::run(&ssm, &id, &lines).await;
    assert_eq!(result.status(), Some(&CommandInvocationStatus::Success), "{}", vm::stderr(&result));
    let out = vm::stdout(&result).trim();
    let field = |name: &str| out.split_whitespace().find_map(|f| f.strip_prefix(&format!("{name}="))).unwrap_or_else(|| panic!("no {name} in {out:?}")).to_string();
    assert_eq!(field("avml_rc"), "0", "{out}\n{}", vm::stderr(&result));
    let header = hex::decode(field("header")).unwrap();
    assert_eq!(header.len(), 32, "{out}");
    let u32_at = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().unwrap());
    let u64_at = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().unwrap());
    assert_eq!(u32_at(0), 0x4C69_4D45, "LiME magic at offset 0");
    assert_eq!(u32_at(4), 1, "LiME header version");
    assert!(u64_at(16) >= u64_at(8), "the first range ends after it starts");
    let size: u64 = field("size").parse().unwrap();
    // A 256 MiB guest: nearly all of it is System RAM, plus one 32-byte header per range.
    assert!((128 << 20..=(256 << 20) + 4096).contains(&size), "image of {size} bytes");
    assert_eq!(field("sha256").len(), 64);
    assert_ne!(field("stdout_rc"), "0");
    assert!(vm::stderr(&result).contains("Too many levels of symbolic links"), "{}", vm::stderr(&result));
}

#[tokio::test]
async fn lockdown_confidentiality_blocks_real_avml_and_termination_stops_the_guest() {
    let stack = support::stack();
    let ssm = stack.ssm().await;
    let id = vm::vm_instance(&[("ssm-simulator:kernel-args", "lockdown=confidentiality")]).await;
    let (url, sha) = vm::real_avml_url().await;
    let mut lines = vm::fetch_avml_lines(&url, &sha);
    lines.extend(
        [
            "cat /sys/kernel/security/lockdown",
            "rc=0; /dev/shm/avml acquire --source /proc/kcore /dev/shm/image.lime || rc=$?",
            "echo \"avml_rc=$rc\"",
        ]
        .map(str::to_string),
    );
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let result = vm::run(&ssm, &id, &lines).await;
    assert_eq!(result.status(), Some(&CommandInvocationStatus::Success), "{}", vm::stderr(&result));
    let out = vm::stdout(&result);
    assert!(out.lines().next().unwrap_or_default().contains("[confidentiality]"), "{out}");
    let rc = out.lines().find_map(|l| l.strip_prefix("avml_rc=")).unwrap_or_else(|| panic!("{out}"));
    assert_ne!(rc, "0", "AVML must not read /proc/kcore under lockdown: {out}\n{}", vm::stderr(&result));
    assert!(vm::stderr(&result).contains("locked down /proc/kcore"), "{}", vm::stderr(&result));

    // A terminated instance's guest is stopped.
    let pid = vm::guest_pid(&id).expect("the guest's pid file");
    assert!(vm::process_alive(pid));
    stack.ec2().await.terminate_instances().instance_ids(&id).send().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while vm::process_alive(pid) {
        assert!(Instant::now() < deadline, "QEMU {pid} still runs after its instance terminated");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The simulator removes the pid file after it reaps QEMU, and a zombie already counts as gone above, so
    // the file may outlive the process by a moment.
    while vm::guest_pid(&id).is_some() {
        assert!(Instant::now() < deadline, "the pid file of QEMU {pid} outlives its guest");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_guest_that_cannot_boot_fails_its_command_with_the_console_log() {
    let ssm = support::stack().ssm().await;
    // The initramfs powers the guest off when the init it is told to start does not exist (QEMU runs with
    // -no-reboot), so this costs a kernel boot, not the boot timeout.
    let id = vm::vm_instance(&[("ssm-simulator:kernel-args", "fc.init=/nonexistent/init")]).await;
    let result = vm::run(&ssm, &id, &["echo never"]).await;
    assert_eq!(result.status(), Some(&CommandInvocationStatus::Failed));
    let stderr = vm::stderr(&result);
    assert!(stderr.contains("exited during boot"), "{stderr}");
    assert!(stderr.contains("the guest init /nonexistent/init is not an executable"), "the console's end is in the message: {stderr}");
    assert_eq!(vm::stdout(&result), "");
}
