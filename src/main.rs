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
    /// Print the CustomResourceDefinitions (ForensicCapture, ContainmentRelease) as YAML.
    Crd,
    /// Re-check a capture's evidence against its manifest: stream and re-hash every S3 artifact, check every
    /// snapshot still exists with the capture's UID tag. Exits 1 on any mismatch or missing artifact.
    Verify {
        /// The manifest's S3 URI (s3://bucket/.../manifest.json).
        manifest: String,
        /// Use path-style S3 addressing (S3-compatible endpoints).
        #[arg(long, env = "FC_S3_FORCE_PATH_STYLE", default_value_t = false)]
        s3_force_path_style: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", forensic_capture::crd::yaml()),
        Command::Verify { manifest, s3_force_path_style } => {
            let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&aws).force_path_style(s3_force_path_style).build());
            let store = forensic_capture::aws::s3::SdkEvidenceStore { s3, sts: aws_sdk_sts::Client::new(&aws), presign_role_arn: None };
            let ec2 = aws_sdk_ec2::Client::new(&aws);
            let report = forensic_capture::verify::verify(&store, &ec2, &manifest).await.map_err(anyhow::Error::msg)?;
            for f in &report.findings {
                println!("{} {:<22} {} {}", if f.ok { "OK  " } else { "FAIL" }, f.name, f.uri, f.detail);
            }
            let failed = report.findings.iter().filter(|f| !f.ok).count();
            println!("{} artifacts checked, {failed} failed", report.findings.len());
            if failed > 0 {
                std::process::exit(1);
            }
        }
        Command::Run { config, log_format } => {
            init_logging(&log_format);
            let client = kube::Client::try_default().await?;
            let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let ctx = Arc::new(controller::Context::new(client, config, aws));
            tracing::info!(version = env!("CARGO_PKG_VERSION"), "forensic-capture controller starting");
            controller::run(ctx, shutdown_signal()).await?;
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
