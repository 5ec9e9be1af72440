//! Runs one `AWS-RunShellScript` invocation the way the agent does: the commands become a script file in the
//! agent's orchestration directory, run by bash as root, with the execution timeout enforced by killing it.
//!
//! The bwrap sandbox stands in for the instance: the host root is read-only, and the instance's own writable
//! "disk" areas (/tmp, /var/tmp) live under `<state>/instances/<id>/disk`, so a test can tell whether a script
//! wrote to disk. /dev/shm is a fresh tmpfs (memory, not disk), and /dev/crash (zeros) is the memory source
//! the stand-in AVML opens. The agent directory holds only the script
//! and captured output, as on a real instance.
//!
//! The host tier (instances tagged `ssm-simulator:target=host`, see fleet.rs) is the same sandbox in this
//! machine's PID namespace and with root's capabilities, as the agent on a Kubernetes node has them, so
//! scripts see (and may signal) the kubelet's pods; of the directories given as `Tier::Host`, the writable ones
//! may be written, and the visible ones are seen at their own paths even under /tmp or /var/tmp.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::{process::Command, sync::watch};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Sandbox {
    Bwrap,
    None,
}

/// Where the agent keeps a command's files on a real instance.
pub const AGENT_ROOT_INSIDE: &str = "/var/lib/amazon/ssm";

/// Which instance the commands run on: one of the simulated instances, or this machine (the host tier).
#[derive(Debug, Clone, Copy)]
pub enum Tier<'a> {
    Instance,
    /// Directories of the host the commands may write (all else of the host root is read-only), and ones they
    /// see at their own paths where the sandbox puts something else (a node's state under /tmp).
    Host { writable: &'a [PathBuf], visible: &'a [PathBuf] },
}

pub enum Outcome {
    Exited { code: i32, stdout: Vec<u8>, stderr: Vec<u8> },
    TimedOut { stdout: Vec<u8>, stderr: Vec<u8> },
    Cancelled { stdout: Vec<u8>, stderr: Vec<u8> },
}

pub struct Invocation<'a> {
    pub state_dir: &'a Path,
    pub instance_id: &'a str,
    pub command_id: &'a str,
    pub commands: &'a [String],
    pub working_directory: Option<&'a str>,
    pub execution_timeout: Duration,
}

pub fn disk_dir(state_dir: &Path, instance_id: &str) -> PathBuf {
    state_dir.join("instances").join(instance_id).join("disk")
}

/// A command's orchestration directory, relative to the agent's root, as the real agent lays it out.
pub fn orchestration_dir(instance_id: &str, command_id: &str) -> String {
    format!("{instance_id}/document/orchestration/{command_id}/awsrunShellScript/0.awsrunShellScript")
}

/// Extra variables of this node's agent, from `<state>/instances/<id>/agent.env` (`NAME=value` lines), as a
/// real agent's systemd unit may set proxies and the like. Tests use it to give a node its memory size.
/// (The VM tier's guest agent reads the same file, with the same rules, inside the guest.)
fn agent_environment(instance_dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(instance_dir.join("agent.env"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect()
}

pub async fn run(sandbox: Sandbox, tier: Tier<'_>, inv: Invocation<'_>, mut cancel: watch::Receiver<bool>) -> anyhow::Result<Outcome> {
    let instance_dir = inv.state_dir.join("instances").join(inv.instance_id);
    let disk = disk_dir(inv.state_dir, inv.instance_id);
    let relative = orchestration_dir(inv.instance_id, inv.command_id);
    let agent_dir = instance_dir.join("agent").join(&relative);
    for dir in [disk.join("tmp"), disk.join("var-tmp"), agent_dir.clone()] {
        std::fs::create_dir_all(&dir)?;
    }
    if matches!(sandbox, Sandbox::Bwrap) {
        // bwrap can only mount onto a directory that exists, and the host root is read-only inside: the
        // (empty) mount point is made on the host once.
        std::fs::create_dir_all(AGENT_ROOT_INSIDE)?;
        if let Tier::Host { writable, .. } = tier {
            for dir in writable {
                std::fs::create_dir_all(dir)?;
            }
        }
    }
    let script = agent_dir.join("_script.sh");
    std::fs::write(&script, inv.commands.join("\n") + "\n")?;
    let stdout_path = agent_dir.join("stdout");
    let stderr_path = agent_dir.join("stderr");

    let mut command = match sandbox {
        Sandbox::Bwrap => {
            let inside = format!("{AGENT_ROOT_INSIDE}/{relative}");
            let workdir = inv.working_directory.unwrap_or(&inside).to_string();
            let mut c = Command::new("bwrap");
            c.args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"])
                // A memory source for the stand-in AVML to open (this host's kernel has no /proc/kcore and
                // the sandbox's /dev has no /dev/mem): a /dev/crash that reads zeros.
                .args(["--dev-bind", "/dev/zero", "/dev/crash"])
                .arg("--bind").arg(disk.join("tmp")).arg("/tmp")
                .arg("--bind").arg(disk.join("var-tmp")).arg("/var/tmp")
                .arg("--bind").arg(instance_dir.join("agent")).arg(AGENT_ROOT_INSIDE);
            match tier {
                Tier::Instance => {
                    c.arg("--unshare-pid");
                }
                // The host's PID namespace (the fresh /proc lists every process of the machine) and the
                // capabilities bwrap would otherwise drop: without them root cannot read the /proc entries of
                // processes holding more capabilities than it has, such as a container's.
                Tier::Host { writable, visible } => {
                    c.args(["--cap-add", "ALL"]);
                    // After /tmp and /var/tmp (which they may lie under), and the writable ones last, as they
                    // may lie under a visible one.
                    for dir in visible.iter().filter(|d| d.is_dir()) {
                        c.arg("--ro-bind").arg(dir).arg(dir);
                    }
                    for dir in writable {
                        c.arg("--bind").arg(dir).arg(dir);
                    }
                }
            }
            c.args(["--unshare-ipc", "--unshare-uts", "--hostname", inv.instance_id])
                .args(["--die-with-parent", "--chdir", &workdir, "--", "/bin/bash"])
                .arg(format!("{inside}/_script.sh"));
            c
        }
        Sandbox::None => {
            let mut c = Command::new("/bin/bash");
            c.arg(&script).current_dir(inv.working_directory.map(PathBuf::from).unwrap_or(agent_dir.clone()));
            c
        }
    };
    // The agent's environment, never the simulator's: the simulator holds AWS credentials, and a script that
    // could read them would hide exactly the credential leak the controller must not have.
    command
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        .envs(agent_environment(&instance_dir))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path)?)
        .stderr(std::fs::File::create(&stderr_path)?)
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let pgid = child.id().map(|p| p as i32);

    enum End {
        Exit(std::process::ExitStatus),
        Timeout,
        Cancel,
    }
    let end = tokio::select! {
        status = child.wait() => End::Exit(status?),
        _ = tokio::time::sleep(inv.execution_timeout) => End::Timeout,
        _ = cancel.wait_for(|c| *c) => End::Cancel,
    };
    if !matches!(end, End::Exit(_)) {
        if let Some(pgid) = pgid {
            // The whole process group: background children of the script must not outlive the timeout.
            let _ = std::process::Command::new("kill").args(["-s", "KILL", "--", &format!("-{pgid}")]).status();
        }
        let _ = child.wait().await;
    }
    let stdout = std::fs::read(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read(&stderr_path).unwrap_or_default();
    Ok(match end {
        End::Exit(status) => Outcome::Exited { code: exit_code(status), stdout, stderr },
        End::Timeout => Outcome::TimedOut { stdout, stderr },
        End::Cancel => Outcome::Cancelled { stdout, stderr },
    })
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}
