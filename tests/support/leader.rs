//! Controllers that elect a leader, and the leader election Lease as the API server holds it.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

use super::{controller::ControllerProcess, fixtures::CaptureEnv};

pub const LEASE_NAME: &str = "forensic-capture-leader";
/// The controller's defaults, which these tests run with.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// A controller of `env` with leader election on, named `name` (its identity starts with `name_`).
pub fn candidate(env: &CaptureEnv, name: &str, extra: &[(&str, String)]) -> ControllerProcess {
    let mut vars = env.controller_env();
    vars.push(("FC_LEADER_ELECT", "true".into()));
    vars.push(("POD_NAME", name.into()));
    vars.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    ControllerProcess::start(&vars, &format!("{}-{name}", env.namespace))
}

/// The Lease in the lock namespace (the election's default namespace).
pub async fn lease(env: &CaptureEnv) -> Option<Lease> {
    Api::<Lease>::namespaced(env.kube.clone(), &env.namespace).get_opt(LEASE_NAME).await.expect("read the leader Lease")
}

pub async fn holder(env: &CaptureEnv) -> String {
    lease(env).await.and_then(|l| l.spec?.holder_identity).unwrap_or_default()
}

/// Polls the Lease every 50 ms until its holder satisfies `wanted`; the holder and how long it took.
pub async fn wait_for_holder(env: &CaptureEnv, timeout: Duration, wanted: impl Fn(&str) -> bool) -> (String, Duration) {
    let started = Instant::now();
    loop {
        let holder = holder(env).await;
        if wanted(&holder) {
            return (holder, started.elapsed());
        }
        assert!(started.elapsed() < timeout, "Lease holder still {holder:?} after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
