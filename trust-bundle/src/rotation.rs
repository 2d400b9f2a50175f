//! The SVID renewal schedule, sans-IO.
//!
//! [`Rotation`] decides *when* to renew; it holds no clock, no timer and no
//! randomness of its own. Feed it events with `handle_*(…, now)` and a random
//! number in `[0, 1)`, ask [`Rotation::poll_timeout`] for the next deadline,
//! and call [`Rotation::poll_renew`] when that deadline passes. The async
//! driver in [`crate::source::run_rotation`] does exactly that.
//!
//! Policy (after Istio and SPIRE): renew at half of the SVID's lifetime,
//! jittered *earlier* by up to `jitter` of the lifetime so that a fleet
//! issued at once does not renew at once; on failure retry with full-jitter
//! exponential backoff, never waiting more than half of the time left, so
//! several attempts fit before expiry.

use std::time::{Duration, SystemTime};

/// Tunables of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct RenewalPolicy {
    /// Fraction of the lifetime at which to renew: 0.5 (half life).
    pub renew_fraction: f64,
    /// Largest share of the lifetime the renewal is moved earlier by: 0.1.
    pub jitter: f64,
    /// First retry delay after a failed renewal: 1 s.
    pub retry_min: Duration,
    /// Longest retry delay: 60 s.
    pub retry_max: Duration,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        RenewalPolicy {
            renew_fraction: 0.5,
            jitter: 0.1,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// When to renew an SVID valid from `not_before` to `not_after`, given a
/// random `r` in `[0, 1)`: `not_before + lifetime × (fraction − jitter × r)`.
/// An SVID whose `not_after` is not after `not_before` is renewed at once
/// (`not_before`).
pub fn renew_at(
    policy: &RenewalPolicy,
    not_before: SystemTime,
    not_after: SystemTime,
    r: f64,
) -> SystemTime {
    let Ok(lifetime) = not_after.duration_since(not_before) else {
        return not_before;
    };
    let r = r.clamp(0.0, 1.0);
    let fraction = (policy.renew_fraction - policy.jitter * r).clamp(0.0, 1.0);
    not_before + lifetime.mul_f64(fraction)
}

/// Delay before retry number `attempt` (0 for the first retry), given a
/// random `r` in `[0, 1)`: full jitter over `retry_min × 2^attempt` capped at
/// `retry_max`, at least `retry_min / 2`, and at most half the time left
/// before `not_after` (but never below 100 ms, so a retry loop cannot spin).
pub fn retry_delay(
    policy: &RenewalPolicy,
    attempt: u32,
    now: SystemTime,
    not_after: SystemTime,
    r: f64,
) -> Duration {
    let ceiling = policy
        .retry_min
        .checked_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX))
        .unwrap_or(policy.retry_max)
        .min(policy.retry_max);
    let floor = policy.retry_min / 2;
    let jittered = floor + (ceiling.saturating_sub(floor)).mul_f64(r.clamp(0.0, 1.0));
    let half_left = not_after.duration_since(now).unwrap_or(Duration::ZERO) / 2;
    jittered.min(half_left).max(Duration::from_millis(100))
}

/// What the schedule is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No SVID yet: renew (issue) now.
    Initial,
    /// Waiting until the deadline.
    Waiting(SystemTime),
    /// A renewal was handed out and has not been reported back.
    Renewing,
}

/// The renewal state machine for one SVID.
#[derive(Debug, Clone)]
pub struct Rotation {
    policy: RenewalPolicy,
    state: State,
    not_after: Option<SystemTime>,
    failures: u32,
}

impl Rotation {
    /// A schedule that asks for a first SVID at once.
    pub fn new(policy: RenewalPolicy) -> Self {
        Rotation {
            policy,
            state: State::Initial,
            not_after: None,
            failures: 0,
        }
    }

    /// A new SVID valid from `not_before` to `not_after` is installed; `r` is
    /// a random number in `[0, 1)`.
    pub fn handle_installed(&mut self, not_before: SystemTime, not_after: SystemTime, r: f64) {
        self.not_after = Some(not_after);
        self.failures = 0;
        self.state = State::Waiting(renew_at(&self.policy, not_before, not_after, r));
    }

    /// The renewal handed out by [`Rotation::poll_renew`] failed at `now`.
    pub fn handle_failed(&mut self, now: SystemTime, r: f64) {
        let not_after = self.not_after.unwrap_or(now + self.policy.retry_max * 2);
        let delay = retry_delay(&self.policy, self.failures, now, not_after, r);
        self.failures = self.failures.saturating_add(1);
        self.state = State::Waiting(now + delay);
    }

    /// The next deadline, if the schedule is waiting for one; `None` while a
    /// renewal is in flight.
    pub fn poll_timeout(&self) -> Option<SystemTime> {
        match self.state {
            State::Waiting(at) => Some(at),
            State::Initial | State::Renewing => None,
        }
    }

    /// Whether to start a renewal at `now`. Returns true once per deadline;
    /// the caller must then report [`Rotation::handle_installed`] or
    /// [`Rotation::handle_failed`].
    pub fn poll_renew(&mut self, now: SystemTime) -> bool {
        let due = match self.state {
            State::Initial => true,
            State::Waiting(at) => now >= at,
            State::Renewing => false,
        };
        if due {
            self.state = State::Renewing;
        }
        due
    }

    /// Consecutive failed renewals since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn renews_at_half_life_without_jitter() {
        let policy = RenewalPolicy::default();
        assert_eq!(
            renew_at(&policy, t(1000), t(1000 + 86_400), 0.0),
            t(1000 + 43_200)
        );
        assert_eq!(
            renew_at(&policy, t(1000), t(1000 + 86_400), 1.0),
            t(1000 + 34_560)
        );
        assert_eq!(renew_at(&policy, t(5), t(5), 0.5), t(5));
    }

    #[test]
    fn state_machine_emits_one_renewal_per_deadline() {
        let mut rot = Rotation::new(RenewalPolicy::default());
        assert!(rot.poll_renew(t(0)), "first SVID is requested at once");
        assert!(!rot.poll_renew(t(0)), "not twice while in flight");
        assert_eq!(rot.poll_timeout(), None);
        rot.handle_installed(t(0), t(100), 0.0);
        assert_eq!(rot.poll_timeout(), Some(t(50)));
        assert!(!rot.poll_renew(t(49)));
        assert!(rot.poll_renew(t(50)));
        rot.handle_failed(t(50), 0.0);
        assert_eq!(rot.failures(), 1);
        let retry = rot.poll_timeout().unwrap();
        assert!(retry > t(50) && retry <= t(75), "{retry:?}");
        assert!(rot.poll_renew(retry));
        rot.handle_installed(t(60), t(160), 0.0);
        assert_eq!(rot.failures(), 0);
        assert_eq!(rot.poll_timeout(), Some(t(110)));
    }

    proptest! {
        #[test]
        fn renewal_falls_between_forty_and_fifty_percent_of_lifetime(
            start in 0u64..4_000_000_000, life in 1u64..10_000_000, r in 0.0f64..1.0
        ) {
            let policy = RenewalPolicy::default();
            let at = renew_at(&policy, t(start), t(start + life), r);
            let offset = at.duration_since(t(start)).unwrap().as_secs_f64();
            prop_assert!(offset >= life as f64 * 0.4 - 1e-6);
            prop_assert!(offset <= life as f64 * 0.5 + 1e-6);
            prop_assert!(at < t(start + life));
        }

        #[test]
        fn retry_delay_is_bounded_and_leaves_room_before_expiry(
            attempt in 0u32..100, left in 1u64..1_000_000, r in 0.0f64..1.0
        ) {
            let policy = RenewalPolicy::default();
            let now = t(1_000);
            let d = retry_delay(&policy, attempt, now, now + Duration::from_secs(left), r);
            prop_assert!(d >= Duration::from_millis(100));
            prop_assert!(d <= policy.retry_max);
            if left >= 2 {
                prop_assert!(d <= Duration::from_secs(left) / 2 + Duration::from_millis(100));
            }
        }

        #[test]
        fn retry_ceiling_grows_monotonically(attempt in 0u32..40) {
            let policy = RenewalPolicy::default();
            let far = t(10_000_000);
            let a = retry_delay(&policy, attempt, t(0), far, 0.999_999);
            let b = retry_delay(&policy, attempt + 1, t(0), far, 0.999_999);
            prop_assert!(b >= a);
        }
    }
}
