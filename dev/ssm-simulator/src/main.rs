//! SSM Run Command simulator: the subset of the AWS Systems Manager JSON API that forensic-capture uses
//! (SendCommand, GetCommandInvocation, ListCommands, ListCommandInvocations, DescribeInstanceInformation,
//! CancelCommand), executing `AWS-RunShellScript` commands for real with bash in a per-instance sandbox.
//!
//! moto's SSM marks every command successful without running it, which would prove nothing about the
//! on-instance scripts. This server asks moto's EC2 which instances exist, and treats running instances as
//! managed nodes whose "agent" runs the script under bubblewrap.

mod api;
mod fleet;
mod protocol;
mod runner;
mod store;

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
    let state = Arc::new(api::Simulator::new(options.clone(), fleet));

    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    let bound = listener.local_addr()?;
    if let Some(path) = &options.port_file {
        std::fs::write(path, bound.port().to_string())?;
    }
    tracing::info!(%bound, "ssm simulator listening");
    let app = axum::Router::new()
        .route("/", axum::routing::post(protocol::handle))
        .with_state(state);
    axum::serve(listener, app).await?;
    Ok(())
}
