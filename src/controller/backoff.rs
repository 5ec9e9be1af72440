//! Per-object exponential backoff with jitter for requeues after an error: each consecutive failure of the
//! same capture (or release) doubles the wait, from 1 s up to 2 minutes; a successful reconcile resets it.
//! The jitter ("equal jitter": half the delay fixed, half random) keeps many captures throttled together
//! from retrying in lockstep.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub const BASE: Duration = Duration::from_secs(1);
pub const CAP: Duration = Duration::from_secs(120);
/// From this many consecutive failures on, the capture's Ready condition says it is retrying, and why.
pub const SHOW_AFTER: u32 = 3;

/// The wait after the `failures`-th consecutive failure (1 for the first), `jitter` in [0, 1).
pub fn delay(failures: u32, jitter: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(31);
    let full = BASE.saturating_mul(1u32 << exponent).min(CAP);
    full / 2 + full.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

/// Consecutive failures, by object UID.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Counts a failure of `uid`; returns how many in a row and how long to wait.
    pub fn failed(&self, uid: &str) -> (u32, Duration) {
        let mut failures = self.failures.lock().expect("backoff lock");
        let count = failures.entry(uid.to_string()).or_default();
        *count = count.saturating_add(1);
        (*count, delay(*count, jitter()))
    }

    pub fn succeeded(&self, uid: &str) {
        self.failures.lock().expect("backoff lock").remove(uid);
    }

    /// Failures of `uid` in a row so far.
    pub fn failures(&self, uid: &str) -> u32 {
        self.failures.lock().expect("backoff lock").get(uid).copied().unwrap_or(0)
    }
}

/// A number in [0, 1) that differs between calls (splitmix64 of the clock): spreading retries needs no more.
fn jitter() -> f64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let mut z = nanos.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_one_second_to_the_cap_with_half_of_it_jittered() {
        assert_eq!(delay(1, 0.0), Duration::from_millis(500));
        assert_eq!(delay(1, 0.999_999), Duration::from_millis(999) + Duration::from_nanos(999_500));
        assert_eq!(delay(2, 0.0), Duration::from_secs(1));
        assert_eq!(delay(5, 0.0), Duration::from_secs(8));
        assert_eq!(delay(8, 0.0), Duration::from_secs(60));
        assert_eq!(delay(9, 0.0), Duration::from_secs(60), "capped at 2 minutes (1 minute fixed + up to 1 jittered)");
        assert_eq!(delay(1000, 0.5), Duration::from_secs(90));
    }

    #[test]
    fn failures_count_per_object_and_reset_on_success() {
        let backoff = Backoff::default();
        assert_eq!(backoff.failed("a").0, 1);
        let (count, wait) = backoff.failed("a");
        assert_eq!(count, 2);
        assert!((Duration::from_secs(1)..Duration::from_secs(2)).contains(&wait), "{wait:?}");
        assert_eq!(backoff.failed("b").0, 1, "another capture has its own count");
        backoff.succeeded("a");
        assert_eq!(backoff.failures("a"), 0);
        assert_eq!(backoff.failures("b"), 1);
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..1000 {
            assert!((0.0..1.0).contains(&jitter()));
        }
    }
}
