//! The controller runtime: watches ForensicCaptures and drives each through the planner's actions.

pub mod config;
mod lock;
mod reconcile;
mod status;
mod steps;

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
    api::ForensicCapture,
    aws::{autoscaling::SdkAutoScaling, ec2::SdkEc2, elbv2::SdkLoadBalancing, s3::SdkEvidenceStore, ssm::SdkSsm},
};
pub use config::Config;

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
}

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub reporter: Reporter,
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

    /// Clients for `region`, built once and shared.
    pub fn aws(&self, region: &str) -> RegionClients {
        let mut regions = self.regions.lock().expect("region cache lock");
        regions
            .entry(region.to_string())
            .or_insert_with(|| {
                let config = self.base_aws.to_builder().region(aws_config::Region::new(region.to_string())).build();
                let s3_config = aws_sdk_s3::config::Builder::from(&config).force_path_style(self.config.s3_force_path_style).build();
                RegionClients {
                    ec2: SdkEc2(aws_sdk_ec2::Client::new(&config)),
                    ssm: SdkSsm(aws_sdk_ssm::Client::new(&config)),
                    store: SdkEvidenceStore {
                        s3: aws_sdk_s3::Client::from_conf(s3_config),
                        sts: aws_sdk_sts::Client::new(&config),
                        presign_role_arn: self.config.presign_role_arn.clone(),
                    },
                    autoscaling: SdkAutoScaling(aws_sdk_autoscaling::Client::new(&config)),
                    elbv2: SdkLoadBalancing(aws_sdk_elasticloadbalancingv2::Client::new(&config)),
                }
            })
            .clone()
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string())
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let captures: Api<ForensicCapture> = match &ctx.config.watch_namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let concurrency = ctx.config.concurrency;
    Controller::new(captures, watcher::Config::default().any_semantic())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(capture = %object, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(error, object)) => {
                    tracing::warn!(capture = %object, %error, "reconcile failed; will retry")
                }
                Err(error) => tracing::warn!(%error, "controller stream error"),
            }
        })
        .await;
}

fn error_policy(_capture: Arc<ForensicCapture>, error: &reconcile::Error, _ctx: Arc<Context>) -> Action {
    // Retryable trouble (throttling, 5xx, API server conflicts): try again soon; the capture continues.
    tracing::debug!(%error, "requeue after error");
    Action::requeue(Duration::from_secs(5))
}
