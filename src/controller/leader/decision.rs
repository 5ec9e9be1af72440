//! Leader election decisions, free of IO: given the Lease as last read, the time, and who we are, what to
//! do next. The IO half (leader/mod.rs) reads the Lease, asks, writes with a resourceVersion guard, and
//! reports the outcome back.
//!
//! Expiry is judged the way client-go does: not from the holder's `renewTime` (another node's clock) but
//! from how long *this* process has seen the record unchanged, on its own monotonic clock. A candidate thus
//! takes over only after the holder has really been silent for a whole lease duration, whatever the clock
//! skew between nodes.

use std::time::{Duration, Instant};

/// What the Lease says, as far as the election is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Empty when nobody holds it (never held, or released).
    pub holder: String,
    /// Changes on every renewal; a record that stops changing belongs to a holder that stopped renewing.
    pub renew_time: Option<String>,
    /// The holder's own lease duration (it may differ from ours).
    pub lease_duration: Option<Duration>,
    pub transitions: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it holding it.
    Create,
    /// We hold it: write a fresh renewTime.
    Renew,
    /// Free or expired: take it, counting one more transition when the holder changes.
    Acquire { transitions: i32 },
    /// Someone else holds a live lease: look again later.
    Follow { holder: String },
    /// We were leading and someone else holds it now, or we could not renew before the renew deadline:
    /// stop acting at once.
    Lost { reason: String },
}

#[derive(Debug)]
pub struct Candidate {
    identity: String,
    lease_duration: Duration,
    renew_deadline: Duration,
    /// The record last read, and when it was first seen in that exact form.
    observed: Option<(Record, Instant)>,
    /// Set while leading: when the last renewal (or the acquisition) was written.
    renewed_at: Option<Instant>,
}

impl Candidate {
    pub fn new(identity: impl Into<String>, lease_duration: Duration, renew_deadline: Duration) -> Self {
        Candidate { identity: identity.into(), lease_duration, renew_deadline, observed: None, renewed_at: None }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn is_leading(&self) -> bool {
        self.renewed_at.is_some()
    }

    /// Decides from the Lease as just read (`None`: it does not exist).
    pub fn decide(&mut self, lease: Option<&Record>, now: Instant) -> Decision {
        if let Some(lost) = self.past_renew_deadline(now) {
            return lost;
        }
        let Some(record) = lease else {
            self.observed = None;
            return if self.is_leading() { self.lose("the Lease was deleted") } else { Decision::Create };
        };
        let seen_since = match &self.observed {
            Some((previous, since)) if previous == record => *since,
            _ => now,
        };
        self.observed = Some((record.clone(), seen_since));

        if record.holder == self.identity {
            return Decision::Renew;
        }
        if self.is_leading() {
            return self.lose(&format!("the Lease is now held by {:?}", record.holder));
        }
        let duration = record.lease_duration.unwrap_or(self.lease_duration);
        if record.holder.is_empty() || now.duration_since(seen_since) >= duration {
            return Decision::Acquire { transitions: record.transitions + 1 };
        }
        Decision::Follow { holder: record.holder.clone() }
    }

    /// The write for `Create`, `Renew` or `Acquire` succeeded: we lead, as of `now`.
    pub fn written(&mut self, record: Record, now: Instant) {
        self.observed = Some((record, now));
        self.renewed_at = Some(now);
    }

    /// A read or write failed (API error, conflict, timeout). While leading this is only fatal once the
    /// renew deadline has passed since the last successful renewal.
    pub fn failed(&mut self, now: Instant) -> Option<Decision> {
        self.past_renew_deadline(now)
    }

    fn past_renew_deadline(&mut self, now: Instant) -> Option<Decision> {
        let renewed_at = self.renewed_at?;
        let silent = now.duration_since(renewed_at);
        (silent >= self.renew_deadline)
            .then(|| self.lose(&format!("no renewal for {silent:?} (renew deadline {:?})", self.renew_deadline)))
    }

    fn lose(&mut self, reason: &str) -> Decision {
        self.renewed_at = None;
        Decision::Lost { reason: reason.to_string() }
    }

    /// The record to write for a decision (None for Follow and Lost), with `renew_time` the write's time.
    pub fn record_for(&self, decision: &Decision, current: Option<&Record>, renew_time: String) -> Option<Record> {
        let transitions = match decision {
            Decision::Create => 0,
            Decision::Renew => current.map_or(0, |r| r.transitions),
            Decision::Acquire { transitions } => *transitions,
            Decision::Follow { .. } | Decision::Lost { .. } => return None,
        };
        Some(Record {
            holder: self.identity.clone(),
            renew_time: Some(renew_time),
            lease_duration: Some(self.lease_duration),
            transitions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);
    const RENEW: Duration = Duration::from_secs(10);
    const SECOND: Duration = Duration::from_secs(1);

    fn held_by(holder: &str, renewed: &str) -> Record {
        Record { holder: holder.into(), renew_time: Some(renewed.into()), lease_duration: Some(LEASE), transitions: 3 }
    }

    fn candidate() -> Candidate {
        Candidate::new("me", LEASE, RENEW)
    }

    /// Makes `c` the leader at `at` by acquiring a free lease.
    fn leading(c: &mut Candidate, at: Instant) -> Record {
        let free = held_by("", "t0");
        let decision = c.decide(Some(&free), at);
        let record = c.record_for(&decision, Some(&free), "t1".into()).unwrap();
        c.written(record.clone(), at);
        record
    }

    #[test]
    fn a_missing_lease_is_created() {
        assert_eq!(candidate().decide(None, Instant::now()), Decision::Create);
    }

    #[test]
    fn a_released_lease_is_taken_at_once_counting_a_transition() {
        let mut c = candidate();
        assert_eq!(c.decide(Some(&held_by("", "t0")), Instant::now()), Decision::Acquire { transitions: 4 });
    }

    #[test]
    fn a_live_lease_held_by_another_is_followed() {
        let mut c = candidate();
        let t0 = Instant::now();
        assert_eq!(c.decide(Some(&held_by("other", "r1")), t0), Decision::Follow { holder: "other".into() });
        // The holder renews (the record changes): the expiry clock restarts.
        assert_eq!(c.decide(Some(&held_by("other", "r2")), t0 + 14 * SECOND), Decision::Follow { holder: "other".into() });
        assert_eq!(c.decide(Some(&held_by("other", "r2")), t0 + 28 * SECOND), Decision::Follow { holder: "other".into() });
    }

    #[test]
    fn a_lease_unchanged_for_its_duration_is_taken_over() {
        let mut c = candidate();
        let t0 = Instant::now();
        let stale = held_by("other", "r1");
        assert_eq!(c.decide(Some(&stale), t0), Decision::Follow { holder: "other".into() });
        assert_eq!(c.decide(Some(&stale), t0 + 14 * SECOND), Decision::Follow { holder: "other".into() });
        assert_eq!(c.decide(Some(&stale), t0 + LEASE), Decision::Acquire { transitions: 4 });
    }

    #[test]
    fn expiry_counts_from_when_this_process_first_saw_the_record_not_from_its_renew_time() {
        // A renewTime from long ago (or from a node whose clock runs behind) does not make the lease expired:
        // a candidate that has just started must watch it unchanged for a whole duration first.
        let mut c = candidate();
        let t0 = Instant::now();
        let old = held_by("other", "1970-01-01T00:00:00Z");
        assert_eq!(c.decide(Some(&old), t0), Decision::Follow { holder: "other".into() });
        assert_eq!(c.decide(Some(&old), t0 + LEASE), Decision::Acquire { transitions: 4 });
    }

    #[test]
    fn the_holders_own_lease_duration_is_honoured() {
        let mut c = candidate();
        let t0 = Instant::now();
        let long = Record { lease_duration: Some(60 * SECOND), ..held_by("other", "r1") };
        c.decide(Some(&long), t0);
        assert_eq!(c.decide(Some(&long), t0 + 30 * SECOND), Decision::Follow { holder: "other".into() });
        assert_eq!(c.decide(Some(&long), t0 + 60 * SECOND), Decision::Acquire { transitions: 4 });
    }

    #[test]
    fn the_leader_renews_and_keeps_its_transition_count() {
        let mut c = candidate();
        let t0 = Instant::now();
        let mine = leading(&mut c, t0);
        assert!(c.is_leading());
        assert_eq!(mine.transitions, 4);
        let decision = c.decide(Some(&mine), t0 + 2 * SECOND);
        assert_eq!(decision, Decision::Renew);
        let renewed = c.record_for(&decision, Some(&mine), "t2".into()).unwrap();
        assert_eq!((renewed.holder.as_str(), renewed.transitions, renewed.renew_time.as_deref()), ("me", 4, Some("t2")));
    }

    #[test]
    fn a_new_lease_starts_with_no_transitions() {
        let c = candidate();
        let record = c.record_for(&Decision::Create, None, "t1".into()).unwrap();
        assert_eq!((record.holder.as_str(), record.transitions, record.lease_duration), ("me", 0, Some(LEASE)));
    }

    #[test]
    fn the_leader_that_sees_another_holder_has_lost() {
        let mut c = candidate();
        let t0 = Instant::now();
        leading(&mut c, t0);
        assert!(matches!(c.decide(Some(&held_by("other", "r9")), t0 + 2 * SECOND), Decision::Lost { .. }));
        assert!(!c.is_leading());
    }

    #[test]
    fn the_leader_whose_lease_was_deleted_has_lost() {
        let mut c = candidate();
        let t0 = Instant::now();
        leading(&mut c, t0);
        assert!(matches!(c.decide(None, t0 + 2 * SECOND), Decision::Lost { .. }));
    }

    #[test]
    fn failed_renewals_are_tolerated_until_the_renew_deadline() {
        let mut c = candidate();
        let t0 = Instant::now();
        leading(&mut c, t0);
        assert_eq!(c.failed(t0 + 2 * SECOND), None);
        assert_eq!(c.failed(t0 + 9 * SECOND), None);
        assert!(c.is_leading());
        assert!(matches!(c.failed(t0 + RENEW), Some(Decision::Lost { .. })));
        assert!(!c.is_leading());
    }

    #[test]
    fn a_successful_renewal_restarts_the_renew_deadline() {
        let mut c = candidate();
        let t0 = Instant::now();
        let mine = leading(&mut c, t0);
        assert_eq!(c.failed(t0 + 8 * SECOND), None);
        c.written(mine.clone(), t0 + 9 * SECOND);
        assert_eq!(c.failed(t0 + 17 * SECOND), None);
        assert!(matches!(c.failed(t0 + 19 * SECOND), Some(Decision::Lost { .. })));
    }

    #[test]
    fn a_leader_that_reads_its_own_lease_too_late_still_stops() {
        // Reads can succeed while writes keep failing; the deadline is checked on every decision.
        let mut c = candidate();
        let t0 = Instant::now();
        let mine = leading(&mut c, t0);
        assert!(matches!(c.decide(Some(&mine), t0 + 11 * SECOND), Decision::Lost { .. }));
    }

    #[test]
    fn the_renew_deadline_stops_the_leader_before_a_standby_may_take_over() {
        // Leader and standby both see the last renewal at t0; the leader stops at the renew deadline, the
        // standby acquires only at the lease duration.
        let t0 = Instant::now();
        let mut leader = candidate();
        let mine = leading(&mut leader, t0);
        let mut standby = Candidate::new("standby", LEASE, RENEW);
        standby.decide(Some(&mine), t0);
        let mut stopped_at = None;
        let mut taken_at = None;
        for s in 1..=20 {
            let now = t0 + s * SECOND;
            if stopped_at.is_none() && leader.failed(now).is_some() {
                stopped_at = Some(s);
            }
            if taken_at.is_none() && matches!(standby.decide(Some(&mine), now), Decision::Acquire { .. }) {
                taken_at = Some(s);
            }
        }
        assert_eq!((stopped_at, taken_at), (Some(10), Some(15)));
    }
}
