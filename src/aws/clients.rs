//! The one place AWS clients are built: the controller's per-region clients and the `verify` command's.
//!
//! Retries are set on purpose rather than left to the SDK's default. The SDK retries a call in standard mode
//! (exponential backoff with jitter, a shared retry budget per client) for at most three attempts with at
//! most 5 s between them: enough to ride out a throttle or a dropped connection within one call, and short,
//! because a call that keeps failing should not hold one of the controller's reconcile workers. Longer trouble
//! is the controller's job: the capture is requeued with its own per-capture exponential backoff
//! (controller/backoff.rs), its Ready condition says what it is waiting for, and nothing is lost meanwhile.
//! Adaptive mode is not used: its client-side rate limiter would slow every capture in a region after one
//! capture's throttle, and captures are few and urgent.

use std::time::Duration;

use std::collections::BTreeMap;

use aws_config::{SdkConfig, retry::RetryConfig};
use aws_sdk_s3::config::{RuntimePlugin, RuntimeComponentsBuilder, SharedHttpClient};

use super::{
    pacing::{Pacer, Rate},
    autoscaling::SdkAutoScaling, ec2::SdkEc2, elb_classic::SdkClassicLoadBalancing, elbv2::SdkLoadBalancing, iam::SdkIam, kms::SdkKms,
    s3::SdkEvidenceStore, ssm::SdkSsm,
};

/// Attempts per AWS call, the first included.
pub const MAX_ATTEMPTS: u32 = 3;
/// The longest wait between two attempts of one call.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub fn retry_config() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS).with_initial_backoff(Duration::from_millis(200)).with_max_backoff(MAX_BACKOFF)
}

/// For creates that carry no client token (SendCommand, CreateSnapshots, CreateMultipartUpload): one attempt.
/// When the answer is lost (a connection cut mid-response, a 5xx after the work was done) the SDK cannot know
/// whether the create happened, and retrying it would make a second command, snapshot set or upload. The
/// caller records its intent first and, after such an error, looks the result up before creating again.
pub fn single_attempt() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(1)
}

/// How the clients of one region are built.
pub struct ClientOptions<'a> {
    /// Path-style S3 addressing (S3-compatible endpoints).
    pub s3_force_path_style: bool,
    /// The role presigned URLs are signed with (see `SdkEvidenceStore`).
    pub presign_role_arn: Option<String>,
    /// Called once per service to give its clients an interceptor (the controller's metrics); None for none.
    pub observe: Option<&'a dyn Fn(&'static str) -> aws_sdk_s3::config::SharedInterceptor>,
    /// Client-side request rates per API family (see `pacing`), shared by this region's clients; None: unpaced.
    pub pacing: Option<&'a BTreeMap<&'static str, Option<Rate>>>,
}

/// The SDK's own default HTTPS client (the one a client builds when given none), for pacing to wrap: the
/// same TLS, connection pool and proxy settings as an unpaced client.
fn default_http_client() -> Option<SharedHttpClient> {
    let plugin = aws_smithy_runtime::client::defaults::default_http_client_plugin_v2(aws_config::BehaviorVersion::latest())?;
    plugin.runtime_components(&RuntimeComponentsBuilder::new("forensic-capture-pacing")).http_client()
}

/// The AWS clients for one region.
#[derive(Clone)]
pub struct RegionClients {
    pub ec2: SdkEc2,
    pub ssm: SdkSsm,
    pub store: SdkEvidenceStore,
    pub autoscaling: SdkAutoScaling,
    pub elbv2: SdkLoadBalancing,
    pub elb_classic: SdkClassicLoadBalancing,
    pub iam: SdkIam,
    pub kms: SdkKms,
}

macro_rules! client {
    ($sdk:ident, $config:expr, $service:literal, $options:expr, $paced:expr) => {{
        let mut builder = $sdk::config::Builder::from($config).retry_config(retry_config());
        if let Some(observe) = $options.observe {
            builder.push_interceptor(observe($service));
        }
        if let Some((pacer, inner)) = $paced {
            builder.set_http_client(Some(pacer.http_client($service, inner.clone())));
        }
        $sdk::Client::from_conf(builder.build())
    }};
}

impl RegionClients {
    /// Clients for `region` (or the base configuration's region when None).
    pub fn new(base: &SdkConfig, region: Option<&str>, options: &ClientOptions<'_>) -> Self {
        let config = match region {
            Some(region) => base.to_builder().region(aws_config::Region::new(region.to_string())).build(),
            None => base.clone(),
        };
        let inner = config.http_client().or_else(default_http_client);
        let paced = options.pacing.map(Pacer::new).zip(inner);
        let paced = paced.as_ref();
        let s3 = {
            let mut builder = aws_sdk_s3::config::Builder::from(&config).retry_config(retry_config()).force_path_style(options.s3_force_path_style);
            if let Some(observe) = options.observe {
                builder.push_interceptor(observe("s3"));
            }
            if let Some((pacer, inner)) = paced {
                builder.set_http_client(Some(pacer.http_client("s3", inner.clone())));
            }
            aws_sdk_s3::Client::from_conf(builder.build())
        };
        RegionClients {
            ec2: SdkEc2(client!(aws_sdk_ec2, &config, "ec2", options, paced)),
            ssm: SdkSsm(client!(aws_sdk_ssm, &config, "ssm", options, paced)),
            store: SdkEvidenceStore { s3, sts: client!(aws_sdk_sts, &config, "sts", options, paced), presign_role_arn: options.presign_role_arn.clone() },
            autoscaling: SdkAutoScaling(client!(aws_sdk_autoscaling, &config, "autoscaling", options, paced)),
            elbv2: SdkLoadBalancing(client!(aws_sdk_elasticloadbalancingv2, &config, "elasticloadbalancing", options, paced)),
            elb_classic: SdkClassicLoadBalancing(client!(aws_sdk_elasticloadbalancing, &config, "elasticloadbalancing", options, paced)),
            iam: SdkIam(client!(aws_sdk_iam, &config, "iam", options, paced)),
            kms: SdkKms(client!(aws_sdk_kms, &config, "kms", options, paced)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_retried_briefly_in_standard_mode() {
        let retry = retry_config();
        assert_eq!(retry.mode(), aws_config::retry::RetryMode::Standard);
        assert_eq!(retry.max_attempts(), 3);
        assert_eq!(retry.max_backoff(), MAX_BACKOFF);
        let base = SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
        let clients = RegionClients::new(&base, Some("eu-west-1"), &ClientOptions { s3_force_path_style: false, presign_role_arn: None, observe: None, pacing: None });
        assert_eq!(clients.ec2.0.config().retry_config().map(|r| r.max_attempts()), Some(3), "the clients carry it");
    }
}
