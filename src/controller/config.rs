//! Controller settings, from flags or environment (the Helm chart sets the environment).

use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// Default evidence bucket, for captures whose spec names none.
    #[arg(long, env = "FC_EVIDENCE_BUCKET")]
    pub evidence_bucket: Option<String>,

    /// Default key prefix inside the evidence bucket.
    #[arg(long, env = "FC_EVIDENCE_PREFIX", default_value = "forensic-capture")]
    pub evidence_prefix: String,

    /// Region for captures whose spec names none (AWS_REGION otherwise).
    #[arg(long, env = "FC_DEFAULT_REGION")]
    pub default_region: Option<String>,

    /// S3 location of the AVML binary for x86_64 instances (s3://bucket/key).
    #[arg(long, env = "FC_AVML_X86_64_URI")]
    pub avml_x86_64_uri: Option<String>,

    /// SHA-256 (hex) the x86_64 AVML binary must have; it does not run otherwise.
    #[arg(long, env = "FC_AVML_X86_64_SHA256")]
    pub avml_x86_64_sha256: Option<String>,

    /// S3 location of the AVML binary for arm64 instances (s3://bucket/key).
    #[arg(long, env = "FC_AVML_ARM64_URI")]
    pub avml_arm64_uri: Option<String>,

    /// SHA-256 (hex) the arm64 AVML binary must have.
    #[arg(long, env = "FC_AVML_ARM64_SHA256")]
    pub avml_arm64_sha256: Option<String>,

    /// Memory source AVML reads on the instance: /proc/kcore, /dev/crash or /dev/mem. Unset: the first one
    /// that can be read, in that order (one source only, since the image is streamed and cannot be rewound).
    #[arg(long, env = "FC_AVML_SOURCE", value_parser = ["/proc/kcore", "/dev/crash", "/dev/mem"])]
    pub avml_source: Option<String>,

    /// How many memory image parts the instance uploads at once (1 to 16). Each part in flight is held in the
    /// instance's memory (/dev/shm) until its PUT returns, so memory use is this many parts (8 MiB or more each).
    #[arg(long, env = "FC_MEMORY_UPLOAD_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub memory_upload_concurrency: u8,

    /// Client-side rate of the controller's own AWS requests, per region and API family, as FAMILY=RATE[/BURST]
    /// (requests per second, and how many may go at once after a quiet spell); repeatable or comma-separated;
    /// RATE 0 leaves a family unpaced. A request over the rate waits for its turn instead of being throttled by
    /// AWS. Families and defaults: ec2-describe=20/50, ec2-mutate=10/50, ssm=25/50, s3=100/100, kms=20/20,
    /// sts=10/10, iam=5/10, autoscaling=5/10, elasticloadbalancing=5/10.
    #[arg(long = "aws-rate-limit", env = "FC_AWS_RATE_LIMITS", value_delimiter = ',')]
    pub aws_rate_limits: Vec<crate::aws::pacing::RateSetting>,

    /// How many captures may acquire evidence (volatile data, memory, disk) at once per account and region;
    /// the others wait with reason WaitingForCapacity and start as places free up. 0: no bound.
    #[arg(long, env = "FC_MAX_CONCURRENT_ACQUISITIONS", default_value_t = 50)]
    pub max_concurrent_acquisitions: usize,

    /// Image quality gate: the least share (percent) of the instance's memory a memory image must hold. AVML
    /// leaves out 16 MiB blocks that are all zeros, so a healthy image of a large, idle instance can be small;
    /// an image below this share is refused (ImageIncomplete). 0 turns the check off.
    #[arg(long, env = "FC_MEMORY_MIN_COVERAGE_PERCENT", default_value_t = 1.0, value_parser = parse_percent)]
    pub memory_min_coverage_percent: f64,

    /// IAM role assumed (with a session policy naming exactly the objects of one step) to sign the presigned
    /// URLs sent to instances, so the controller's own key ID and session token never reach SSM command
    /// history. Unset: URLs are signed with the controller's credentials.
    #[arg(long, env = "FC_PRESIGN_ROLE_ARN")]
    pub presign_role_arn: Option<String>,

    /// Lifetime of presigned URLs for the volatile data and symbols uploads, in seconds.
    #[arg(long, env = "FC_URL_TTL_SECONDS", default_value_t = 900)]
    pub url_ttl_seconds: u64,

    /// Lifetime of the memory upload's presigned URLs, in seconds. The controller writes a fresh upload plan
    /// half-way through each lifetime, so uploads may run longer. Unset: 15 minutes plus a minute per GiB of
    /// the instance's memory, at most an hour.
    #[arg(long, env = "FC_MEMORY_URL_TTL_SECONDS", value_parser = clap::value_parser!(u64).range(20..=3600))]
    pub memory_url_ttl_seconds: Option<u64>,

    /// How long SSM may wait for an offline agent before the command is DeliveryTimedOut (30 s or more).
    #[arg(long, env = "FC_COMMAND_DELIVERY_TIMEOUT_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(i32).range(30..))]
    pub command_delivery_timeout_seconds: i32,

    /// How long, after asking AWS to create a step's SSM command or snapshot set, a restarted controller keeps
    /// looking for it before creating it again, in seconds. SSM's command history and EC2's Describe calls are
    /// eventually consistent; creating again too early would run an acquisition twice or take a second snapshot
    /// set. It only delays a step whose create was cut short by a restart.
    #[arg(long, env = "FC_CREATE_LOOKUP_WINDOW_SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub create_lookup_window_seconds: u64,

    /// Execution timeout of the volatile data command, in seconds.
    #[arg(long, env = "FC_VOLATILE_TIMEOUT_SECONDS", default_value_t = 900)]
    pub volatile_timeout_seconds: u64,

    /// How long a container checkpoint may take, in seconds: the kubelet's checkpoint request and the command
    /// that uploads the archives from the node each get this long.
    #[arg(long, env = "FC_CHECKPOINT_TIMEOUT_SECONDS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(10..=86400))]
    pub checkpoint_timeout_seconds: u64,

    /// Use path-style S3 addressing (needed for S3-compatible endpoints such as the local proof environment).
    #[arg(long, env = "FC_S3_FORCE_PATH_STYLE", default_value_t = false)]
    pub s3_force_path_style: bool,

    /// Namespace of the per-instance lock Leases (the controller's own namespace).
    #[arg(long, env = "FC_LOCK_NAMESPACE", default_value = "forensic-capture")]
    pub lock_namespace: String,

    /// Only reconcile captures in this namespace (all namespaces when unset).
    #[arg(long, env = "FC_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// SQS queue URL that EventBridge rules send GuardDuty and Security Hub findings to (docs/findings.md).
    /// Set: the leader reads it and creates ForensicCaptures as the CapturePolicies say. Unset: no intake.
    #[arg(long, env = "FC_FINDING_QUEUE_URL")]
    pub finding_queue_url: Option<String>,

    /// How many captures are reconciled at once.
    #[arg(long, env = "FC_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    #[command(flatten)]
    pub accounts: super::accounts_config::AccountsConfig,

    #[command(flatten)]
    pub protection: super::protection_config::ProtectionConfig,

    #[command(flatten)]
    pub operations: super::operations_config::OperationsConfig,
}

impl Config {
    pub fn create_lookup_window(&self) -> Duration {
        Duration::from_secs(self.create_lookup_window_seconds)
    }

    pub fn url_ttl(&self) -> Duration {
        Duration::from_secs(self.url_ttl_seconds)
    }

    /// The AVML location and checksum for an instance architecture, when configured.
    pub fn avml_for(&self, architecture: &str) -> Option<(String, String)> {
        let (uri, sha) = match architecture {
            "x86_64" => (&self.avml_x86_64_uri, &self.avml_x86_64_sha256),
            "arm64" | "aarch64" => (&self.avml_arm64_uri, &self.avml_arm64_sha256),
            _ => return None,
        };
        Some((uri.clone()?, sha.clone()?.to_ascii_lowercase()))
    }
}

fn parse_percent(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{value:?} is not a percentage from 0 to 100")),
    }
}

/// Splits `s3://bucket/key`.
pub fn parse_s3_uri(uri: &str) -> Option<(String, String)> {
    let (bucket, key) = uri.strip_prefix("s3://")?.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then(|| (bucket.to_string(), key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_uris_split_into_bucket_and_key() {
        assert_eq!(parse_s3_uri("s3://tools/avml/x86_64"), Some(("tools".into(), "avml/x86_64".into())));
        assert_eq!(parse_s3_uri("s3://tools"), None);
        assert_eq!(parse_s3_uri("https://tools/x"), None);
    }

    #[test]
    fn the_rate_limit_help_names_every_family_with_its_default() {
        use clap::{Args, Command};
        let command = Config::augment_args(Command::new("run"));
        let argument = command.get_arguments().find(|a| a.get_id() == "aws_rate_limits").unwrap();
        let help = argument.get_long_help().or(argument.get_help()).unwrap().to_string().replace('\n', " ");
        for (family, rate) in crate::aws::pacing::DEFAULTS {
            let stated = format!("{family}={}/{}", rate.per_second, rate.burst);
            assert!(help.contains(&stated), "--aws-rate-limit's help does not state {stated}: {help}");
        }
    }
}
