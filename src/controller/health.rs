//! The operations endpoint: GET /metrics (Prometheus), /healthz (liveness), /readyz (readiness).
//!
//! Liveness is the process answering at all: a controller that is stuck in a way a restart would cure is
//! one whose HTTP server is stuck too, and anything else (AWS or the API server being down) would not be
//! cured by a restart, so it must not fail liveness.
//!
//! Readiness: the Kubernetes API answered, and, on the leader, it answers the watches' list queries.
//! A standby is ready too: it has nothing to sync, it must count as available for the PodDisruptionBudget
//! and rolling updates (a never-ready standby would block node drains), and its /metrics (leader 0) should
//! stay in the Service's endpoints. Readiness ends when shutdown starts.

use std::{
    net::SocketAddr,
    time::Duration,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get};
use kube::{Api, api::ListParams};

use super::metrics::Metrics;
use crate::api::{ContainmentRelease, ForensicCapture};

/// What the probes report; set by the supervisor, the leader election and the controllers.
#[derive(Debug, Default)]
pub struct Health {
    api_reachable: AtomicBool,
    leading: AtomicBool,
    watches_started: AtomicBool,
    stopping: AtomicBool,
}

impl Health {
    pub fn api_reachable(&self) {
        self.api_reachable.store(true, Ordering::Relaxed);
    }

    pub fn set_leading(&self) {
        self.leading.store(true, Ordering::Relaxed);
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Shutdown has started: reconciles end after their current step.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub fn is_ready(&self) -> bool {
        let watching = !self.leading.load(Ordering::Relaxed) || self.watches_started.load(Ordering::Relaxed);
        self.api_reachable.load(Ordering::Relaxed) && watching && !self.is_stopping()
    }

    /// Marks the watches started once the API server answers the controllers' own list queries (the
    /// first thing their watches do), retrying while it does not: a missing CRD or a missing RBAC grant
    /// keeps the leader unready, with the reason in the log.
    ///
    /// (`Store::wait_until_ready` would say when the caches are filled, but it wakes only the last task to
    /// poll it, and the controller itself waits on it.)
    pub async fn ready_when_listable(self: Arc<Self>, captures: Api<ForensicCapture>, releases: Api<ContainmentRelease>) {
        let one = ListParams::default().limit(1);
        loop {
            match futures::try_join!(captures.list_metadata(&one), releases.list_metadata(&one)) {
                Ok(_) => break,
                Err(error) => tracing::warn!(%error, "not ready: cannot list ForensicCaptures and ContainmentReleases"),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        self.api_reachable();
        self.watches_started.store(true, Ordering::Relaxed);
        tracing::info!("watches started");
    }
}

/// Binds now, so a bad or busy address stops the process at start-up instead of going unnoticed.
pub async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("metrics and health endpoint: cannot listen on {address}: {e}"))?;
    tracing::info!(address = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    Ok(listener)
}

pub async fn serve(listener: tokio::net::TcpListener, health: Arc<Health>, metrics: Arc<Metrics>) {
    let app = Router::new()
        .route("/metrics", get(metrics_text).with_state(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readiness).with_state(health));
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "metrics and health endpoint stopped");
    }
}

async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.encode())
}

async fn readiness(State(health): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if health.is_ready() { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_is_ready_once_the_api_answers() {
        let health = Health::default();
        assert!(!health.is_ready());
        health.api_reachable();
        assert!(health.is_ready());
    }

    #[test]
    fn the_leader_is_ready_once_its_watches_started() {
        let health = Health::default();
        health.api_reachable();
        health.set_leading();
        assert!(!health.is_ready());
        health.watches_started.store(true, Ordering::Relaxed);
        assert!(health.is_ready());
    }

    #[test]
    fn readiness_ends_at_shutdown() {
        let health = Health::default();
        health.api_reachable();
        health.stop();
        assert!(!health.is_ready() && health.is_stopping());
    }
}
