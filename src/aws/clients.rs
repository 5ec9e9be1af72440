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

use aws_config::{SdkConfig, retry::RetryConfig};
use aws_sdk_s3::config::{Credentials, RuntimePlugin, RuntimeComponentsBuilder, SharedHttpClient};

use super::{
    pacing::Pacer,
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
    /// Client-side request rates per API family (see `pacing`), shared by every client set given the same
    /// pacer (one per account and region, as AWS's own limits are); None: unpaced.
    pub pacer: Option<Pacer>,
    /// The identity the clients sign with; None: the base configuration's (the controller's own).
    pub credentials: Option<Credentials>,
}


/// The SDK's own default HTTPS client (the one a client builds when given none), for pacing to wrap: the
/// same TLS, connection pool and proxy settings as an unpaced client.
fn default_http_client() -> Option<SharedHttpClient> {
    let plugin = aws_smithy_runtime::client::defaults::default_http_client_plugin_v2(aws_config::BehaviorVersion::latest())?;
    plugin.runtime_components(&RuntimeComponentsBuilder::new("forensic-capture-pacing")).http_client()
}

/// The AWS clients for one region, signing with one identity.
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
        let mut config = base.to_builder();
        if let Some(region) = region {
            config.set_region(Some(aws_config::Region::new(region.to_string())));
        }
        if let Some(credentials) = &options.credentials {
            config.set_credentials_provider(Some(aws_sdk_s3::config::SharedCredentialsProvider::new(credentials.clone())));
        }
        let config = config.build();
        let inner = config.http_client().or_else(default_http_client);
        let paced = options.pacer.clone().zip(inner);
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

/// The clients one capture uses. Calls about the instance go to its account and region, through the target
/// account's session when the capture names another account; the evidence bucket, the presign role and the
/// signing key stay in the controller's own account and are reached in their own regions, whatever the
/// instance's, so presigned URLs are signed for the bucket's region and the manifest by the key's.
#[derive(Clone)]
pub struct CaptureClients {
    pub ec2: SdkEc2,
    pub ssm: SdkSsm,
    pub autoscaling: SdkAutoScaling,
    pub elbv2: SdkLoadBalancing,
    pub elb_classic: SdkClassicLoadBalancing,
    pub iam: SdkIam,
    /// The evidence bucket, in the evidence region.
    pub store: SdkEvidenceStore,
    /// The signing key, in its own region.
    pub kms: SdkKms,
}

impl CaptureClients {
    /// `instance`: clients for the instance's account and region; `evidence` and `signing`: the controller's
    /// own clients in the evidence region and in the signing key's region.
    pub fn new(instance: RegionClients, evidence: RegionClients, signing: RegionClients) -> Self {
        let RegionClients { ec2, ssm, autoscaling, elbv2, elb_classic, iam, .. } = instance;
        CaptureClients { ec2, ssm, autoscaling, elbv2, elb_classic, iam, store: evidence.store, kms: signing.kms }
    }
}

/// The region in an ARN (`arn:aws:kms:eu-west-1:111122223333:key/...`); None for a bare ID or alias name.
pub fn region_of_arn(arn: &str) -> Option<&str> {
    let mut parts = arn.strip_prefix("arn:")?.split(':');
    let (_partition, _service, region) = (parts.next()?, parts.next()?, parts.next()?);
    (!region.is_empty()).then_some(region)
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
        let clients = RegionClients::new(&base, Some("eu-west-1"), &ClientOptions { s3_force_path_style: false, presign_role_arn: None, observe: None, pacer: None, credentials: None });
        assert_eq!(clients.ec2.0.config().retry_config().map(|r| r.max_attempts()), Some(3), "the clients carry it");
    }

    #[test]
    fn the_region_of_an_arn_is_its_fourth_field() {
        assert_eq!(region_of_arn("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"), Some("eu-west-1"));
        assert_eq!(region_of_arn("arn:aws:kms:us-east-2:111122223333:alias/signing"), Some("us-east-2"));
        assert_eq!(region_of_arn("arn:aws:iam::111122223333:role/x"), None, "IAM ARNs name no region");
        assert_eq!(region_of_arn("1234abcd-12ab-34cd-56ef-1234567890ab"), None);
        assert_eq!(region_of_arn("alias/signing"), None);
    }
}
