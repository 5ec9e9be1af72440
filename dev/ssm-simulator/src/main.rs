//! SSM Run Command simulator: the subset of the AWS Systems Manager JSON API that forensic-capture uses
//! (SendCommand, GetCommandInvocation, ListCommands, ListCommandInvocations, DescribeInstanceInformation,
//! CancelCommand), executing `AWS-RunShellScript` commands for real with bash in a per-instance sandbox.
//!
//! moto's SSM marks every command successful without running it, which would prove nothing about the
//! on-instance scripts. This server asks moto's EC2 which instances exist, and treats running instances as
//! managed nodes whose "agent" runs the script under bubblewrap, or, for instances tagged
//! `ssm-simulator:target=qemu`, in a QEMU guest with a real Linux kernel (vm.rs), or, for
//! `ssm-simulator:target=host`, on this machine itself (the node tier's instance; fleet.rs).

mod deny;
mod api;
mod fleet;
mod protocol;
mod runner;
mod store;
mod vm;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Options {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write the bound port to this file once listening (lets a launcher use port 0).
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// EC2 endpoint to ask which instances exist (moto).
    #[arg(long, env = "SSM_SIM_EC2_ENDPOINT")]
    ec2_endpoint: String,
    /// Directory holding each instance's sandbox ("disk" areas and agent work directories).
    #[arg(long)]
    state_dir: PathBuf,
    /// Region used when a request carries no SigV4 credential scope.
    #[arg(long, default_value = "us-east-1")]
    default_region: String,
    /// Account reported in ARNs and messages (moto's default account).
    #[arg(long, default_value = "123456789012")]
    account_id: String,
    /// How long GetCommandInvocation answers InvocationDoesNotExist after SendCommand, as the real service
    /// does for a short moment while the invocation is being created.
    #[arg(long, default_value = "400", value_parser = parse_millis)]
    invocation_visibility_delay: Duration,
    /// How long a command stays Pending before the agent picks it up.
    #[arg(long, default_value = "150", value_parser = parse_millis)]
    delivery_delay: Duration,
    /// Upper bound on the delivery timeout for offline instances, in seconds. The real service waits the full
    /// TimeoutSeconds (at least 30 s); tests compress that. Unset: honour TimeoutSeconds exactly.
    #[arg(long)]
    max_delivery_timeout_seconds: Option<u64>,
    /// Sandbox used to run commands: bwrap (read-only host root, private /tmp, /var/tmp and /dev/shm, own PID
    /// namespace) or none (plain bash in the work directory; for machines without bubblewrap).
    #[arg(long, value_enum, default_value_t = runner::Sandbox::Bwrap)]
    sandbox: runner::Sandbox,
    /// A directory of this machine that commands for instances tagged ssm-simulator:target=host may write
    /// (repeatable; the rest of the host root is read-only to them). dev/stack gives the node tier's kubelet
    /// checkpoint directory.
    #[arg(long = "host-writable-dir")]
    host_writable_dirs: Vec<PathBuf>,
    /// A directory of this machine that those commands see at its own path (read-only) even where the sandbox
    /// puts the instance's own (/tmp, /var/tmp); repeatable. dev/stack gives the node tier's state directory,
    /// which is under /tmp when the stack is.
    #[arg(long = "host-visible-dir")]
    host_visible_dirs: Vec<PathBuf>,
    /// QEMU system emulator for instances tagged ssm-simulator:target=qemu.
    #[arg(long, default_value = "qemu-system-x86_64")]
    vm_qemu: PathBuf,
    /// Kernel image of VM-backed instances (dev/install-vm's FC_VM_KERNEL). Without it, commands for VM-backed
    /// instances fail with a message saying so.
    #[arg(long, requires_all = ["vm_initrd", "vm_guest_init"])]
    vm_kernel: Option<PathBuf>,
    /// Initramfs of VM-backed instances (FC_VM_INITRD).
    #[arg(long, requires = "vm_kernel")]
    vm_initrd: Option<PathBuf>,
    /// The guest's post-switch_root init, dev/vm/guest-init (FC_VM_GUEST_INIT); the guest agent beside it.
    #[arg(long, requires = "vm_kernel")]
    vm_guest_init: Option<PathBuf>,
    /// A host 127.0.0.1 port that guests reach at their own 127.0.0.1 (repeatable). The port of
    /// --ec2-endpoint (moto, which also serves S3) is always forwarded.
    #[arg(long = "vm-forward-port")]
    vm_forward_ports: Vec<u16>,
    /// Guest memory when the instance has no ssm-simulator:memory-mib tag.
    #[arg(long, default_value_t = 256)]
    vm_memory_mib: u32,
    /// How long a guest may take from QEMU's start to a ready guest agent before its commands fail.
    #[arg(long, default_value_t = 180)]
    vm_boot_timeout_seconds: u64,
}

impl Options {
    fn vm_config(&self) -> Option<vm::Config> {
        let mut forward_ports: Vec<u16> = local_port(&self.ec2_endpoint).into_iter().collect();
        for port in &self.vm_forward_ports {
            if !forward_ports.contains(port) {
                forward_ports.push(*port);
            }
        }
        Some(vm::Config {
            qemu: self.vm_qemu.clone(),
            kernel: self.vm_kernel.clone()?,
            initrd: self.vm_initrd.clone()?,
            guest_init: self.vm_guest_init.clone()?,
            forward_ports,
            default_memory_mib: self.vm_memory_mib,
            boot_timeout: Duration::from_secs(self.vm_boot_timeout_seconds),
        })
    }
}

/// The port of an http://127.0.0.1:PORT/ (or localhost) endpoint: only loopback endpoints can be forwarded.
fn local_port(endpoint: &str) -> Option<u16> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    matches!(host, "127.0.0.1" | "localhost").then(|| port.parse().ok()).flatten()
}

fn parse_millis(s: &str) -> Result<Duration, std::num::ParseIntError> {
    s.parse::<u64>().map(Duration::from_millis)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let options = Options::parse();
    std::fs::create_dir_all(&options.state_dir)?;
    let fleet = fleet::Fleet::new(&options.ec2_endpoint).await;
    let state = Arc::new(api::Simulator::new(options.clone(), fleet, options.vm_config()));
    tokio::spawn(Arc::clone(&state).stop_guests_of_gone_instances());

    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    let bound = listener.local_addr()?;
    if let Some(path) = &options.port_file {
        std::fs::write(path, bound.port().to_string())?;
    }
    tracing::info!(%bound, "ssm simulator listening");
    let app = axum::Router::new()
        .route("/", axum::routing::post(protocol::handle))
        .with_state(Arc::clone(&state));
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    // Guests are this process's children: none may outlive it.
    state.vms.stop_all().await;
    tracing::info!("ssm simulator stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_endpoints_give_a_port_to_forward() {
        assert_eq!(super::local_port("http://127.0.0.1:5000"), Some(5000));
        assert_eq!(super::local_port("http://localhost:7/path"), Some(7));
        assert_eq!(super::local_port("https://ec2.eu-west-1.amazonaws.com"), None);
        assert_eq!(super::local_port("http://10.1.2.3:5000"), None);
    }
}
