//! What to inject, and the pure, seeded decision for one request.
//!
//! The decision for the k-th request of one operation is a function of (seed, service, operation, k) only, so
//! a failing run replays with the same seed: the same operations, called in the same order, meet the same
//! faults whatever the wall clock or the interleaving of other operations.

use serde::{Deserialize, Serialize};

/// A fault the proxy can answer a request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// The service's own throttling error, before the request reaches the emulator.
    Throttle,
    /// HTTP 500 in the service's protocol, before the request reaches the emulator.
    Internal,
    /// HTTP 503 in the service's protocol, before the request reaches the emulator.
    Unavailable,
    /// The request reaches the emulator (its side effect happens); the connection is cut halfway through the
    /// response, so the client cannot know whether it did.
    Reset,
}

impl Fault {
    pub const ALL: [Fault; 4] = [Fault::Throttle, Fault::Internal, Fault::Unavailable, Fault::Reset];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Throttle => "throttle",
            Fault::Internal => "internal",
            Fault::Unavailable => "unavailable",
            Fault::Reset => "reset",
        }
    }
}

/// Faults for the requests it matches.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The signing name of the service (`ec2`, `s3`, `ssm`, `kms`, `sts`, `iam`, `autoscaling`,
    /// `elasticloadbalancing`); none matches every service.
    #[serde(default)]
    pub service: Option<String>,
    /// The operation (`CreateSnapshots`, `UploadPart`, ...); none matches every operation of the service.
    #[serde(default)]
    pub operation: Option<String>,
    /// The share of matched requests answered with a fault, 0.0 to 1.0.
    #[serde(default)]
    pub share: f64,
    /// The faults drawn from, evenly; default: all of them.
    #[serde(default = "all_faults")]
    pub faults: Vec<Fault>,
    /// Added before every matched request is answered or forwarded.
    #[serde(default)]
    pub latency_ms: u64,
    /// Caps the matched requests' bodies instead of the plan's cap.
    #[serde(default)]
    pub bandwidth_bytes_per_second: Option<u64>,
}

fn all_faults() -> Vec<Fault> {
    Fault::ALL.to_vec()
}

impl Rule {
    fn matches(&self, service: &str, operation: &str) -> bool {
        self.service.as_deref().is_none_or(|s| s == service) && self.operation.as_deref().is_none_or(|o| o == operation)
    }
}

/// Everything the proxy injects; replaced as a whole (PUT /_fault-proxy/plan).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    #[serde(default)]
    pub seed: u64,
    /// The first rule that matches a request decides for it.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Bytes per second each request body and each response body may move (one request at a time per
    /// HTTP/1.1 connection, so this is a per-connection cap); none: unlimited.
    #[serde(default)]
    pub bandwidth_bytes_per_second: Option<u64>,
    /// Added once to every request, as the round trip of a distant endpoint.
    #[serde(default)]
    pub round_trip_ms: u64,
}

impl Plan {
    pub fn validate(&self) -> Result<(), String> {
        for (i, rule) in self.rules.iter().enumerate() {
            if !(0.0..=1.0).contains(&rule.share) {
                return Err(format!("rule {i}: share {} is not between 0 and 1", rule.share));
            }
            if rule.share > 0.0 && rule.faults.is_empty() {
                return Err(format!("rule {i}: a share of faults needs at least one fault to draw from"));
            }
        }
        if self.bandwidth_bytes_per_second == Some(0) || self.rules.iter().any(|r| r.bandwidth_bytes_per_second == Some(0)) {
            return Err("bandwidth_bytes_per_second must be positive (leave it out for unlimited)".into());
        }
        Ok(())
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub fault: Option<Fault>,
    pub latency_ms: u64,
    /// The cap on this request's body and its response's; none: unlimited.
    pub bandwidth_bytes_per_second: Option<u64>,
}

/// The decision for the `sequence`-th request (from 0) of `service`'s `operation`.
pub fn decide(plan: &Plan, service: &str, operation: &str, sequence: u64) -> Decision {
    let Some(rule) = plan.rules.iter().find(|r| r.matches(service, operation)) else {
        return Decision { fault: None, latency_ms: plan.round_trip_ms, bandwidth_bytes_per_second: plan.bandwidth_bytes_per_second };
    };
    let draw = splitmix64(plan.seed ^ fnv1a(service.as_bytes(), operation.as_bytes()) ^ sequence.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let unit = (draw >> 11) as f64 / (1u64 << 53) as f64;
    let fault = (unit < rule.share && !rule.faults.is_empty()).then(|| rule.faults[(splitmix64(draw) % rule.faults.len() as u64) as usize]);
    Decision {
        fault,
        latency_ms: plan.round_trip_ms + rule.latency_ms,
        bandwidth_bytes_per_second: rule.bandwidth_bytes_per_second.or(plan.bandwidth_bytes_per_second),
    }
}

fn fnv1a(service: &[u8], operation: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in service.iter().chain(b":").chain(operation) {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(share: f64, seed: u64) -> Plan {
        Plan { seed, rules: vec![Rule { service: None, operation: None, share, faults: all_faults(), latency_ms: 0, bandwidth_bytes_per_second: None }], ..Plan::default() }
    }

    fn faults(plan: &Plan, n: u64) -> Vec<Option<Fault>> {
        (0..n).map(|k| decide(plan, "ec2", "DescribeInstances", k).fault).collect()
    }

    #[test]
    fn the_same_seed_replays_the_same_faults_and_another_seed_does_not() {
        assert_eq!(faults(&plan(0.2, 7), 500), faults(&plan(0.2, 7), 500));
        assert_ne!(faults(&plan(0.2, 7), 500), faults(&plan(0.2, 8), 500));
    }

    #[test]
    fn the_share_of_faults_is_close_to_the_configured_share_and_draws_every_kind() {
        let drawn = faults(&plan(0.2, 1), 20_000);
        let injected = drawn.iter().flatten().count() as f64 / drawn.len() as f64;
        assert!((0.18..0.22).contains(&injected), "{injected}");
        for kind in Fault::ALL {
            let n = drawn.iter().filter(|f| **f == Some(kind)).count();
            assert!((800..1200).contains(&n), "{kind:?}: {n}");
        }
        assert!(faults(&plan(0.0, 1), 1000).iter().all(Option::is_none));
        assert!(faults(&plan(1.0, 1), 1000).iter().all(Option::is_some));
    }

    #[test]
    fn the_first_matching_rule_decides_and_unmatched_requests_only_get_the_round_trip() {
        let plan = Plan {
            seed: 3,
            rules: vec![
                Rule {
                    service: Some("ec2".into()),
                    operation: Some("CreateSnapshots".into()),
                    share: 1.0,
                    faults: vec![Fault::Throttle],
                    latency_ms: 5,
                    bandwidth_bytes_per_second: Some(100),
                },
                Rule { service: Some("ec2".into()), operation: None, share: 0.0, faults: all_faults(), latency_ms: 1, bandwidth_bytes_per_second: None },
            ],
            round_trip_ms: 20,
            bandwidth_bytes_per_second: Some(1000),
        };
        let decision = |fault, latency_ms, bandwidth| Decision { fault, latency_ms, bandwidth_bytes_per_second: Some(bandwidth) };
        assert_eq!(decide(&plan, "ec2", "CreateSnapshots", 0), decision(Some(Fault::Throttle), 25, 100));
        assert_eq!(decide(&plan, "ec2", "DescribeInstances", 0), decision(None, 21, 1000));
        assert_eq!(decide(&plan, "s3", "PutObject", 0), decision(None, 20, 1000));
    }

    #[test]
    fn invalid_plans_are_refused_with_the_reason() {
        assert!(plan(1.5, 0).validate().unwrap_err().contains("share 1.5"));
        let mut empty = plan(0.5, 0);
        empty.rules[0].faults.clear();
        assert!(empty.validate().unwrap_err().contains("at least one fault"));
        assert!(serde_json::from_str::<Plan>(r#"{"rules":[{"shar":0.1}]}"#).is_err(), "a misspelt field is an error, not a silent no-op");
    }
}
