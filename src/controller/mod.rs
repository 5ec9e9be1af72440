//! The controller runtime: watches ForensicCaptures and drives each through the planner's actions.

pub mod config;
mod health;
mod leader;
mod lock;
pub mod metrics;
mod observe;
pub mod operations_config;
pub mod protection_config;
mod reconcile;
mod release;
mod status;
mod steps;
mod supervisor;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use kube::{
    Api, Client,
    runtime::{Controller, controller::Action, events::Reporter, watcher},
};

use crate::{
    api::{ContainmentRelease, ForensicCapture},
    aws::{autoscaling::SdkAutoScaling, ec2::SdkEc2, elb_classic::SdkClassicLoadBalancing, elbv2::SdkLoadBalancing, iam::SdkIam, kms::SdkKms, s3::SdkEvidenceStore, ssm::SdkSsm},
};
pub use config::Config;
pub use supervisor::run;

pub const FINALIZER: &str = "forensic-capture.dev/finalizer";
pub const CONTROLLER_NAME: &str = "forensic-capture";

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

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub reporter: Reporter,
    pub metrics: Arc<metrics::Metrics>,
    pub health: Arc<health::Health>,
    base_aws: aws_config::SdkConfig,
    regions: Mutex<HashMap<String, RegionClients>>,
}

impl Context {
    pub fn new(client: Client, config: Config, base_aws: aws_config::SdkConfig) -> Self {
        let instance = std::env::var("POD_NAME").ok().or_else(|| hostname());
        Context {
            client,
            config,
            reporter: Reporter { controller: CONTROLLER_NAME.into(), instance },
            metrics: Arc::new(metrics::Metrics::new()),
            health: Arc::default(),
            base_aws,
            regions: Mutex::new(HashMap::new()),
        }
    }

    pub fn default_region(&self) -> String {
        self.config
            .default_region
            .clone()
            .or_else(|| self.base_aws.region().map(|r| r.to_string()))
            .unwrap_or_else(|| "us-east-1".into())
    }

    /// Shutdown has started: a reconcile ends after its current step.
    pub fn stopping(&self) -> bool {
        self.health.is_stopping()
    }

    /// Clients for `region`, built once and shared; every call they make is counted and timed.
    pub fn aws(&self, region: &str) -> RegionClients {
        let mut regions = self.regions.lock().expect("region cache lock");
        regions
            .entry(region.to_string())
            .or_insert_with(|| {
                let config = self.base_aws.to_builder().region(aws_config::Region::new(region.to_string())).build();
                let observe = |service| self.metrics.aws_observer(service);
                let s3_config = aws_sdk_s3::config::Builder::from(&config)
                    .force_path_style(self.config.s3_force_path_style)
                    .interceptor(observe("s3"))
                    .build();
                RegionClients {
                    ec2: SdkEc2(aws_sdk_ec2::Client::from_conf(aws_sdk_ec2::config::Builder::from(&config).interceptor(observe("ec2")).build())),
                    ssm: SdkSsm(aws_sdk_ssm::Client::from_conf(aws_sdk_ssm::config::Builder::from(&config).interceptor(observe("ssm")).build())),
                    store: SdkEvidenceStore {
                        s3: aws_sdk_s3::Client::from_conf(s3_config),
                        sts: aws_sdk_sts::Client::from_conf(aws_sdk_sts::config::Builder::from(&config).interceptor(observe("sts")).build()),
                        presign_role_arn: self.config.presign_role_arn.clone(),
                    },
                    autoscaling: SdkAutoScaling(aws_sdk_autoscaling::Client::from_conf(
                        aws_sdk_autoscaling::config::Builder::from(&config).interceptor(observe("autoscaling")).build(),
                    )),
                    elbv2: SdkLoadBalancing(aws_sdk_elasticloadbalancingv2::Client::from_conf(
                        aws_sdk_elasticloadbalancingv2::config::Builder::from(&config).interceptor(observe("elasticloadbalancing")).build(),
                    )),
                    elb_classic: SdkClassicLoadBalancing(aws_sdk_elasticloadbalancing::Client::from_conf(
                        aws_sdk_elasticloadbalancing::config::Builder::from(&config).interceptor(observe("elasticloadbalancing")).build(),
                    )),
                    iam: SdkIam(aws_sdk_iam::Client::from_conf(aws_sdk_iam::config::Builder::from(&config).interceptor(observe("iam")).build())),
                    kms: SdkKms(aws_sdk_kms::Client::from_conf(aws_sdk_kms::config::Builder::from(&config).interceptor(observe("kms")).build())),
                }
            })
            .clone()
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string())
}

/// Runs both controllers (captures and releases) until `shutdown` resolves and running reconciles end.
/// Only the leader runs this (supervisor.rs).
async fn run_controllers(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let captures: Api<ForensicCapture> = scoped_api(&ctx);
    let releases: Api<ContainmentRelease> = scoped_api(&ctx);
    let config = kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency);
    let capture_controller = Controller::new(captures, watcher::Config::default().any_semantic());
    let release_controller = Controller::new(releases, watcher::Config::default().any_semantic());
    ctx.metrics.count_captures_in(capture_controller.store());
    tokio::spawn(ctx.health.clone().ready_when_listable(scoped_api(&ctx), scoped_api(&ctx)));
    let capture_controller = capture_controller
        .with_config(config.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(observe::capture, error_policy, ctx.clone())
        .for_each(log_result);
    let release_controller = release_controller
        .with_config(config)
        .graceful_shutdown_on(shutdown)
        .run(observe::release, error_policy, ctx)
        .for_each(log_result);
    futures::join!(capture_controller, release_controller);
}

fn scoped_api<K>(ctx: &Context) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match &ctx.config.watch_namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    }
}

async fn log_result<K: kube::Resource, E: std::fmt::Display>(
    result: Result<(kube::runtime::reflector::ObjectRef<K>, Action), kube::runtime::controller::Error<E, kube::runtime::watcher::Error>>,
) {
    match result {
        Ok((object, _)) => tracing::debug!(object = %object, "reconciled"),
        // Logged, with its reason, inside the reconcile's span (observe.rs).
        Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
        Err(error) => tracing::warn!(%error, "controller stream error"),
    }
}

fn error_policy<K>(_object: Arc<K>, error: &reconcile::Error, _ctx: Arc<Context>) -> Action {
    // Retryable trouble (throttling, 5xx, API server conflicts): try again soon; the work continues.
    tracing::debug!(%error, "requeue after error");
    Action::requeue(Duration::from_secs(5))
}
