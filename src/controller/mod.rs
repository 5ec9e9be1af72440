//! The controller runtime: watches ForensicCaptures and drives each through the planner's actions.

pub mod accounts_config;
mod approval;
mod backoff;
mod capacity;
mod clients;
pub mod config;
mod containment;
mod dry_run;
mod failure;
mod health;
mod intake;
mod leader;
mod lock;
pub mod metrics;
mod observe;
pub mod operations_config;
pub mod protection_config;
mod protect;
pub mod readiness;
mod reconcile;
mod records;
mod release;
mod resolve;
mod seal;
mod ssm_command;
mod status;
mod step_context;
mod steps;
mod supervisor;
mod symbols;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::{StreamExt, TryStreamExt};
use kube::{
    Api, Client,
    ResourceExt,
    runtime::{Controller, WatchStreamExt, controller::Action, events::Reporter, reflector, watcher},
};

use crate::api::{CaptureApproval, ContainmentRelease, ForensicCapture, ForensicReadiness};
pub use config::Config;
pub use supervisor::run;

pub const FINALIZER: &str = "forensic-capture.dev/finalizer";
pub const CONTROLLER_NAME: &str = "forensic-capture";

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub reporter: Reporter,
    pub metrics: Arc<metrics::Metrics>,
    pub health: Arc<health::Health>,
    pub backoff: backoff::Backoff,
    /// Places for captures acquiring at once, per account and region.
    pub capacity: capacity::Capacity,
    /// The last status each capture got from this process (status.rs).
    pub own_writes: status::OwnWrites,
    /// Memory of each instance type, per region, as EC2 described it: a type's memory never changes, so it
    /// is asked once per process, not once per capture.
    pub instance_type_memory: Mutex<HashMap<(String, String), Option<i64>>>,
    /// Volatility symbol builds at once: each parses a kernel's BTF and holds its ISF in memory (tens of MiB),
    /// so many captures finishing their volatile step together would otherwise each take that at the same
    /// time (20 at once peaked at 1.45 GiB of RSS); one per CPU keeps the cores busy and the memory flat.
    pub symbol_builds: tokio::sync::Semaphore,
    base_aws: aws_config::SdkConfig,
    /// Every AWS client the controller has built (clients.rs).
    clients: clients::ClientCache,
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
            backoff: backoff::Backoff::default(),
            capacity: capacity::Capacity::default(),
            own_writes: status::OwnWrites::default(),
            instance_type_memory: Mutex::default(),
            symbol_builds: tokio::sync::Semaphore::new(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)),
            base_aws,
            clients: clients::ClientCache::default(),
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
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string())
}

/// Runs the controllers (captures, releases, approvals) and the finding intake until `shutdown` resolves and running reconciles end.
/// Only the leader runs this (supervisor.rs).
async fn run_controllers(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let captures: Api<ForensicCapture> = scoped_api(&ctx);
    let releases: Api<ContainmentRelease> = scoped_api(&ctx);
    let config = kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency);
    // The captures' own watch, so that this process's status writes are left out of the triggers (OwnWrites);
    // the store still sees every version.
    let (store, store_writer) = reflector::store::<ForensicCapture>();
    let own = ctx.clone();
    let watched = watcher::watcher(captures, watcher::Config::default().any_semantic()).modify(drop_field_sets);
    let capture_events = reflector::reflector(store_writer, watched)
        .default_backoff()
        .applied_objects()
        .try_filter(move |capture| {
            let own_write = match (capture.uid(), capture.resource_version()) {
                (Some(uid), Some(rv)) => own.own_writes.is_own(&uid, &rv),
                _ => false,
            };
            std::future::ready(!own_write)
        });
    // A new CaptureApproval starts its capture's reconcile at once, rather than at the capture's next look.
    let capture_controller = Controller::for_stream(capture_events, store).watches(scoped_api::<CaptureApproval>(&ctx), watcher::Config::default(), |approval| {
        approval.namespace().map(|ns| reflector::ObjectRef::new(&approval.spec.capture_name).within(&ns))
    });
    let release_controller = Controller::new(releases, watcher::Config::default().any_semantic());
    let approval_controller = Controller::new(scoped_api::<CaptureApproval>(&ctx), watcher::Config::default().any_semantic());
    let readiness_controller = Controller::new(scoped_api::<ForensicReadiness>(&ctx), watcher::Config::default().any_semantic());
    ctx.metrics.count_captures_in(capture_controller.store());
    tokio::spawn(ctx.health.clone().ready_when_listable(scoped_api(&ctx), scoped_api(&ctx)));
    let capture_controller = capture_controller
        .with_config(config.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(observe::capture, error_policy, ctx.clone())
        .for_each(log_result);
    let release_controller = release_controller
        .with_config(config.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(observe::release, error_policy, ctx.clone())
        .for_each(log_result);
    let approval_controller = approval_controller
        .with_config(config.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(observe::approval, error_policy, ctx.clone())
        .for_each(log_result);
    let readiness_controller = readiness_controller
        .with_config(config)
        .graceful_shutdown_on(shutdown.clone())
        .run(observe::readiness, error_policy, ctx.clone())
        .for_each(log_result);
    let intake = intake::run(ctx, shutdown);
    futures::join!(capture_controller, release_controller, approval_controller, readiness_controller, intake);
}

/// The store holds every capture for as long as it exists, and the field sets of its managedFields (which
/// fields each manager owns: a path per artifact and condition) are most of a finished capture's size. Nothing
/// here reads them; who wrote the object (manager, operation, time), which the manifest and the target-account
/// session name, is kept.
fn drop_field_sets(capture: &mut ForensicCapture) {
    for entry in capture.metadata.managed_fields.iter_mut().flatten() {
        entry.fields_v1 = None;
    }
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

/// Retryable trouble (throttling, 5xx, expired credentials, API server conflicts): try again after this
/// object's own exponential backoff; the work continues.
fn error_policy<K: kube::Resource>(object: Arc<K>, error: &reconcile::Error, ctx: Arc<Context>) -> Action {
    let (failures, wait) = ctx.backoff.failed(object.meta().uid.as_deref().unwrap_or_default());
    tracing::debug!(%error, failures, wait_ms = wait.as_millis() as u64, "requeue after error");
    Action::requeue(wait)
}
