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
    /// Re-check a capture's evidence against its manifest: check the manifest's KMS signature, stream and
    /// re-hash every S3 artifact, check every snapshot still exists with the capture's UID tag. Prints one
    /// line per check; exits 1 on any mismatch, missing artifact or invalid signature.
    Verify {
        /// The manifest's S3 URI (s3://bucket/.../manifest.json), or a capture as namespace/name (read from the
        /// cluster: its status names the manifest, its recorded SHA-256 and whether it was signed).
        target: String,
        /// Fail when the manifest has no signature beside it (implied when verifying a capture that recorded one).
        #[arg(long)]
        require_signature: bool,
        /// Use path-style S3 addressing (S3-compatible endpoints).
        #[arg(long, env = "FC_S3_FORCE_PATH_STYLE", default_value_t = false)]
        s3_force_path_style: bool,
        /// A read-only role to describe one account's snapshots through, as ACCOUNT=ROLE_ARN (repeatable or
        /// comma-separated): the workload account of a cross-account capture, the forensic account of its
        /// copies. Snapshots in accounts without one are described with your own identity.
        #[arg(long = "account-role", env = "FC_VERIFY_ACCOUNT_ROLES", value_delimiter = ',')]
        account_roles: Vec<forensic_capture::controller::accounts_config::TargetRole>,
    },
    /// Check, without changing anything, that instances could be captured now (the check a ForensicReadiness
    /// runs on an interval): per instance, a dry run of a full capture (SSM agent online, platform and
    /// architecture with an AVML configured, memory within the upload plan, what containment would handle);
    /// for the controller's account, the evidence bucket and its Object Lock, the signing key and the presign
    /// role; for each other account, its target role. Takes the controller's settings (flags or FC_*
    /// environment). Exits 1 when anything is not ready.
    Readiness {
        /// An instance to check (repeatable).
        #[arg(long = "instance-id")]
        instance_ids: Vec<String>,
        /// Instances carrying this tag, as KEY=VALUE (repeatable: all must match).
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// An account to look in (repeatable); the controller's own when none.
        #[arg(long = "account")]
        accounts: Vec<String>,
        /// A Region to look in (repeatable); the default Region when none.
        #[arg(long = "region")]
        regions: Vec<String>,
        /// table (for people) or json (the ForensicReadiness status).
        #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
        output: String,
        #[command(flatten)]
        config: Config,
    },
    /// Build Volatility 3 symbols (an ISF) from a capture's symbols.tar.gz, offline, as the controller does at
    /// capture time: for captures whose symbols were not built then, or to rebuild them for review. Prints
    /// what came from where (address source, inferred symbol types, placeholders).
    Symbols {
        /// The capture's symbols.tar.gz (downloaded from the evidence bucket).
        archive: std::path::PathBuf,
        /// Where to write the ISF; Volatility finds it in a `linux/` directory given with `vol -s`.
        #[arg(short, long, default_value = "volatility-symbols.json.xz")]
        output: std::path::PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", forensic_capture::crd::yaml()),
        Command::Symbols { archive, output } => {
            let bytes = std::fs::read(&archive).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", archive.display()))?;
            let inputs = kernel_isf::inputs_from_archive(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", archive.display()))?;
            let isf = kernel_isf::build(&inputs).map_err(|e| anyhow::anyhow!("{}: {e}", archive.display()))?;
            std::fs::write(&output, isf.to_json_xz()).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", output.display()))?;
            println!("{}", serde_json::to_string_pretty(&isf.summary).expect("summary serializes"));
            eprintln!("wrote {}", output.display());
        }
        Command::Verify { target, require_signature, s3_force_path_style, account_roles } => {
            let (manifest, mut expect) = verify_target(&target).await?;
            expect.require_signature |= require_signature;
            let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let options = forensic_capture::aws::clients::ClientOptions { s3_force_path_style, presign_role_arn: None, observe: None, pacer: None, credentials: None };
            let clients = forensic_capture::aws::RegionClients::new(&aws, None, &options);
            let readers = forensic_capture::verify::Readers {
                store: &clients.store,
                ec2: &clients.ec2.0,
                kms: &clients.kms.0,
                sts: &clients.store.sts,
                account_roles: account_roles.into_iter().map(|r| (r.account, r.role_arn)).collect(),
            };
            let report = forensic_capture::verify::verify(&readers, &manifest, &expect).await.map_err(anyhow::Error::msg)?;
            for f in &report.findings {
                println!("{} {:<22} {} {}", if f.ok { "OK  " } else { "FAIL" }, f.name, f.uri, f.detail);
            }
            let failed = report.failed();
            println!("{} checks, {failed} failed", report.findings.len());
            if failed > 0 {
                std::process::exit(1);
            }
        }
        Command::Readiness { instance_ids, tags, accounts, regions, output, config } => {
            if instance_ids.is_empty() && tags.is_empty() {
                anyhow::bail!("select instances: give --instance-id or --tag");
            }
            let spec = forensic_capture::api::ForensicReadinessSpec { instance_ids, instance_tags: tags.into_iter().collect(), accounts, regions, interval_minutes: 60 };
            // Nodes are never read (readiness selects instances by ID and tag), so without a cluster the
            // command still runs, with a client that is never called.
            let client = match kube::Client::try_default().await {
                Ok(client) => client,
                Err(_) => kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().expect("a valid URL")))?,
            };
            let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let ctx = controller::Context::new(client, config, aws);
            let who = std::env::var("USER").map(|u| format!("forensic-capture readiness ({u})")).unwrap_or_else(|_| "forensic-capture readiness".into());
            let status = controller::readiness::check(&ctx, &spec, &who).await.map_err(|e| anyhow::anyhow!("readiness check: {e}"))?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", forensic_capture::readiness::table(&status));
            }
            if !forensic_capture::readiness::verdict(&status).0 {
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

fn parse_tag(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{value:?} is not KEY=VALUE")),
    }
}

/// A manifest URI as given, or the manifest a capture (namespace/name) recorded, with what it recorded.
async fn verify_target(target: &str) -> anyhow::Result<(String, forensic_capture::verify::Expectations)> {
    if target.starts_with("s3://") {
        return Ok((target.to_string(), Default::default()));
    }
    let (namespace, name) =
        target.split_once('/').ok_or_else(|| anyhow::anyhow!("{target}: give a manifest's s3:// URI or a capture as namespace/name"))?;
    let client = kube::Client::try_default().await?;
    let captures: kube::Api<forensic_capture::api::ForensicCapture> = kube::Api::namespaced(client, namespace);
    let capture = captures.get(name).await.map_err(|e| anyhow::anyhow!("cannot read ForensicCapture {target}: {e}"))?;
    forensic_capture::verify::from_capture(&capture).map_err(anyhow::Error::msg)
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
