use std::sync::Arc;

use clap::{Parser, Subcommand};
use forensic_capture::controller::{self, Config};

/// Kubernetes controller that preserves evidence from EC2 instances (volatile data, memory, EBS snapshots)
/// and then isolates them, recording every step on the ForensicCapture resource.
#[derive(Parser)]
#[command(name = "forensic-capture", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller. AWS credentials and region come from the standard AWS environment (IRSA, EKS Pod
    /// Identity, AWS_* variables); the cluster from the in-cluster service account or KUBECONFIG.
    Run {
        #[command(flatten)]
        config: Config,
        /// Log format: json (structured, default) or text.
        #[arg(long, env = "FC_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
        log_format: String,
    },
    /// Print the ForensicCapture CustomResourceDefinition as YAML.
    Crd,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", forensic_capture::crd::yaml()),
        Command::Run { config, log_format } => {
            init_logging(&log_format);
            let client = kube::Client::try_default().await?;
            let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let ctx = Arc::new(controller::Context::new(client, config, aws));
            tracing::info!(version = env!("CARGO_PKG_VERSION"), "forensic-capture controller starting");
            controller::run(ctx, shutdown_signal()).await;
            tracing::info!("controller stopped");
        }
    }
    Ok(())
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,forensic_capture=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).with_current_span(true).init();
    } else {
        builder.init();
    }
}

/// SIGTERM (Kubernetes) or Ctrl-C: stop taking new work, let running reconciles finish.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown requested");
}
