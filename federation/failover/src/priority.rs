//! Envoy's priority load: how much of the traffic each priority level takes,
//! given the health of every level, an overprovisioning factor and a panic
//! threshold.
//!
//! Sources: envoyproxy.io `intro/arch_overview/upstream/load_balancing/`
//! `priority`, `overprovisioning` and `panic_threshold`
//! (FAILOVER-REFERENCE §1, §3).

/// Envoy's default overprovisioning factor, in percent (1.4): a level or
/// locality counts as fully healthy until fewer than 100/140 ≈ 71.4% of its
/// hosts are healthy (`ClusterLoadAssignment.policy.overprovisioning_factor`).
pub const DEFAULT_OVERPROVISIONING_FACTOR: u32 = 140;

/// Envoy's default panic threshold, in percent of healthy hosts
/// (`common_lb_config.healthy_panic_threshold`); 0 disables panic mode.
pub const DEFAULT_PANIC_THRESHOLD_PERCENT: u32 = 50;

/// Health of one priority level or locality: counts of hosts (or summed
/// weights).
///
/// `healthy` larger than `total` is read as `total` (everything healthy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health {
    /// Hosts (or weight) that can take traffic now.
    pub healthy: u32,
    /// All hosts (or weight) of the level, healthy or not.
    pub total: u32,
}

/// Envoy's priority load (FAILOVER-REFERENCE §1, §3): the percentage of
/// requests each priority level takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorityLoad {
    /// One per level, in percent; sums to 100, or is all 0 when no level can
    /// take traffic (no healthy host and panic disabled, or no host at all):
    /// Envoy's "no healthy upstream".
    pub percent: Vec<u32>,
    /// One per level: the level is in panic mode and balances over all its
    /// hosts, healthy or not.
    pub panic: Vec<bool>,
}

/// Computes Envoy's priority load for `levels` (index = priority, 0 first).
///
/// - The health of a level is `min(100, factor × healthy / total)` in whole
///   percent, rounded down (Envoy's integer arithmetic;
///   `overprovisioning_factor` is in percent, 140 = Envoy's 1.4).
/// - The normalized total health is `min(100, Σ health)`. Level `i` takes
///   `min(100 − Σ earlier loads, health_i × 100 / total)`, rounded to the
///   nearest percent as in Envoy's documentation table (25/25/20 % healthy
///   → 36/36/28); a remainder left by rounding goes to the first level with
///   any health.
/// - Panic (`panic_threshold_percent`, 0 disables it) is considered only
///   when the normalized total health is below 100: then each level whose
///   share of healthy hosts is below the threshold is in panic.
/// - No healthy host anywhere: with a threshold above 0 the first level
///   that has hosts takes 100% in panic (every level is flagged); with a
///   threshold of 0 every load is 0 (no healthy upstream). No host at all
///   (or no level) gives all 0.
///
/// Deviations from Envoy's code, both documented in `docs/failover.md`:
/// Envoy rounds each load down and gives the remainder to the first healthy
/// level (37/35/28 in the example above; its documentation says 36/36/28, as
/// here), and when every level is in panic but some hosts are healthy it
/// splits the load by host count instead of by health.
pub fn priority_load(
    levels: &[Health],
    overprovisioning_factor: u32,
    panic_threshold_percent: u32,
) -> PriorityLoad {
    let health: Vec<u32> = levels
        .iter()
        .map(|h| health_score(*h, overprovisioning_factor))
        .collect();
    let total_health = health.iter().map(|&h| u64::from(h)).sum::<u64>().min(100);
    let mut percent = vec![0u32; levels.len()];

    if total_health == 0 {
        let first_with_hosts = levels.iter().position(|h| h.total > 0);
        return match first_with_hosts {
            Some(first) if panic_threshold_percent > 0 => {
                percent[first] = 100;
                PriorityLoad {
                    percent,
                    panic: vec![true; levels.len()],
                }
            }
            _ => PriorityLoad {
                percent,
                panic: vec![false; levels.len()],
            },
        };
    }

    let mut remaining: u64 = 100;
    for (load, &h) in percent.iter_mut().zip(&health) {
        let share = div_round(u64::from(h) * 100, total_health);
        let take = share.min(remaining);
        remaining -= take;
        // `take` ≤ 100 by construction, so the conversion cannot fail.
        *load = u32::try_from(take).unwrap_or(100);
    }
    if remaining > 0 {
        if let Some(first) = health.iter().position(|&h| h > 0) {
            percent[first] += u32::try_from(remaining).unwrap_or(0);
        }
    }

    let panic = levels
        .iter()
        .map(|h| total_health < 100 && below_threshold(*h, panic_threshold_percent))
        .collect();
    PriorityLoad { percent, panic }
}

/// `min(100, factor × healthy / total)`, rounded down; 0 for an empty level.
pub(crate) fn health_score(health: Health, overprovisioning_factor: u32) -> u32 {
    if health.total == 0 {
        return 0;
    }
    let healthy = u64::from(health.healthy.min(health.total));
    let score = u64::from(overprovisioning_factor) * healthy / u64::from(health.total);
    // Capped at 100 first, so it fits.
    u32::try_from(score.min(100)).unwrap_or(100)
}

/// Whether the exact share of healthy hosts is below `threshold` percent
/// (Envoy's `isHostSetInPanic`); an empty level counts as 0% healthy.
fn below_threshold(health: Health, threshold_percent: u32) -> bool {
    let healthy = u64::from(health.healthy.min(health.total));
    healthy * 100 < u64::from(threshold_percent) * u64::from(health.total)
        || (health.total == 0 && threshold_percent > 0)
}

/// `a / b` rounded to the nearest integer, halves up; `b` > 0.
fn div_round(a: u64, b: u64) -> u64 {
    (2 * a + b) / (2 * b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A level of 100 hosts with `percent` of them healthy.
    fn pct(percent: u32) -> Health {
        Health {
            healthy: percent,
            total: 100,
        }
    }

    fn load(levels: &[u32]) -> Vec<u32> {
        let levels: Vec<Health> = levels.iter().map(|&p| pct(p)).collect();
        priority_load(&levels, 140, 50).percent
    }

    #[test]
    fn golden_table_two_levels_matches_envoy_docs() {
        // FAILOVER-REFERENCE §1, rows with two levels: (P0, P1) healthy → load.
        let rows = [
            (100, 100, [100, 0]),
            (72, 100, [100, 0]),
            (71, 100, [99, 1]),
            (50, 100, [70, 30]),
            (25, 100, [35, 65]),
            (0, 100, [0, 100]),
            (50, 50, [70, 30]),
            (25, 25, [50, 50]),
        ];
        for (p0, p1, want) in rows {
            assert_eq!(load(&[p0, p1]), want, "P0 {p0}% P1 {p1}% healthy");
        }
    }

    #[test]
    fn golden_table_three_levels_matches_envoy_docs() {
        assert_eq!(load(&[25, 25, 100]), [35, 35, 30]);
        assert_eq!(load(&[25, 25, 20]), [36, 36, 28]);
    }

    #[test]
    fn health_score_is_overprovisioned_integer_percent() {
        assert_eq!(health_score(pct(72), 140), 100);
        assert_eq!(health_score(pct(71), 140), 99);
        assert_eq!(health_score(pct(20), 140), 28);
        // Host counts, not a rounded percentage: 5 of 7 is 71.4% → 100.
        let five_of_seven = Health {
            healthy: 5,
            total: 7,
        };
        assert_eq!(health_score(five_of_seven, 140), 100);
        assert_eq!(health_score(Health::default(), 140), 0);
        let overcounted = Health {
            healthy: 9,
            total: 3,
        };
        assert_eq!(health_score(overcounted, 100), 100);
    }

    #[test]
    fn panic_example_two_levels_at_25_percent_split_50_50_both_in_panic() {
        // FAILOVER-REFERENCE §3: normalized total health 70% → panic checked.
        let got = priority_load(&[pct(25), pct(25)], 140, 50);
        assert_eq!(got.percent, [50, 50]);
        assert_eq!(got.panic, [true, true]);
    }

    #[test]
    fn panic_is_ignored_while_normalized_total_health_is_100() {
        // P0 at 25% is under the threshold, but P1 makes the total 100.
        let got = priority_load(&[pct(25), pct(100)], 140, 50);
        assert_eq!(got.percent, [35, 65]);
        assert_eq!(got.panic, [false, false]);
    }

    #[test]
    fn panic_flags_only_levels_below_threshold() {
        let got = priority_load(&[pct(60), pct(10)], 140, 50);
        // Health 84 + 14 = 98 < 100: panic is considered.
        assert_eq!(got.percent, [86, 14]);
        assert_eq!(got.panic, [false, true]);
    }

    #[test]
    fn all_unhealthy_with_threshold_sends_everything_to_p0_in_panic() {
        let got = priority_load(&[pct(0), pct(0), pct(0)], 140, 50);
        assert_eq!(got.percent, [100, 0, 0]);
        assert_eq!(got.panic, [true, true, true]);
    }

    #[test]
    fn all_unhealthy_skips_empty_leading_levels() {
        let levels = [Health::default(), pct(0)];
        let got = priority_load(&levels, 140, 50);
        assert_eq!(got.percent, [0, 100]);
    }

    #[test]
    fn all_unhealthy_with_threshold_zero_sends_nothing() {
        let got = priority_load(&[pct(0), pct(0)], 140, 0);
        assert_eq!(got.percent, [0, 0]);
        assert_eq!(got.panic, [false, false]);
    }

    #[test]
    fn threshold_zero_never_panics() {
        let got = priority_load(&[pct(10), pct(10)], 140, 0);
        assert_eq!(got.percent, [50, 50]);
        assert_eq!(got.panic, [false, false]);
    }

    #[test]
    fn no_hosts_or_no_levels_give_no_load() {
        let got = priority_load(&[Health::default(); 2], 140, 50);
        assert_eq!(got.percent, [0, 0]);
        assert_eq!(got.panic, [false, false]);
        let none = priority_load(&[], 140, 50);
        assert!(none.percent.is_empty() && none.panic.is_empty());
    }

    #[test]
    fn factor_100_spills_as_soon_as_a_host_fails() {
        // Without overprovisioning 90% healthy keeps only 90% of the load.
        assert_eq!(
            priority_load(&[pct(90), pct(100)], 100, 50).percent,
            [90, 10]
        );
    }

    #[test]
    fn rounding_remainder_goes_to_first_healthy_level() {
        // Three levels at 33 health each (≈23.6% healthy at 1.4): 33.3% each.
        let third = Health {
            healthy: 33,
            total: 140,
        };
        let got = priority_load(&[Health::default(), third, third, third], 140, 0);
        assert_eq!(got.percent, [0, 34, 33, 33]);
    }

    fn arb_levels() -> impl Strategy<Value = Vec<Health>> {
        prop::collection::vec(
            (0u32..50, 0u32..50).prop_map(|(a, b)| Health {
                healthy: a.min(b),
                total: a.max(b),
            }),
            0..6,
        )
    }

    proptest! {
        #[test]
        fn load_sums_to_100_or_is_all_zero(
            levels in arb_levels(), factor in 100u32..1000, threshold in 0u32..=100,
        ) {
            let got = priority_load(&levels, factor, threshold);
            prop_assert_eq!(got.percent.len(), levels.len());
            prop_assert_eq!(got.panic.len(), levels.len());
            let sum: u32 = got.percent.iter().sum();
            let any_hosts = levels.iter().any(|h| h.total > 0);
            let any_healthy = levels.iter().any(|h| h.healthy > 0);
            if any_healthy || (any_hosts && threshold > 0) {
                prop_assert_eq!(sum, 100);
            } else {
                prop_assert_eq!(sum, 0);
            }
        }

        #[test]
        fn more_health_in_p0_never_lowers_its_load(
            levels in arb_levels(), factor in 100u32..1000,
        ) {
            prop_assume!(!levels.is_empty());
            let before = priority_load(&levels, factor, 0).percent[0];
            let mut better = levels.clone();
            better[0].healthy = (better[0].healthy + 1).min(better[0].total);
            let after = priority_load(&better, factor, 0).percent[0];
            prop_assert!(after >= before, "{:?}: {} → {}", levels, before, after);
        }

        #[test]
        fn more_health_in_any_level_never_lowers_its_load(
            levels in arb_levels(), pick in any::<prop::sample::Index>(), factor in 100u32..1000,
        ) {
            prop_assume!(!levels.is_empty());
            let i = pick.index(levels.len());
            let before = priority_load(&levels, factor, 0).percent[i];
            let mut better = levels.clone();
            better[i].healthy = (better[i].healthy + 1).min(better[i].total);
            let after = priority_load(&better, factor, 0).percent[i];
            prop_assert!(after >= before, "level {}: {:?}: {} → {}", i, levels, before, after);
        }

        #[test]
        fn fully_healthy_p0_takes_everything(
            levels in arb_levels(), total in 1u32..50, factor in 100u32..1000,
        ) {
            let mut levels = levels;
            levels.insert(0, Health { healthy: total, total });
            let got = priority_load(&levels, factor, 50);
            prop_assert_eq!(got.percent[0], 100);
        }
    }
}
