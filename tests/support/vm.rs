//! VM-backed instances (the SSM simulator's QEMU tier): instances tagged `ssm-simulator:target=qemu` run
//! their commands in a guest with a real Linux kernel. A boot costs about 15 s of CPU under TCG, so tests
//! share one guest where they can: `shared_guest()` is one instance for the whole test binary.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use aws_sdk_ssm::{
    operation::get_command_invocation::{GetCommandInvocationError, GetCommandInvocationOutput},
    types::CommandInvocationStatus,
};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::stack;

/// Generous: the first command for a guest waits for its boot, and parallel tests share two cores.
pub const RESULT_DEADLINE: Duration = Duration::from_secs(400);

fn vm_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: the stack runs without its VM tier (dev/stack env exports it when dev/install-vm set the tier up)"))
}

/// The kernel release of the guests (Debian's generic kernel as dev/install-vm found it).
pub fn kernel_release() -> String {
    vm_var("FC_VM_KERNEL_RELEASE")
}

/// The real AVML binary, built by dev/install-vm.
pub fn real_avml() -> PathBuf {
    PathBuf::from(vm_var("FC_REAL_AVML"))
}

/// A fresh VM-backed instance with extra tags (its guest boots on its first command).
pub async fn vm_instance(tags: &[(&str, &str)]) -> String {
    let mut all = vec![("ssm-simulator:target", "qemu")];
    all.extend_from_slice(tags);
    super::run_instance(&stack().ec2().await, 0, &all).await.instance_id
}

/// The instance whose guest the tests of one binary share. Only its ID is shared: clients belong to each
/// test's own runtime.
pub async fn shared_guest() -> String {
    static SHARED: OnceCell<String> = OnceCell::const_new();
    SHARED.get_or_init(|| vm_instance(&[])).await.clone()
}

/// The host side of the guest's disk (/tmp, /var/tmp) and VM files.
pub fn instance_dir(instance_id: &str) -> PathBuf {
    stack().ssm_state_dir().join("instances").join(instance_id)
}

/// SendCommand of `AWS-RunShellScript` (any instance, sandbox or guest): the command ID.
pub async fn send(ssm: &aws_sdk_ssm::Client, instance_id: &str, commands: &[&str], execution_timeout: Option<u32>) -> String {
    let mut request = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .instance_ids(instance_id)
        .parameters("commands", commands.iter().map(|c| c.to_string()).collect());
    if let Some(t) = execution_timeout {
        request = request.parameters("executionTimeout", vec![t.to_string()]);
    }
    let sent = request.send().await.expect("SendCommand");
    sent.command().unwrap().command_id().unwrap().to_string()
}

/// The invocation once it has one of the given statuses (InvocationDoesNotExist right after SendCommand is
/// retried).
pub async fn wait_for_status(ssm: &aws_sdk_ssm::Client, command_id: &str, instance_id: &str, done: fn(&CommandInvocationStatus) -> bool) -> GetCommandInvocationOutput {
    let deadline = Instant::now() + RESULT_DEADLINE;
    loop {
        assert!(Instant::now() < deadline, "command {command_id} on {instance_id} did not get there within {RESULT_DEADLINE:?}");
        match ssm.get_command_invocation().command_id(command_id).instance_id(instance_id).send().await {
            Ok(out) if out.status().is_some_and(done) => return out,
            Ok(_) => {}
            Err(e) if matches!(e.as_service_error(), Some(GetCommandInvocationError::InvocationDoesNotExist(_))) => {}
            Err(e) => panic!("GetCommandInvocation: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn is_terminal(status: &CommandInvocationStatus) -> bool {
    !matches!(status, CommandInvocationStatus::Pending | CommandInvocationStatus::InProgress | CommandInvocationStatus::Delayed)
}

pub async fn wait_for_result(ssm: &aws_sdk_ssm::Client, command_id: &str, instance_id: &str) -> GetCommandInvocationOutput {
    wait_for_status(ssm, command_id, instance_id, is_terminal).await
}

/// Sends and waits for the result.
pub async fn run(ssm: &aws_sdk_ssm::Client, instance_id: &str, commands: &[&str]) -> GetCommandInvocationOutput {
    let command = send(ssm, instance_id, commands, None).await;
    wait_for_result(ssm, &command, instance_id).await
}

pub fn stdout(out: &GetCommandInvocationOutput) -> &str {
    out.standard_output_content().unwrap_or_default()
}

pub fn stderr(out: &GetCommandInvocationOutput) -> &str {
    out.standard_error_content().unwrap_or_default()
}

/// Puts the real AVML in a fresh bucket, as an operator would; returns a presigned GET URL for it (signed for
/// 127.0.0.1, which the guest reaches through its port forward) and its SHA-256.
pub async fn real_avml_url() -> (String, String) {
    use aws_sdk_s3::{presigning::PresigningConfig, primitives::ByteStream};
    let s3 = stack().s3().await;
    let bucket = super::fixtures::bucket(&s3).await;
    let binary = std::fs::read(real_avml()).expect("read the real avml");
    let sha = hex::encode(Sha256::digest(&binary));
    s3.put_object().bucket(&bucket).key("tools/avml").body(ByteStream::from(binary)).send().await.unwrap();
    let presigned = s3
        .get_object()
        .bucket(&bucket)
        .key("tools/avml")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(900)).unwrap())
        .await
        .unwrap();
    (presigned.uri().to_string(), sha)
}

/// Shell lines that fetch the real AVML from `url` into /dev/shm (memory, not disk) and check its hash.
pub fn fetch_avml_lines(url: &str, sha256: &str) -> Vec<String> {
    vec![
        "set -eu".to_string(),
        format!("curl -fsS -o /dev/shm/avml '{url}'"),
        format!("echo '{sha256}  /dev/shm/avml' | sha256sum -c --quiet"),
        "chmod 0700 /dev/shm/avml".to_string(),
    ]
}

/// The QEMU process of an instance's guest, from the simulator's pid file.
pub fn guest_pid(instance_id: &str) -> Option<u32> {
    std::fs::read_to_string(instance_dir(instance_id).join("vm/qemu.pid")).ok()?.trim().parse().ok()
}

pub fn process_alive(pid: u32) -> bool {
    // A zombie is as good as gone; /proc/<pid>/stat's third field is the state.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')).unwrap_or(false))
        .unwrap_or(false)
}
