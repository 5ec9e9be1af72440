//! VM-backed instances: an instance tagged `ssm-simulator:target=qemu` runs its commands in a QEMU guest with
//! a real Linux kernel (Debian's generic kernel, set up by dev/install-vm), so what needs a kernel of its own
//! (/proc/kcore and the real AVML, kernel lockdown, `uname -r`) is real, with the same SSM API as the sandbox.
//!
//! The guest (dev/vm/) mounts the host's root read-only over 9p and runs the host's own bash and tools; the
//! instance's directory `<state>/instances/<id>` is a second, writable 9p share from which the guest binds
//! disk/tmp and disk/var-tmp at /tmp and /var/tmp (as the bubblewrap sandbox does) and agent/ at
//! /var/lib/amazon/ssm. Commands travel through a spool in `<id>/vm/spool` (protocol in dev/vm/guest-agent),
//! with a virtio-serial "doorbell" so the idle guest does not poll. QEMU runs with TCG: this machine kind's
//! /dev/kvm cannot run stock kernels. Its user-mode network is restricted to explicit forwards: the guest's
//! 127.0.0.1:PORT reaches the host's 127.0.0.1:PORT for the moto port and every `--vm-forward-port`, so
//! presigned URLs signed for 127.0.0.1 work unchanged, and nothing else is reachable.
//!
//! A guest boots on the first command for its instance (the invocation stays Pending meanwhile) and is
//! tracked by process ID in `<id>/vm/qemu.pid`, its console in `<id>/vm/console.log`. It stops when its EC2
//! instance stops or terminates, when the simulator exits, or with `dev/stack down`.

use std::{
    collections::HashMap,
    io::Write,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use tokio::sync::watch;

use crate::runner::{self, Outcome};

/// The guest-side end of every forwarded port (the guest's socat connects here; QEMU's guestfwd connects on
/// to the host's 127.0.0.1). Must match dev/vm/guest-init.
const FORWARD_ADDRESS: &str = "10.0.2.100";
/// How long a killed job has to report its exit code before the invocation ends without it.
const KILL_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct Config {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The post-switch_root init (dev/vm/guest-init), a path on the host root the guest mounts.
    pub guest_init: PathBuf,
    pub forward_ports: Vec<u16>,
    pub default_memory_mib: u32,
    pub boot_timeout: Duration,
}

#[derive(Debug, Clone)]
enum Boot {
    Booting,
    Ready,
    Failed(String),
}

/// One running (or booting) QEMU guest.
pub struct Guest {
    instance_id: String,
    /// Where its instance is, to see whether it still runs.
    scope: crate::fleet::Scope,
    pid: u32,
    vm_dir: PathBuf,
    spool: PathBuf,
    doorbell_path: PathBuf,
    doorbell: Mutex<Option<UnixStream>>,
    boot: watch::Receiver<Boot>,
    /// Some(description of the exit status) once QEMU has exited.
    exited: watch::Receiver<Option<String>>,
    /// Dropping the sender (the last handle on this guest going away) stops QEMU too.
    stop: watch::Sender<bool>,
}

impl Guest {
    fn exit_status(&self) -> Option<String> {
        self.exited.borrow().clone()
    }

    fn usable(&self) -> bool {
        self.exit_status().is_none() && !matches!(*self.boot.borrow(), Boot::Failed(_))
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let mut boot = self.boot.clone();
        let state = boot.wait_for(|b| !matches!(b, Boot::Booting)).await.map_err(|_| anyhow!("the boot of the guest was abandoned"))?.clone();
        match state {
            Boot::Ready => Ok(()),
            Boot::Failed(message) => Err(anyhow!(message)),
            Boot::Booting => unreachable!(),
        }
    }

    /// Tells the guest agent there is something new in the spool. A lost or full connection costs only
    /// latency: the agent also scans the spool on its own every few seconds.
    fn ring(&self) {
        let mut doorbell = self.doorbell.lock().unwrap();
        if doorbell.is_none() {
            *doorbell = connect_doorbell(&self.doorbell_path);
        }
        if let Some(stream) = doorbell.as_mut() {
            match stream.write(b"!") {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => *doorbell = None,
            }
        }
    }

    fn console_log(&self) -> PathBuf {
        self.vm_dir.join("console.log")
    }

    /// The end of the console log, for error messages.
    fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(self.console_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    async fn stop_and_wait(&self) {
        self.stop.send_replace(true);
        let mut exited = self.exited.clone();
        let _ = tokio::time::timeout(Duration::from_secs(10), exited.wait_for(Option::is_some)).await;
    }
}

fn connect_doorbell(path: &Path) -> Option<UnixStream> {
    let stream = UnixStream::connect(path).ok()?;
    stream.set_nonblocking(true).ok()?;
    Some(stream)
}

pub struct Vms {
    config: Option<Config>,
    state_dir: PathBuf,
    guests: Mutex<HashMap<String, Arc<Guest>>>,
}

impl Vms {
    pub fn new(config: Option<Config>, state_dir: &Path) -> Self {
        stop_stale_guests(state_dir);
        Vms { config, state_dir: state_dir.to_path_buf(), guests: Mutex::new(HashMap::new()) }
    }

    /// The instance's guest, booted first if it is not running. Tags are read at boot, as instance attributes
    /// are at launch: a running guest keeps the kernel arguments and memory it booted with.
    pub async fn ensure(&self, instance_id: &str, scope: &crate::fleet::Scope, kernel_args: &str, memory_mib: Option<u32>) -> anyhow::Result<Arc<Guest>> {
        let config = self.config.as_ref().ok_or_else(|| {
            anyhow!(
                "instance {instance_id} is tagged ssm-simulator:target=qemu, but this simulator runs without the VM tier \
                 (--vm-kernel, --vm-initrd and --vm-guest-init; dev/stack passes them from dev/install-vm)"
            )
        })?;
        let guest = {
            let mut guests = self.guests.lock().unwrap();
            match guests.get(instance_id) {
                Some(guest) if guest.usable() => Arc::clone(guest),
                _ => {
                    let memory_mib = memory_mib.unwrap_or(config.default_memory_mib);
                    let guest = self.boot(config, instance_id, scope, kernel_args, memory_mib)?;
                    guests.insert(instance_id.to_string(), Arc::clone(&guest));
                    guest
                }
            }
        };
        guest.wait_ready().await?;
        Ok(guest)
    }

    fn boot(&self, config: &Config, instance_id: &str, scope: &crate::fleet::Scope, kernel_args: &str, memory_mib: u32) -> anyhow::Result<Arc<Guest>> {
        let instance_dir = self.state_dir.join("instances").join(instance_id);
        let vm_dir = instance_dir.join("vm");
        let spool = vm_dir.join("spool");
        let disk = runner::disk_dir(&self.state_dir, instance_id);
        for dir in [disk.join("tmp"), disk.join("var-tmp"), instance_dir.join("agent"), vm_dir.clone()] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // The guest mounts the agent directory here, on the read-only host root: the mount point must exist.
        std::fs::create_dir_all(runner::AGENT_ROOT_INSIDE)?;
        // A new boot starts with an empty spool: nothing of an earlier guest may look like a finished job.
        let _ = std::fs::remove_dir_all(&spool);
        std::fs::create_dir_all(spool.join("jobs"))?;
        let console = vm_dir.join("console.log");
        if console.exists() {
            let _ = std::fs::rename(&console, vm_dir.join("console.previous.log"));
        }
        let doorbell_path = doorbell_path(&vm_dir, instance_id);
        let _ = std::fs::remove_file(&doorbell_path);

        let ports: Vec<String> = config.forward_ports.iter().map(u16::to_string).collect();
        let mut append = format!(
            "console=ttyS0 panic=-1 fc.init={} fc.id={instance_id} fc.ports={}",
            config.guest_init.display(),
            ports.join(",")
        );
        if !kernel_args.is_empty() {
            append.push(' ');
            append.push_str(kernel_args);
        }
        let mut netdev = "user,id=net0,restrict=on".to_string();
        for port in &ports {
            // restrict=on cuts the guest off from the host and the outside; these rules are the exceptions.
            netdev.push_str(&format!(",guestfwd=tcp:{FORWARD_ADDRESS}:{port}-cmd:socat STDIO TCP:127.0.0.1:{port}"));
        }

        let qemu_log = std::fs::File::create(vm_dir.join("qemu.log"))?;
        // setpriv --pdeathsig: a simulator killed outright must not leave guests behind. (The signal follows
        // the spawning thread; tokio's worker threads live as long as the runtime.)
        let mut command = tokio::process::Command::new("setpriv");
        command
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&config.qemu)
            .args(["-nodefaults", "-no-user-config", "-accel", "tcg", "-smp", "1", "-display", "none", "-no-reboot"])
            .arg("-m")
            .arg(memory_mib.to_string())
            .arg("-serial")
            .arg(format!("file:{}", qemu_value(&console)))
            .arg("-kernel")
            .arg(&config.kernel)
            .arg("-initrd")
            .arg(&config.initrd)
            .arg("-append")
            .arg(&append)
            // The host root, read-only; multidevs=remap keeps inode numbers unique across the host's mounts
            // (without it the guest's view of some trees broke).
            .arg("-virtfs")
            .arg("local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap")
            .arg("-virtfs")
            .arg(format!("local,path={},mount_tag=instance,security_model=passthrough", qemu_value(&instance_dir)))
            .arg("-netdev")
            .arg(netdev)
            .args(["-device", "virtio-net-pci,netdev=net0", "-device", "virtio-serial-pci"])
            .arg("-chardev")
            .arg(format!("socket,id=doorbell,path={},server=on,wait=off", qemu_value(&doorbell_path)))
            .args(["-device", "virtserialport,chardev=doorbell,name=fc.doorbell"])
            // QEMU and the socat it starts per forwarded connection need nothing of the simulator's
            // environment, which holds AWS credentials.
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(qemu_log.try_clone()?)
            .stderr(qemu_log)
            .kill_on_drop(true);
        let mut child = command.spawn().with_context(|| format!("starting {}", config.qemu.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("QEMU exited at once"))?;
        let pid_file = vm_dir.join("qemu.pid");
        std::fs::write(&pid_file, format!("{pid}\n"))?;
        tracing::info!(instance_id, pid, memory_mib, kernel_args, "booting QEMU guest");

        let (exited_tx, exited_rx) = watch::channel(None);
        let (stop_tx, mut stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            let exited = tokio::select! {
                status = child.wait() => Some(status),
                // A stop request, or every handle on the guest dropped.
                _ = async { let _ = stop_rx.wait_for(|stop| *stop).await; } => None,
            };
            let status = match exited {
                Some(status) => status,
                None => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            // Only our own pid file: a newer guest of the same instance may have written its own by now.
            if std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == pid.to_string()) {
                let _ = std::fs::remove_file(&pid_file);
            }
            let description = match status {
                Ok(status) => status.to_string(),
                Err(error) => format!("unknown status: {error}"),
            };
            tracing::info!(pid, %description, "QEMU guest exited");
            exited_tx.send_replace(Some(description));
        });

        let (boot_tx, boot_rx) = watch::channel(Boot::Booting);
        let guest = Arc::new(Guest {
            instance_id: instance_id.to_string(),
            scope: scope.clone(),
            pid,
            vm_dir,
            spool,
            doorbell_path,
            doorbell: Mutex::new(None),
            boot: boot_rx,
            exited: exited_rx,
            stop: stop_tx,
        });
        let waiting = Arc::clone(&guest);
        let timeout = config.boot_timeout;
        let started = Instant::now();
        tokio::spawn(async move {
            let result = wait_for_agent(&waiting, started + timeout).await;
            match &result {
                Boot::Ready => tracing::info!(instance_id = %waiting.instance_id, seconds = started.elapsed().as_secs_f64(), "guest agent ready"),
                Boot::Failed(message) => {
                    tracing::warn!(instance_id = %waiting.instance_id, %message, "guest failed to boot");
                    waiting.stop.send_replace(true);
                }
                Boot::Booting => {}
            }
            boot_tx.send_replace(result);
        });
        Ok(guest)
    }

    /// Runs one invocation on a ready guest, with the Outcome semantics of runner::run: the real exit code,
    /// the execution timeout and cancellation kill the job's whole process group.
    pub async fn run(&self, guest: &Guest, inv: runner::Invocation<'_>, mut cancel: watch::Receiver<bool>) -> anyhow::Result<Outcome> {
        let relative = runner::orchestration_dir(inv.instance_id, inv.command_id);
        let agent_dir = inv.state_dir.join("instances").join(inv.instance_id).join("agent").join(&relative);
        std::fs::create_dir_all(&agent_dir)?;
        std::fs::write(agent_dir.join("_script.sh"), inv.commands.join("\n") + "\n")?;
        let job = guest.spool.join("jobs").join(inv.command_id);
        std::fs::create_dir_all(&job)?;
        std::fs::write(job.join("orchestration"), format!("{relative}\n"))?;
        if let Some(dir) = inv.working_directory {
            std::fs::write(job.join("workdir"), format!("{dir}\n"))?;
        }
        std::fs::write(job.join("ready"), "")?;
        let spooled = Instant::now();
        guest.ring();

        enum End {
            Exit(i32),
            Timeout,
            Cancel,
        }
        let end = tokio::select! {
            code = wait_for_exit_code(guest, &job) => End::Exit(code?),
            _ = tokio::time::sleep(inv.execution_timeout) => End::Timeout,
            _ = cancel.wait_for(|c| *c) => End::Cancel,
        };
        if !matches!(end, End::Exit(_)) {
            std::fs::write(job.join("kill"), "")?;
            guest.ring();
            // The agent kills the process group, then its supervisor reports the exit status.
            let _ = tokio::time::timeout(KILL_GRACE, wait_for_exit_code(guest, &job)).await;
        }
        let stdout = std::fs::read(agent_dir.join("stdout")).unwrap_or_default();
        let stderr = std::fs::read(agent_dir.join("stderr")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&job);
        tracing::debug!(instance_id = inv.instance_id, command_id = inv.command_id, seconds = spooled.elapsed().as_secs_f64(), "guest job done");
        Ok(match end {
            End::Exit(code) => Outcome::Exited { code, stdout, stderr },
            End::Timeout => Outcome::TimedOut { stdout, stderr },
            End::Cancel => Outcome::Cancelled { stdout, stderr },
        })
    }

    /// Instances with a guest (booting or running), and where they are.
    pub fn running(&self) -> Vec<(String, crate::fleet::Scope)> {
        let guests = self.guests.lock().unwrap();
        guests.values().filter(|g| g.exit_status().is_none()).map(|g| (g.instance_id.clone(), g.scope.clone())).collect()
    }

    pub async fn stop(&self, instance_id: &str, reason: &str) {
        let guest = self.guests.lock().unwrap().remove(instance_id);
        if let Some(guest) = guest {
            tracing::info!(instance_id, pid = guest.pid, reason, "stopping QEMU guest");
            guest.stop_and_wait().await;
        }
    }

    pub async fn stop_all(&self) {
        let guests: Vec<Arc<Guest>> = self.guests.lock().unwrap().drain().map(|(_, g)| g).collect();
        for guest in &guests {
            guest.stop.send_replace(true);
        }
        for guest in &guests {
            guest.stop_and_wait().await;
        }
    }
}

async fn wait_for_agent(guest: &Guest, deadline: Instant) -> Boot {
    let ready = guest.spool.join("agent-ready");
    loop {
        if let Some(status) = guest.exit_status() {
            return Boot::Failed(format!(
                "the QEMU guest of {} exited during boot ({status}); console log {}:\n{}",
                guest.instance_id,
                guest.console_log().display(),
                guest.console_tail()
            ));
        }
        {
            let mut doorbell = guest.doorbell.lock().unwrap();
            if doorbell.is_none() {
                *doorbell = connect_doorbell(&guest.doorbell_path);
            }
        }
        if ready.exists() {
            return Boot::Ready;
        }
        if Instant::now() >= deadline {
            return Boot::Failed(format!(
                "the QEMU guest of {} did not become ready within its boot timeout; console log {}:\n{}",
                guest.instance_id,
                guest.console_log().display(),
                guest.console_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The job's exit code once the guest agent wrote it; an error when the guest stops first.
async fn wait_for_exit_code(guest: &Guest, job: &Path) -> anyhow::Result<i32> {
    let rc = job.join("rc");
    loop {
        // rc is renamed into place by the guest, so it is complete whenever it exists.
        if let Ok(text) = std::fs::read_to_string(&rc) {
            return text.trim().parse::<i32>().with_context(|| format!("the guest agent wrote a malformed exit code {text:?}"));
        }
        if let Some(status) = guest.exit_status() {
            bail!(
                "the QEMU guest of {} stopped while the command ran ({status}); console log {}",
                guest.instance_id,
                guest.console_log().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// QEMU's option syntax separates with commas; a literal comma in a value is doubled.
fn qemu_value(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// A Unix socket path must fit in sun_path (108 bytes); deep state directories fall back to /tmp.
fn doorbell_path(vm_dir: &Path, instance_id: &str) -> PathBuf {
    let inside = vm_dir.join("doorbell.sock");
    if inside.as_os_str().len() < 100 {
        inside
    } else {
        std::env::temp_dir().join(format!("fc-ssm-{}-{instance_id}.sock", std::process::id()))
    }
}

/// Guests left by a simulator that was killed outright (setpriv's death signal normally takes them along).
/// A pid is only killed when its command line names this guest's directory, so a recycled pid is safe.
fn stop_stale_guests(state_dir: &Path) {
    let Ok(instances) = std::fs::read_dir(state_dir.join("instances")) else { return };
    for instance in instances.flatten() {
        let vm_dir = instance.path().join("vm");
        let pid_file = vm_dir.join("qemu.pid");
        let Ok(pid) = std::fs::read_to_string(&pid_file) else { continue };
        let pid = pid.trim();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let needle = vm_dir.join("console.log").display().to_string();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            tracing::info!(pid, "stopping a stale QEMU guest");
            let _ = std::process::Command::new("kill").args(["-s", "KILL", pid]).status();
        }
        let _ = std::fs::remove_file(&pid_file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_in_qemu_option_values_are_doubled() {
        assert_eq!(qemu_value(Path::new("/a,b/c")), "/a,,b/c");
    }

    #[test]
    fn long_state_directories_get_a_short_doorbell_path() {
        let deep = PathBuf::from(format!("/{}", "d".repeat(120)));
        assert!(doorbell_path(&deep, "i-1").as_os_str().len() < 108);
        assert_eq!(doorbell_path(Path::new("/s/vm"), "i-1"), PathBuf::from("/s/vm/doorbell.sock"));
    }
}
