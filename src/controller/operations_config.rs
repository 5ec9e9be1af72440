//! Settings for running the controller in a cluster: the metrics and health endpoint, leader election and
//! graceful shutdown. Flattened into [`super::Config`]; the Helm chart sets the environment variables.

use std::{net::SocketAddr, time::Duration};

#[derive(clap::Args, Debug, Clone)]
pub struct OperationsConfig {
    /// Address of the HTTP server for /metrics (Prometheus), /healthz and /readyz. Port 0 picks a free port
    /// (the address is logged).
    #[arg(long, env = "FC_METRICS_BIND_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_bind_address: SocketAddr,

    /// Elect one leader among the controller replicas through a coordination.k8s.io Lease; only the leader
    /// reconciles. Turn off only when exactly one process can ever run.
    #[arg(long, env = "FC_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Namespace of the leader election Lease (the lock namespace when unset).
    #[arg(long, env = "FC_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader election Lease.
    #[arg(long, env = "FC_LEADER_ELECTION_LEASE_NAME", default_value = "forensic-capture-leader")]
    pub leader_election_lease_name: String,

    /// How long a leader's claim lasts without renewal; a standby takes over once the Lease has not changed
    /// for this long.
    #[arg(long, env = "FC_LEADER_ELECTION_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..))]
    pub leader_election_lease_duration_seconds: u64,

    /// How long the leader keeps acting without a successful renewal before it stops (exits); shorter than
    /// the lease duration so it has stopped before anyone can take over.
    #[arg(long, env = "FC_LEADER_ELECTION_RENEW_DEADLINE_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub leader_election_renew_deadline_seconds: u64,

    /// Interval between attempts to acquire or renew the Lease.
    #[arg(long, env = "FC_LEADER_ELECTION_RETRY_PERIOD_SECONDS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub leader_election_retry_period_seconds: u64,

    /// On SIGTERM, how long running reconciles may take to finish their current step before the process
    /// exits without them (keep below the pod's terminationGracePeriodSeconds).
    #[arg(long, env = "FC_SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,
}

impl OperationsConfig {
    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.leader_election_lease_duration_seconds)
    }

    pub fn renew_deadline(&self) -> Duration {
        Duration::from_secs(self.leader_election_renew_deadline_seconds)
    }

    pub fn retry_period(&self) -> Duration {
        Duration::from_secs(self.leader_election_retry_period_seconds)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }

    /// The durations only keep one leader when retry < renew deadline < lease duration.
    pub fn validate(&self) -> Result<(), String> {
        let (lease, renew, retry) = (self.lease_duration(), self.renew_deadline(), self.retry_period());
        if !(retry < renew && renew < lease) {
            return Err(format!(
                "leader election needs retry period ({retry:?}) < renew deadline ({renew:?}) < lease duration ({lease:?})"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        operations: OperationsConfig,
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let ops = Cli::parse_from(["fc"]).operations;
        assert_eq!(ops.metrics_bind_address.to_string(), "0.0.0.0:8080");
        assert!(ops.leader_elect);
        assert_eq!(ops.leader_election_lease_name, "forensic-capture-leader");
        assert_eq!((ops.lease_duration(), ops.renew_deadline(), ops.retry_period()), (
            Duration::from_secs(15),
            Duration::from_secs(10),
            Duration::from_secs(2)
        ));
        assert!(ops.validate().is_ok());
    }

    #[test]
    fn leader_election_can_be_switched_off() {
        assert!(!Cli::parse_from(["fc", "--leader-elect=false"]).operations.leader_elect);
        assert!(!Cli::parse_from(["fc", "--leader-elect", "false"]).operations.leader_elect);
    }

    #[test]
    fn a_renew_deadline_beyond_the_lease_duration_is_refused() {
        let ops = Cli::parse_from(["fc", "--leader-election-renew-deadline-seconds", "20"]).operations;
        assert!(ops.validate().unwrap_err().contains("renew deadline"));
    }
}
