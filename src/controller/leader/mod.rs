//! Leader election over a coordination.k8s.io/v1 Lease: only the holder runs the controllers.
//!
//! Every retry period each process reads the Lease, asks `decision` what to do, and writes with the
//! resourceVersion it read (create, or replace guarded by that version), so of two candidates racing for
//! the same Lease exactly one write succeeds. A leader that cannot renew within the renew deadline, or that
//! finds someone else holding the Lease, stops acting by exiting: nothing it started can continue without
//! the Lease, and Kubernetes restarts it as a standby. On SIGTERM the leader releases the Lease once its
//! controllers have stopped, so a standby takes over within one retry period instead of a lease duration.

mod decision;

use std::{sync::Arc, time::Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};

use self::decision::{Candidate, Decision, Record};
use super::{Context, health::Health, operations_config::OperationsConfig};

pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    candidate: Candidate,
    config: OperationsConfig,
    health: Arc<Health>,
    /// The holder last logged, so a standby logs a change of leader once, not every retry.
    last_holder: Option<String>,
}

/// Why the leader stopped leading.
#[derive(Debug)]
pub struct Lost(pub String);

enum Round {
    Leading,
    Standby,
    Lost(String),
}

impl LeaderElection {
    pub fn new(ctx: &Context) -> Self {
        let config = ctx.config.operations.clone();
        let namespace = config.leader_election_namespace.clone().unwrap_or_else(|| ctx.config.lock_namespace.clone());
        let identity = identity();
        tracing::info!(%identity, lease = %format!("{namespace}/{}", config.leader_election_lease_name), "leader election: candidate");
        LeaderElection {
            api: Api::namespaced(ctx.client.clone(), &namespace),
            name: config.leader_election_lease_name.clone(),
            candidate: Candidate::new(identity, config.lease_duration(), config.renew_deadline()),
            config,
            health: ctx.health.clone(),
            last_holder: None,
        }
    }

    pub fn identity(&self) -> &str {
        self.candidate.identity()
    }

    /// Returns once this process holds the Lease.
    pub async fn acquire(&mut self) {
        loop {
            if let Round::Leading = self.round().await {
                tracing::info!(identity = %self.identity(), "leader election: leading");
                return;
            }
            tokio::time::sleep(self.config.retry_period()).await;
        }
    }

    /// Renews every retry period; returns only when leadership is lost.
    pub async fn keep(&mut self) -> Lost {
        loop {
            tokio::time::sleep(self.config.retry_period()).await;
            if let Round::Lost(reason) = self.round().await {
                return Lost(reason);
            }
        }
    }

    /// Gives the Lease up (holder cleared) so a standby need not wait for it to expire. Only called once
    /// the controllers have stopped.
    pub async fn release(&mut self) {
        if !self.candidate.is_leading() {
            return;
        }
        let released = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else { return Ok(false) };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(self.identity()) {
                return Ok(false);
            }
            spec.holder_identity = None;
            // As client-go does on release: whoever still honours the duration waits one second at most.
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            self.api.replace(&self.name, &PostParams::default(), &lease).await.map(|_| true)
        };
        match tokio::time::timeout(self.config.retry_period(), released).await {
            Ok(Ok(true)) => tracing::info!(identity = %self.identity(), "leader election: Lease released"),
            Ok(Ok(false)) => tracing::warn!("leader election: the Lease was no longer ours to release"),
            Ok(Err(error)) => tracing::warn!(%error, "leader election: could not release the Lease; a standby takes over when it expires"),
            Err(_) => tracing::warn!("leader election: releasing the Lease timed out; a standby takes over when it expires"),
        }
    }

    /// One read, decision and (maybe) write, bounded by the retry period so a hanging API call cannot hold
    /// the leader past its renew deadline unnoticed.
    async fn round(&mut self) -> Round {
        let attempt = tokio::time::timeout(self.config.retry_period(), self.try_round()).await;
        let error = match attempt {
            Ok(Ok(round)) => return round,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        if let Some(Decision::Lost { reason }) = self.candidate.failed(Instant::now()) {
            return Round::Lost(format!("{reason}; last error: {error}"));
        }
        tracing::warn!(%error, "leader election: could not read or write the Lease");
        if self.candidate.is_leading() { Round::Leading } else { Round::Standby }
    }

    async fn try_round(&mut self) -> Result<Round, kube::Error> {
        let lease = self.api.get_opt(&self.name).await?;
        self.health.api_reachable();
        let current = lease.as_ref().map(record_of);
        let now = Instant::now();
        let decision = self.candidate.decide(current.as_ref(), now);
        let stamp = Timestamp::now();
        let Some(record) = self.candidate.record_for(&decision, current.as_ref(), stamp.to_string()) else {
            return Ok(match decision {
                Decision::Lost { reason } => Round::Lost(reason),
                Decision::Follow { holder } => {
                    if self.last_holder.as_ref() != Some(&holder) {
                        tracing::info!(%holder, "leader election: standby; another process leads");
                        self.last_holder = Some(holder);
                    }
                    Round::Standby
                }
                _ => unreachable!("record_for gives a record for every decision that writes"),
            });
        };
        let spec = spec_for(&record, stamp, lease.as_ref().and_then(|l| l.spec.as_ref()), &decision);
        let written = match lease {
            None => {
                let new = Lease { metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() }, spec: Some(spec) };
                self.api.create(&PostParams::default(), &new).await
            }
            // The resourceVersion read above travels with the object: a concurrent writer makes this a 409.
            Some(mut existing) => {
                existing.spec = Some(spec);
                self.api.replace(&self.name, &PostParams::default(), &existing).await
            }
        };
        match written {
            Ok(_) => {
                if !matches!(decision, Decision::Renew) {
                    tracing::info!(identity = %self.identity(), ?decision, transitions = record.transitions, "leader election: acquired the Lease");
                }
                self.candidate.written(record, now);
                Ok(Round::Leading)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(?decision, "leader election: another process wrote the Lease first");
                Ok(match self.candidate.failed(Instant::now()) {
                    Some(Decision::Lost { reason }) => Round::Lost(reason),
                    _ if self.candidate.is_leading() => Round::Leading,
                    _ => Round::Standby,
                })
            }
            Err(e) => Err(e),
        }
    }
}

fn record_of(lease: &Lease) -> Record {
    let spec = lease.spec.clone().unwrap_or_default();
    Record {
        holder: spec.holder_identity.unwrap_or_default(),
        renew_time: spec.renew_time.map(|t| t.0.to_string()),
        lease_duration: spec.lease_duration_seconds.map(|s| std::time::Duration::from_secs(s.max(0) as u64)),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

fn spec_for(record: &Record, stamp: Timestamp, current: Option<&LeaseSpec>, decision: &Decision) -> LeaseSpec {
    let acquire_time = match decision {
        Decision::Renew => current.and_then(|s| s.acquire_time.clone()).unwrap_or(MicroTime(stamp)),
        _ => MicroTime(stamp),
    };
    LeaseSpec {
        holder_identity: Some(record.holder.clone()),
        lease_duration_seconds: record.lease_duration.map(|d| d.as_secs() as i32),
        acquire_time: Some(acquire_time),
        renew_time: Some(MicroTime(stamp)),
        lease_transitions: Some(record.transitions),
        ..Default::default()
    }
}

/// POD_NAME (set by the chart from the downward API), else the hostname, plus a random suffix: two
/// processes on one host, or a restarted container in the same pod, are different candidates.
fn identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(super::hostname)
        .unwrap_or_else(|| "forensic-capture".into());
    format!("{base}_{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}
