//! What the proxy saw and injected, per service and operation, for tests to read (GET /_fault-proxy/counters).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::plan::Fault;

#[derive(Debug, Default, Clone, Serialize)]
pub struct OperationCounts {
    /// Requests received.
    pub requests: u64,
    /// Requests that reached the emulator (resets included: their side effect happened).
    pub forwarded: u64,
    /// Injected faults by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Requests that had latency added.
    pub delayed: u64,
    /// Requests the emulator could not be reached for (answered 502).
    pub upstream_errors: u64,
}

/// One request, for timelines (GET /_fault-proxy/requests).
#[derive(Debug, Clone, Serialize)]
pub struct Logged {
    /// Arrival, in milliseconds since the Unix epoch.
    pub at_ms: f64,
    /// Until the answer's headers were sent back, in milliseconds.
    pub ms: f64,
    /// `service:operation`.
    pub operation: String,
    pub fault: Option<&'static str>,
    /// The access key ID that signed it (SigV4 header or presigned query), if any.
    pub access_key: Option<String>,
    /// The region it was signed for.
    pub region: Option<String>,
    /// An EC2 request sent with DryRun=true: EC2 answers DryRunOperation or UnauthorizedOperation and does nothing.
    pub dry_run: bool,
}

/// The most recent requests kept.
const LOG_LIMIT: usize = 20_000;

#[derive(Debug, Default)]
pub struct Counters {
    /// Keyed `service:operation`.
    operations: BTreeMap<String, OperationCounts>,
    log: std::collections::VecDeque<Logged>,
}

impl Counters {
    /// Counts a received request; returns its sequence number within its operation (from 0).
    pub fn received(&mut self, key: &str) -> u64 {
        let counts = self.operations.entry(key.to_string()).or_default();
        counts.requests += 1;
        counts.requests - 1
    }

    pub fn update(&mut self, key: &str, change: impl FnOnce(&mut OperationCounts)) {
        change(self.operations.entry(key.to_string()).or_default());
    }

    pub fn injected(&mut self, key: &str, fault: Fault) {
        self.update(key, |c| *c.faults.entry(fault.name()).or_default() += 1);
    }

    pub fn log(&mut self, entry: Logged) {
        if self.log.len() == LOG_LIMIT {
            self.log.pop_front();
        }
        self.log.push_back(entry);
    }

    /// The most recent requests, oldest first.
    pub fn requests(&self) -> serde_json::Value {
        serde_json::json!(self.log)
    }

    /// The counts, with totals over every operation under `total`.
    pub fn report(&self) -> serde_json::Value {
        let mut total = OperationCounts::default();
        for counts in self.operations.values() {
            total.requests += counts.requests;
            total.forwarded += counts.forwarded;
            total.delayed += counts.delayed;
            total.upstream_errors += counts.upstream_errors;
            for (kind, n) in &counts.faults {
                *total.faults.entry(kind).or_default() += n;
            }
        }
        serde_json::json!({"total": total, "operations": self.operations})
    }
}
