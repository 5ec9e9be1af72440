//! Prometheus metrics: reconciles and their errors, captures by phase, AWS calls and their latency, the time
//! a capture takes to reach each phase, and whether this process leads. Served by `health.rs` at /metrics.

mod aws;

use std::sync::Mutex;

use kube::runtime::reflector::Store;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Metric, Registry},
};

pub use aws::AwsCallObserver;
use crate::api::{ForensicCapture, Phase};

/// Every phase, so each appears in the gauge (at 0 too) and dashboards need not guess which exist.
const PHASES: [Phase; 7] = [Phase::Pending, Phase::Acquiring, Phase::Snapshotted, Phase::Isolated, Phase::Completed, Phase::Failed, Phase::Planned];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepOutcomeLabels {
    step: &'static str,
    state: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadinessLabels {
    readiness: String,
    state: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NeedLabels {
    readiness: String,
    need: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    readiness: String,
    check: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AwsCallLabels {
    operation: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    reconcile_errors: Family<ReasonLabels, Counter>,
    step_outcomes: Family<StepOutcomeLabels, Counter>,
    status_patches: Counter,
    captures: Family<PhaseLabels, Gauge>,
    aws_calls: Family<AwsCallLabels, Counter>,
    aws_call_duration: HistogramFamily<OperationLabels>,
    phase_seconds: HistogramFamily<PhaseLabels>,
    leader: Gauge,
    findings: Family<OutcomeLabels, Counter>,
    readiness_instances: Family<ReadinessLabels, Gauge>,
    readiness_needs: Family<NeedLabels, Gauge>,
    readiness_failed_checks: Family<CheckLabels, Gauge>,
    /// The label sets each ForensicReadiness last set, so a reason that went away goes to 0 rather than
    /// staying at its old count.
    readiness_shown: Mutex<std::collections::HashMap<String, (Vec<ReadinessLabels>, Vec<NeedLabels>, Vec<CheckLabels>)>>,
    /// The capture controller's cache, once this process runs it; the phase gauge is counted from it at
    /// each scrape, so deleted captures leave it without bookkeeping.
    capture_store: Mutex<Option<Store<ForensicCapture>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("forensic_capture");
        let r = &mut registry;
        let reconciles = registered(r, "reconciles", "Reconciles run, by controller (capture, release)", Family::default());
        let reconcile_errors = registered(
            r,
            "reconcile_errors",
            "Reconciles that ended in an error and will be retried, by reason: the Kubernetes API's reason, KubernetesClient, Throttling (AWS asked to slow down), or Transient (AWS 5xx, transport; see aws_calls_total)",
            Family::default(),
        );
        let step_outcomes = registered(
            r,
            "step_outcomes",
            "Steps that ended, by step, state (Succeeded, Failed, Skipped) and stable reason (docs/reference.md#reasons; empty on success)",
            Family::default(),
        );
        let status_patches = registered(r, "status_patches", "ForensicCapture status patches sent to the Kubernetes API", Counter::default());
        let captures = registered(r, "captures", "ForensicCaptures by phase, as the leader sees them (0 on a standby)", Family::default());
        let aws_calls = registered(
            r,
            "aws_calls",
            "AWS API calls (after SDK retries), by operation (service:Operation) and outcome (success, client_error, server_error, transport_error)",
            Family::default(),
        );
        let aws_call_duration = registered(
            r,
            "aws_call_duration_seconds",
            "Duration of AWS API calls including SDK retries, by operation",
            Family::new_with_constructor((|| Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])) as fn() -> Histogram),
        );
        let phase_seconds = registered(
            r,
            "phase_seconds",
            "Time from a capture's creation to reaching each phase, observed when the controller records the phase",
            Family::new_with_constructor(
                (|| Histogram::new([1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0])) as fn() -> Histogram,
            ),
        );
        let findings = registered(
            r,
            "findings",
            "Finding intake (SQS), by outcome: per finding and policy created, already_captured, duplicate, rate_limited; per message unparseable, unmatched (both left for the queue's redrive policy) and error (retried)",
            Family::default(),
        );
        let readiness_instances = registered(
            r,
            "readiness_instances",
            "Instances a ForensicReadiness selected at its last check, by readiness (namespace/name), state (ready, not_ready) and reason (empty for ready; an instance with two reasons counts under both)",
            Family::default(),
        );
        let readiness_needs = registered(
            r,
            "readiness_containment_needs",
            "Instances whose containment would have to handle this (AutoScalingGroup, LoadBalancers, InstanceProfile), by readiness",
            Family::default(),
        );
        let readiness_failed_checks = registered(
            r,
            "readiness_failed_checks",
            "Account checks of a ForensicReadiness that failed at its last check (EvidenceBucket, ObjectLock, SigningKey, PresignRole, TargetRole, Permissions), by readiness, check and reason: a failed one stops every capture it concerns, whatever the instances say",
            Family::default(),
        );
        let leader = registered(r, "leader", "1 while this process is the leader (the one that reconciles), else 0", Gauge::default());
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            step_outcomes,
            status_patches,
            captures,
            aws_calls,
            aws_call_duration,
            phase_seconds,
            leader,
            findings,
            readiness_instances,
            readiness_needs,
            readiness_failed_checks,
            readiness_shown: Mutex::default(),
            capture_store: Mutex::new(None),
        }
    }

    /// The metrics in the OpenMetrics text format (which Prometheus scrapes).
    pub fn encode(&self) -> String {
        self.count_captures();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    pub fn reconciled(&self, controller: &'static str, error_reason: Option<String>) {
        self.reconciles.get_or_create(&ControllerLabels { controller }).inc();
        if let Some(reason) = error_reason {
            self.reconcile_errors.get_or_create(&ReasonLabels { reason }).inc();
        }
    }

    /// A step reached its end; `reason` is empty for Succeeded.
    pub fn step_ended(&self, step: crate::api::Step, state: crate::api::StepState, reason: Option<crate::api::Reason>) {
        let state = match state {
            crate::api::StepState::Running => return,
            crate::api::StepState::Succeeded => "Succeeded",
            crate::api::StepState::Failed => "Failed",
            crate::api::StepState::Skipped => "Skipped",
        };
        let labels = StepOutcomeLabels { step: step.name(), state, reason: reason.map(|r| r.as_str()).unwrap_or_default() };
        self.step_outcomes.get_or_create(&labels).inc();
    }

    /// One outcome of the finding intake (see the metric's help for the outcomes).
    pub fn finding(&self, outcome: &'static str) {
        self.findings.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// A ForensicReadiness check ended: its gauges now show this status.
    pub fn readiness_checked(&self, readiness: &str, status: &crate::api::ForensicReadinessStatus) {
        let mut shown = self.readiness_shown.lock().expect("readiness metrics lock");
        let (old_instances, old_needs, old_checks) = shown.remove(readiness).unwrap_or_default();
        for labels in &old_checks {
            self.readiness_failed_checks.get_or_create(labels).set(0);
        }
        for labels in &old_instances {
            self.readiness_instances.get_or_create(labels).set(0);
        }
        for labels in &old_needs {
            self.readiness_needs.get_or_create(labels).set(0);
        }
        let ready = ReadinessLabels { readiness: readiness.to_string(), state: "ready", reason: String::new() };
        self.readiness_instances.get_or_create(&ready).set(i64::from(status.ready));
        let mut instances = vec![ready];
        for (reason, count) in &status.reasons {
            let labels = ReadinessLabels { readiness: readiness.to_string(), state: "not_ready", reason: reason.clone() };
            self.readiness_instances.get_or_create(&labels).set(i64::from(*count));
            instances.push(labels);
        }
        let mut needs = Vec::new();
        for (need, count) in &status.containment_needs {
            let labels = NeedLabels { readiness: readiness.to_string(), need: need.clone() };
            self.readiness_needs.get_or_create(&labels).set(i64::from(*count));
            needs.push(labels);
        }
        let mut checks: Vec<CheckLabels> = Vec::new();
        for check in status.accounts.iter().flat_map(|a| &a.checks).filter(|c| !c.ok) {
            let labels = CheckLabels { readiness: readiness.to_string(), check: check.name.clone(), reason: check.reason.clone().unwrap_or_default() };
            self.readiness_failed_checks.get_or_create(&labels).inc();
            checks.push(labels);
        }
        shown.insert(readiness.to_string(), (instances, needs, checks));
    }

    pub fn status_patched(&self) {
        self.status_patches.inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn count_captures_in(&self, store: Store<ForensicCapture>) {
        *self.capture_store.lock().expect("metrics store lock") = Some(store);
    }

    /// A capture's status now shows `phase`: observes the time since its creation.
    pub fn phase_reached(&self, capture: &ForensicCapture, phase: Phase) {
        let Some(created) = &capture.metadata.creation_timestamp else { return };
        let seconds = k8s_openapi::jiff::Timestamp::now().duration_since(created.0).as_secs_f64().max(0.0);
        self.phase_seconds.get_or_create(&PhaseLabels { phase: phase_name(phase) }).observe(seconds);
        tracing::info!(phase = phase_name(phase), seconds_since_creation = seconds, "phase reached");
    }

    pub fn aws_observer(self: &std::sync::Arc<Self>, service: &'static str) -> AwsCallObserver {
        AwsCallObserver::new(service, self.clone())
    }

    fn aws_call(&self, operation: String, outcome: &'static str, seconds: f64) {
        self.aws_calls.get_or_create(&AwsCallLabels { operation: operation.clone(), outcome }).inc();
        self.aws_call_duration.get_or_create(&OperationLabels { operation }).observe(seconds);
    }

    fn count_captures(&self) {
        let mut counts = [0i64; PHASES.len()];
        if let Some(store) = &*self.capture_store.lock().expect("metrics store lock") {
            for capture in store.state() {
                // No status yet: not started, which the API calls Pending.
                let phase = capture.status.as_ref().and_then(|s| s.phase).unwrap_or(Phase::Pending);
                if let Some(i) = PHASES.iter().position(|p| *p == phase) {
                    counts[i] += 1;
                }
            }
        }
        for (phase, count) in PHASES.iter().zip(counts) {
            self.captures.get_or_create(&PhaseLabels { phase: phase_name(*phase) }).set(count);
        }
    }
}

/// Registers `metric` (metrics are shared handles: the registry reads the same values we update).
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "Pending",
        Phase::Acquiring => "Acquiring",
        Phase::Snapshotted => "Snapshotted",
        Phase::Isolated => "Isolated",
        Phase::Completed => "Completed",
        Phase::Failed => "Failed",
        Phase::Planned => "Planned",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn counters_carry_their_labels_and_the_total_suffix() {
        let m = Metrics::new();
        m.reconciled("capture", None);
        m.reconciled("capture", Some("Conflict".into()));
        m.reconciled("release", None);
        let text = m.encode();
        assert_eq!(sample(&text, "forensic_capture_reconciles_total{controller=\"capture\"}"), Some("2"));
        assert_eq!(sample(&text, "forensic_capture_reconciles_total{controller=\"release\"}"), Some("1"));
        assert_eq!(sample(&text, "forensic_capture_reconcile_errors_total{reason=\"Conflict\"}"), Some("1"));
    }

    #[test]
    fn a_readiness_check_replaces_the_gauges_of_the_one_before() {
        use crate::api::{AccountReadiness, ForensicReadinessStatus, ReadinessCheck};
        let m = Metrics::new();
        let failing = |name: &str| ReadinessCheck { name: name.into(), ok: false, reason: Some("SigningKeyUnusable".into()), message: "m".into() };
        let first = ForensicReadinessStatus {
            ready: 3,
            reasons: [("NotSsmManaged".to_string(), 2)].into(),
            accounts: vec![AccountReadiness { account_id: "1".into(), region: "r".into(), checks: vec![failing("SigningKey")] }],
            ..Default::default()
        };
        m.readiness_checked("ir/fleet", &first);
        let text = m.encode();
        assert_eq!(sample(&text, "forensic_capture_readiness_instances{readiness=\"ir/fleet\",state=\"ready\",reason=\"\"}"), Some("3"), "{text}");
        assert_eq!(sample(&text, "forensic_capture_readiness_instances{readiness=\"ir/fleet\",state=\"not_ready\",reason=\"NotSsmManaged\"}"), Some("2"));
        assert_eq!(sample(&text, "forensic_capture_readiness_failed_checks{readiness=\"ir/fleet\",check=\"SigningKey\",reason=\"SigningKeyUnusable\"}"), Some("1"));
        m.readiness_checked("ir/fleet", &ForensicReadinessStatus { ready: 5, ..Default::default() });
        let text = m.encode();
        assert_eq!(sample(&text, "forensic_capture_readiness_instances{readiness=\"ir/fleet\",state=\"not_ready\",reason=\"NotSsmManaged\"}"), Some("0"), "a reason that went away shows 0");
        assert_eq!(sample(&text, "forensic_capture_readiness_failed_checks{readiness=\"ir/fleet\",check=\"SigningKey\",reason=\"SigningKeyUnusable\"}"), Some("0"));
    }

    #[test]
    fn every_phase_is_reported_even_without_captures() {
        let text = Metrics::new().encode();
        for phase in PHASES {
            assert_eq!(sample(&text, &format!("forensic_capture_captures{{phase=\"{}\"}}", phase_name(phase))), Some("0"), "{text}");
        }
    }

    #[test]
    fn phase_time_is_measured_from_creation() {
        let m = Metrics::new();
        let mut capture = ForensicCapture::new("c", serde_json::from_value(serde_json::json!({"caseId": "X", "target": {"instanceId": "i-0123456789abcdef0"}})).unwrap());
        let created = k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(90);
        capture.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(created));
        m.phase_reached(&capture, Phase::Isolated);
        let text = m.encode();
        assert_eq!(sample(&text, "forensic_capture_phase_seconds_count{phase=\"Isolated\"}"), Some("1"));
        let sum: f64 = sample(&text, "forensic_capture_phase_seconds_sum{phase=\"Isolated\"}").unwrap().parse().unwrap();
        assert!((90.0..100.0).contains(&sum), "{sum}");
        assert_eq!(sample(&text, "forensic_capture_phase_seconds_bucket{le=\"60.0\",phase=\"Isolated\"}"), Some("0"), "{text}");
        assert_eq!(sample(&text, "forensic_capture_phase_seconds_bucket{le=\"120.0\",phase=\"Isolated\"}"), Some("1"));
    }

    #[test]
    fn the_leader_gauge_follows_leadership() {
        let m = Metrics::new();
        assert_eq!(sample(&m.encode(), "forensic_capture_leader"), Some("0"));
        m.set_leader(true);
        assert_eq!(sample(&m.encode(), "forensic_capture_leader"), Some("1"));
    }
}
