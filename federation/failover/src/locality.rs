//! Envoy's locality-weighted load balancing inside one priority level, and a
//! weighted pick from a uniform random number.
//!
//! Source: envoyproxy.io `intro/arch_overview/upstream/load_balancing/`
//! `locality_weight` (FAILOVER-REFERENCE §2).

use crate::priority::{health_score, Health};

/// Effective weights of the localities of one level (FAILOVER-REFERENCE §2),
/// one per locality and in the same order; all 0 when nothing is available.
///
/// `effective_weight = weight × min(100, factor × healthy / total)`, the
/// availability in whole percent rounded down as in [`crate::priority_load`]
/// (`overprovisioning_factor` in percent, 140 = Envoy's 1.4). A locality
/// takes `effective_weight / Σ effective_weight` of the level's requests:
/// feed the result to [`pick_weighted`]. A locality with weight 0 gets
/// nothing (gRPC skips localities without a weight, FAILOVER-REFERENCE §4).
pub fn locality_shares(localities: &[(u32, Health)], overprovisioning_factor: u32) -> Vec<u64> {
    localities
        .iter()
        .map(|&(weight, health)| {
            u64::from(weight) * u64::from(health_score(health, overprovisioning_factor))
        })
        .collect()
}

/// Picks an index with probability proportional to `weights`, from a
/// uniform `random` over all of `u64`; `None` if every weight is 0.
///
/// The pick maps `random` onto `[0, Σ weights)` by multiplication (the high
/// bits of `random × Σ`), so there is no modulo bias and consecutive
/// `random` values sweep the indices in order.
pub fn pick_weighted(weights: &[u64], random: u64) -> Option<usize> {
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if total == 0 {
        return None;
    }
    // target = ⌊random × total / 2^64⌋ ∈ [0, total), as random / 2^64 ∈ [0, 1).
    // Split total = hi × 2^64 + lo so no product overflows a u128.
    let (hi, lo) = (total >> 64, total & u128::from(u64::MAX));
    let target = u128::from(random) * hi + ((u128::from(random) * lo) >> 64);
    let mut upto: u128 = 0;
    for (index, &weight) in weights.iter().enumerate() {
        upto += u128::from(weight);
        if target < upto {
            return Some(index);
        }
    }
    // Unreachable: target < total = the final `upto`. Answer the last
    // index with a weight rather than panic.
    weights.iter().rposition(|&w| w > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pct(percent: u32) -> Health {
        Health {
            healthy: percent,
            total: 100,
        }
    }

    /// Share of the first locality in percent, rounded to the nearest.
    fn shares_percent(shares: &[u64]) -> Vec<u64> {
        let sum: u64 = shares.iter().sum();
        shares
            .iter()
            .map(|&s| (200 * s + sum) / (2 * sum))
            .collect()
    }

    #[test]
    fn golden_table_x_weight_1_y_weight_2_matches_envoy_docs() {
        // FAILOVER-REFERENCE §2: X weight 1 at `x`% healthy, Y weight 2 fully
        // healthy → (X share, Y share) in percent.
        let rows = [
            (100, [33, 67]),
            (70, [33, 67]),
            (69, [32, 68]),
            (50, [26, 74]),
            (25, [15, 85]),
            (0, [0, 100]),
        ];
        for (x, want) in rows {
            let shares = locality_shares(&[(1, pct(x)), (2, pct(100))], 140);
            assert_eq!(shares_percent(&shares), want, "X {x}% healthy");
        }
    }

    #[test]
    fn effective_weight_is_weight_times_capped_availability() {
        let shares = locality_shares(&[(1, pct(70)), (2, pct(100)), (3, pct(50))], 140);
        assert_eq!(shares, [98, 200, 210]);
    }

    #[test]
    fn nothing_available_gives_all_zero_shares() {
        let shares = locality_shares(&[(1, pct(0)), (5, Health::default()), (0, pct(100))], 140);
        assert_eq!(shares, [0, 0, 0]);
        assert_eq!(pick_weighted(&shares, 12345), None);
    }

    #[test]
    fn pick_weighted_none_for_empty_or_zero_weights() {
        assert_eq!(pick_weighted(&[], 7), None);
        assert_eq!(pick_weighted(&[0, 0], u64::MAX), None);
    }

    #[test]
    fn pick_weighted_splits_the_random_range_by_weight() {
        let weights = [1, 0, 3];
        assert_eq!(pick_weighted(&weights, 0), Some(0));
        assert_eq!(pick_weighted(&weights, u64::MAX / 4 - 1), Some(0));
        assert_eq!(pick_weighted(&weights, u64::MAX / 4 + 1), Some(2));
        assert_eq!(pick_weighted(&weights, u64::MAX), Some(2));
    }

    #[test]
    fn pick_weighted_counts_match_weights_over_an_even_sweep() {
        // 10_000 evenly spaced random values: each index gets its weight's
        // share (±1 for the edges).
        let weights = [70, 30, 0, 100];
        let mut counts = [0u32; 4];
        let steps = 10_000u64;
        for i in 0..steps {
            let random = i * (u64::MAX / steps);
            if let Some(index) = pick_weighted(&weights, random) {
                counts[index] += 1;
            }
        }
        assert!((3499..=3501).contains(&counts[0]), "{counts:?}");
        assert!((1499..=1501).contains(&counts[1]), "{counts:?}");
        assert_eq!(counts[2], 0);
        assert!((4999..=5001).contains(&counts[3]), "{counts:?}");
    }

    #[test]
    fn pick_weighted_handles_weights_summing_past_u64() {
        let weights = [u64::MAX, u64::MAX];
        assert_eq!(pick_weighted(&weights, 0), Some(0));
        assert_eq!(pick_weighted(&weights, u64::MAX), Some(1));
    }

    proptest! {
        #[test]
        fn pick_weighted_never_picks_a_zero_weight(
            weights in prop::collection::vec(prop_oneof![Just(0u64), 0u64..1000], 0..8),
            random in any::<u64>(),
        ) {
            match pick_weighted(&weights, random) {
                Some(index) => prop_assert!(weights[index] > 0),
                None => prop_assert!(weights.iter().all(|&w| w == 0)),
            }
        }

        #[test]
        fn locality_share_is_monotone_in_health(
            weight in 1u32..10, healthy in 0u32..100, factor in 100u32..1000,
        ) {
            let before = locality_shares(&[(weight, pct(healthy))], factor)[0];
            let after = locality_shares(&[(weight, pct(healthy + 1))], factor)[0];
            prop_assert!(after >= before);
        }
    }
}
