//! A bound on how many captures acquire evidence at once per account and region (--max-concurrent-acquisitions).
//!
//! A fleet-wide incident can create hundreds of captures in a minute. Acquiring all of them at once would
//! send hundreds of SSM commands and snapshot sets into one account and region together; past a point that
//! only buys throttling and slower evidence for everyone. Captures over the bound wait, in creation order of
//! their reconciles, with `WaitingForCapacity` on their Ready condition, and go on as places free up.
//!
//! A capture holds its place from its first acquisition step to its last (volatile data, memory, disk);
//! isolation does not need one. The places live in the controller's memory: after a restart or a failover a
//! capture that had already started acquiring takes its place back whatever the count, so work in flight is
//! never stalled behind new captures, and a place not confirmed for a while (a capture deleted while it
//! waited) is given up.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// A place unconfirmed this long is free again; acquiring captures reconcile far more often than this.
const STALE_AFTER: Duration = Duration::from_secs(600);

/// Account and region.
pub type Scope = (String, String);

#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// The scope's places are taken: `holding` captures hold them.
    Full { holding: usize },
}

#[derive(Debug, Default)]
pub struct Capacity {
    places: Mutex<HashMap<Scope, HashMap<String, Instant>>>,
}

impl Capacity {
    /// Whether capture `uid` may acquire in `scope` now, under `limit` places (0: no bound). `started`: it began
    /// an acquisition step before (its place is taken back over the bound).
    pub fn admit(&self, scope: &Scope, uid: &str, started: bool, limit: usize, now: Instant) -> Admission {
        let mut places = self.places.lock().unwrap();
        let holders = places.entry(scope.clone()).or_default();
        holders.retain(|_, seen| now.duration_since(*seen) < STALE_AFTER);
        if limit == 0 || started || holders.contains_key(uid) || holders.len() < limit {
            holders.insert(uid.to_string(), now);
            return Admission::Admitted;
        }
        Admission::Full { holding: holders.len() }
    }

    /// Gives up `uid`'s place, wherever it is held.
    pub fn release(&self, uid: &str) {
        for holders in self.places.lock().unwrap().values_mut() {
            holders.remove(uid);
        }
    }

    /// How many places are held in `scope`.
    pub fn holding(&self, scope: &Scope) -> usize {
        self.places.lock().unwrap().get(scope).map_or(0, HashMap::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(region: &str) -> Scope {
        ("123456789012".into(), region.into())
    }

    #[test]
    fn captures_over_the_bound_wait_until_a_place_frees_up() {
        let capacity = Capacity::default();
        let now = Instant::now();
        assert_eq!(capacity.admit(&scope("eu-west-1"), "a", false, 2, now), Admission::Admitted);
        assert_eq!(capacity.admit(&scope("eu-west-1"), "b", false, 2, now), Admission::Admitted);
        assert_eq!(capacity.admit(&scope("eu-west-1"), "c", false, 2, now), Admission::Full { holding: 2 });
        assert_eq!(capacity.admit(&scope("eu-west-1"), "a", false, 2, now), Admission::Admitted, "a holder keeps its place");
        assert_eq!(capacity.admit(&scope("us-east-1"), "d", false, 2, now), Admission::Admitted, "each region has its own places");
        capacity.release("a");
        assert_eq!(capacity.admit(&scope("eu-west-1"), "c", false, 2, now), Admission::Admitted);
        assert_eq!(capacity.holding(&scope("eu-west-1")), 2);
    }

    #[test]
    fn work_in_flight_takes_its_place_back_and_stale_places_are_given_up() {
        let capacity = Capacity::default();
        let now = Instant::now();
        capacity.admit(&scope("r"), "a", false, 1, now);
        assert_eq!(capacity.admit(&scope("r"), "restarted", true, 1, now), Admission::Admitted, "started before a restart");
        assert_eq!(capacity.admit(&scope("r"), "new", false, 1, now), Admission::Full { holding: 2 });
        let later = now + STALE_AFTER + Duration::from_secs(1);
        capacity.admit(&scope("r"), "restarted", true, 1, later);
        assert_eq!(capacity.holding(&scope("r")), 1, "a's place was not confirmed for {STALE_AFTER:?}");
    }

    #[test]
    fn a_limit_of_zero_bounds_nothing() {
        let capacity = Capacity::default();
        for uid in ["a", "b", "c"] {
            assert_eq!(capacity.admit(&scope("r"), uid, false, 0, Instant::now()), Admission::Admitted);
        }
    }
}
