//! Sans-IO reconnect backoff: exponential with "equal jitter".
//!
//! The n-th consecutive failure (n = 0, 1, …) waits a delay drawn uniformly
//! from `[base/2, base)`, where `base = min(max, initial · 2ⁿ)`; a success
//! resets n. No clock and no RNG inside: the caller passes a uniform sample
//! in `[0, 1)` (see [`unit_random`] for the one the driver uses).

use std::time::Duration;

/// Exponential backoff with equal jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max` (`max` below
    /// `initial` is raised to `initial`).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            failures: 0,
        }
    }

    /// Consecutive failures recorded since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The un-jittered delay for the next failure: `min(max, initial · 2ⁿ)`.
    pub fn base(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// Records a failure and returns how long to wait before the next
    /// attempt: in `[base/2, base]` for the base before this call. `unit` is
    /// a uniform sample in `[0, 1)`; values outside are clamped.
    pub fn handle_failure(&mut self, unit: f64) -> Duration {
        let base = self.base();
        self.failures = self.failures.saturating_add(1);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let half = base / 2;
        half + (base - half).mul_f64(unit)
    }

    /// Records a success: the next failure starts from `initial` again.
    pub fn handle_success(&mut self) {
        self.failures = 0;
    }
}

/// A sample in `[0, 1)` from the process's hash randomness (seeded by the
/// OS per process, a fresh key per call), mixed with the time. Good enough
/// for spreading reconnects; not for cryptography.
pub fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_from_initial_and_caps_at_max() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let bases: Vec<u128> = (0..6)
            .map(|_| {
                let base = b.base().as_millis();
                b.handle_failure(0.0);
                base
            })
            .collect();
        assert_eq!(bases, vec![100, 200, 400, 800, 1000, 1000]);
        b.handle_success();
        assert_eq!(b.base(), Duration::from_millis(100));
        assert_eq!(b.failures(), 0);
    }

    #[test]
    fn jitter_spans_half_to_full_base() {
        let mut lo = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut hi = lo.clone();
        assert_eq!(lo.handle_failure(0.0), Duration::from_millis(50));
        assert_eq!(hi.handle_failure(1.0), Duration::from_millis(100));
        assert_eq!(
            Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
                .handle_failure(f64::NAN),
            Duration::from_millis(75)
        );
    }

    #[test]
    fn unit_random_is_in_range_and_varies() {
        let samples: Vec<f64> = (0..64).map(|_| unit_random()).collect();
        assert!(samples.iter().all(|u| (0.0..1.0).contains(u)));
        assert!(samples.windows(2).any(|w| w[0] != w[1]));
    }

    proptest! {
        #[test]
        fn delay_is_within_bounds(
            initial_ms in 1u64..100_000,
            extra_ms in 0u64..10_000_000,
            failures in 0usize..200,
            units in proptest::collection::vec(any::<f64>(), 1..8),
        ) {
            let initial = Duration::from_millis(initial_ms);
            let max = Duration::from_millis(initial_ms + extra_ms);
            let mut b = Backoff::new(initial, max);
            let mut prev_base = Duration::ZERO;
            for i in 0..failures {
                let base = b.base();
                prop_assert!(base >= prev_base, "base never shrinks without a success");
                prop_assert!(base >= initial && base <= max);
                let d = b.handle_failure(units[i % units.len()]);
                prop_assert!(d >= base / 2 && d <= base, "{d:?} outside [{:?}, {base:?}]", base / 2);
                prop_assert!(d <= max);
                prev_base = base;
            }
            b.handle_success();
            prop_assert_eq!(b.base(), initial);
        }

        #[test]
        fn delay_is_monotonic_in_the_sample(
            initial_ms in 1u64..10_000,
            failures in 0u32..40,
            u1 in 0.0f64..1.0,
            u2 in 0.0f64..1.0,
        ) {
            let mut b = Backoff::new(Duration::from_millis(initial_ms), Duration::from_secs(3600));
            for _ in 0..failures { b.handle_failure(0.5); }
            let (lo, hi) = if u1 <= u2 { (u1, u2) } else { (u2, u1) };
            let mut b2 = b.clone();
            prop_assert!(b.handle_failure(lo) <= b2.handle_failure(hi));
        }
    }
}
