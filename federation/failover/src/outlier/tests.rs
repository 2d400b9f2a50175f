//! Deterministic tests of [`OutlierDetector`] on virtual instants.

use super::*;
use proptest::prelude::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// `n` hosts named 0..n with the default config and `t0` as the start.
fn detector(n: u32, config: OutlierConfig) -> (OutlierDetector<u32>, Instant) {
    let mut d = OutlierDetector::new(config);
    d.set_hosts(0..n);
    (d, Instant::now())
}

fn report(d: &mut OutlierDetector<u32>, host: u32, outcome: Outcome, times: u32, now: Instant) {
    for _ in 0..times {
        d.handle_outcome(&host, outcome, now);
    }
}

#[test]
fn default_config_is_envoys() {
    let c = OutlierConfig::default();
    assert_eq!(c.consecutive_5xx, 5);
    assert_eq!(c.consecutive_gateway_failure, 5);
    assert_eq!(c.interval, secs(10));
    assert_eq!(c.base_ejection_time, secs(30));
    assert_eq!(c.max_ejection_time, secs(300));
    assert_eq!(c.max_ejection_percent, 10);
    assert_eq!(c.success_rate_minimum_hosts, 5);
    assert_eq!(c.success_rate_request_volume, 100);
    assert_eq!(c.success_rate_stdev_factor, 1900);
}

#[test]
fn five_consecutive_5xx_eject_for_the_base_time() {
    let (mut d, t0) = detector(10, OutlierConfig::default());
    report(&mut d, 3, Outcome::Http5xx, 4, t0);
    assert!(!d.is_ejected(&3, t0));
    d.handle_outcome(&3, Outcome::Http5xx, t0);
    assert!(d.is_ejected(&3, t0));
    assert_eq!(d.ejected_until(&3, t0), Some(t0 + secs(30)));
    assert!(d.is_ejected(&3, t0 + secs(29)));
    assert!(!d.is_ejected(&3, t0 + secs(30)));
    assert_eq!(d.ejected(t0), [3]);
    assert_eq!(d.stats().ejections_consecutive_5xx, 1);
    assert_eq!(d.stats().ejections_total(), 1);
}

#[test]
fn gateway_errors_count_toward_consecutive_5xx() {
    let config = OutlierConfig {
        consecutive_gateway_failure: 0,
        ..OutlierConfig::default()
    };
    let (mut d, t0) = detector(10, config);
    report(&mut d, 1, Outcome::GatewayError, 2, t0);
    report(&mut d, 1, Outcome::Http5xx, 2, t0);
    assert!(!d.is_ejected(&1, t0));
    d.handle_outcome(&1, Outcome::GatewayError, t0);
    assert!(d.is_ejected(&1, t0));
    assert_eq!(d.stats().ejections_consecutive_5xx, 1);
}

#[test]
fn five_consecutive_gateway_errors_eject_even_with_5xx_detection_off() {
    let config = OutlierConfig {
        consecutive_5xx: 0,
        ..OutlierConfig::default()
    };
    let (mut d, t0) = detector(10, config);
    report(&mut d, 2, Outcome::GatewayError, 4, t0);
    assert!(!d.is_ejected(&2, t0));
    d.handle_outcome(&2, Outcome::GatewayError, t0);
    assert!(d.is_ejected(&2, t0));
    assert_eq!(d.stats().ejections_consecutive_gateway_failure, 1);
}

#[test]
fn plain_5xx_resets_the_gateway_counter_only() {
    let config = OutlierConfig {
        consecutive_5xx: 100,
        ..OutlierConfig::default()
    };
    let (mut d, t0) = detector(10, config);
    report(&mut d, 0, Outcome::GatewayError, 4, t0);
    d.handle_outcome(&0, Outcome::Http5xx, t0);
    report(&mut d, 0, Outcome::GatewayError, 4, t0);
    assert!(!d.is_ejected(&0, t0), "the 5xx broke the gateway run");
    d.handle_outcome(&0, Outcome::GatewayError, t0);
    assert!(d.is_ejected(&0, t0));
}

#[test]
fn a_success_resets_both_consecutive_counters() {
    let (mut d, t0) = detector(10, OutlierConfig::default());
    report(&mut d, 5, Outcome::GatewayError, 4, t0);
    d.handle_outcome(&5, Outcome::Success, t0);
    report(&mut d, 5, Outcome::Http5xx, 4, t0);
    d.handle_outcome(&5, Outcome::Success, t0);
    report(&mut d, 5, Outcome::GatewayError, 4, t0);
    assert!(!d.is_ejected(&5, t0));
    assert_eq!(d.stats().ejections_total(), 0);
}

#[test]
fn zero_thresholds_disable_consecutive_detection() {
    let config = OutlierConfig {
        consecutive_5xx: 0,
        consecutive_gateway_failure: 0,
        ..OutlierConfig::default()
    };
    let (mut d, t0) = detector(10, config);
    report(&mut d, 0, Outcome::GatewayError, 50, t0);
    report(&mut d, 1, Outcome::Http5xx, 50, t0);
    assert!(d.ejected(t0).is_empty());
}

#[test]
fn ejection_time_grows_with_each_ejection_and_is_capped() {
    let config = OutlierConfig {
        interval: Duration::ZERO, // no decay of the multiplier
        ..OutlierConfig::default()
    };
    let (mut d, t0) = detector(1, config);
    let mut now = t0;
    // 30, 60, …, 300, then capped at 300 s.
    for n in 1..=12u32 {
        report(&mut d, 0, Outcome::Http5xx, 5, now);
        let want = secs(30 * u64::from(n.min(10)));
        assert_eq!(d.ejected_until(&0, now), Some(now + want), "ejection {n}");
        now += want;
        assert!(!d.is_ejected(&0, now));
    }
}

#[test]
fn ejection_multiplier_decays_one_step_per_healthy_interval() {
    let (mut d, t0) = detector(1, OutlierConfig::default());
    report(&mut d, 0, Outcome::Http5xx, 5, t0); // 1st: 30 s
    report(&mut d, 0, Outcome::Http5xx, 5, t0 + secs(30)); // 2nd: 60 s
    assert_eq!(d.ejected_until(&0, t0 + secs(30)), Some(t0 + secs(90)));
    // Back at 90 s. The pass at 90 s does not count (not back for a whole
    // interval yet); at 100 s the multiplier drops to 1.
    d.handle_interval(t0 + secs(90));
    d.handle_interval(t0 + secs(100));
    report(&mut d, 0, Outcome::Http5xx, 5, t0 + secs(101));
    assert_eq!(
        d.ejected_until(&0, t0 + secs(101)),
        Some(t0 + secs(161)),
        "second ejection in a row again: 60 s"
    );
    // Back at 161 s; passes at 171 s and 181 s bring it from 2 to 0.
    d.handle_interval(t0 + secs(161));
    d.handle_interval(t0 + secs(171));
    d.handle_interval(t0 + secs(181));
    report(&mut d, 0, Outcome::Http5xx, 5, t0 + secs(182));
    assert_eq!(
        d.ejected_until(&0, t0 + secs(182)),
        Some(t0 + secs(212)),
        "a fresh first ejection: 30 s"
    );
}

#[test]
fn outcomes_while_ejected_are_ignored() {
    let (mut d, t0) = detector(10, OutlierConfig::default());
    report(&mut d, 0, Outcome::Http5xx, 5, t0);
    // In-flight failures arriving during the ejection don't count.
    report(&mut d, 0, Outcome::Http5xx, 20, t0 + secs(1));
    let back = t0 + secs(30);
    assert!(!d.is_ejected(&0, back));
    report(&mut d, 0, Outcome::Http5xx, 4, back);
    assert!(
        !d.is_ejected(&0, back),
        "the count restarted after the ejection"
    );
    assert_eq!(d.stats().ejections_total(), 1);
}

#[test]
fn max_ejection_percent_caps_ejections_but_allows_one() {
    // 10 hosts at 10%: one host.
    let (mut d, t0) = detector(10, OutlierConfig::default());
    report(&mut d, 0, Outcome::Http5xx, 5, t0);
    report(&mut d, 1, Outcome::Http5xx, 5, t0);
    assert_eq!(d.ejected(t0), [0]);
    assert_eq!(d.stats().ejections_overflow, 1);
    // Once host 0 is back, host 1's next failure ejects it.
    let later = t0 + secs(30);
    d.handle_outcome(&1, Outcome::Http5xx, later);
    assert_eq!(d.ejected(later), [1]);

    // 3 hosts at 10%: still one.
    let (mut d, t0) = detector(3, OutlierConfig::default());
    for host in 0..3 {
        report(&mut d, host, Outcome::GatewayError, 5, t0);
    }
    assert_eq!(d.ejected(t0).len(), 1);

    // 20 hosts at 10%: two.
    let (mut d, t0) = detector(20, OutlierConfig::default());
    for host in 0..20 {
        report(&mut d, host, Outcome::GatewayError, 5, t0);
    }
    assert_eq!(d.ejected(t0).len(), 2);

    // 4 hosts at 100%: all of them.
    let config = OutlierConfig {
        max_ejection_percent: 100,
        ..OutlierConfig::default()
    };
    let (mut d, t0) = detector(4, config);
    for host in 0..4 {
        report(&mut d, host, Outcome::GatewayError, 5, t0);
    }
    assert_eq!(d.ejected(t0).len(), 4);
}

#[test]
fn unejection_at_expiry_via_poll_timeout_and_handle_interval() {
    let (mut d, t0) = detector(10, OutlierConfig::default());
    assert_eq!(d.poll_timeout(), None, "nothing pending before any outcome");
    report(&mut d, 7, Outcome::Http5xx, 5, t0);
    // Next interval at 10 s comes before the ejection's end at 30 s.
    assert_eq!(d.poll_timeout(), Some(t0 + secs(10)));
    d.handle_interval(t0 + secs(10));
    d.handle_interval(t0 + secs(20));
    assert_eq!(d.poll_timeout(), Some(t0 + secs(30)));
    d.handle_interval(t0 + secs(30));
    assert!(!d.is_ejected(&7, t0 + secs(30)));
    assert!(d.ejected(t0 + secs(30)).is_empty());
    assert_eq!(d.poll_timeout(), Some(t0 + secs(40)));
}

#[test]
fn handle_interval_before_the_interval_only_unejects() {
    let config = OutlierConfig {
        base_ejection_time: secs(3),
        ..OutlierConfig::default()
    };
    let (mut d, t0) = detector(10, config);
    report(&mut d, 0, Outcome::Http5xx, 5, t0);
    assert_eq!(d.poll_timeout(), Some(t0 + secs(3)));
    d.handle_interval(t0 + secs(3));
    assert!(!d.is_ejected(&0, t0 + secs(3)));
    assert_eq!(
        d.poll_timeout(),
        Some(t0 + secs(10)),
        "the interval is unchanged"
    );
}

/// 100 requests to host `i` with `successes[i]` (50..=100) of them
/// succeeding, failures alternating with successes so that no consecutive
/// detector fires.
fn interval_traffic(d: &mut OutlierDetector<u32>, successes: &[u32], now: Instant) {
    for (host, &ok) in (0u32..).zip(successes) {
        assert!((50..=100).contains(&ok), "helper limit");
        let failures = 100 - ok;
        for i in 0..100 {
            let fail = i % 2 == 1 && i / 2 < failures;
            let outcome = if fail {
                Outcome::Http5xx
            } else {
                Outcome::Success
            };
            d.handle_outcome(&host, outcome, now);
        }
    }
}

#[test]
fn success_rate_outlier_is_ejected_at_the_interval() {
    let (mut d, t0) = detector(5, OutlierConfig::default());
    // 4 hosts at 100%, one at 50%: mean 90, stdev 20, threshold 90 − 38 = 52.
    interval_traffic(&mut d, &[100, 100, 100, 100, 50], t0);
    assert!(d.ejected(t0).is_empty(), "no consecutive run of 5");
    d.handle_interval(t0 + secs(10));
    assert_eq!(d.ejected(t0 + secs(10)), [4]);
    assert_eq!(d.stats().ejections_success_rate, 1);
}

#[test]
fn success_rate_threshold_is_mean_minus_1_9_stdev() {
    // 4 at 100%, one at 90%: mean 98, stdev 4, threshold 90.4 → ejected.
    let (mut d, t0) = detector(5, OutlierConfig::default());
    interval_traffic(&mut d, &[100, 100, 100, 100, 90], t0);
    d.handle_interval(t0 + secs(10));
    assert_eq!(d.ejected(t0 + secs(10)), [4]);

    // 100, 98, 100, 100, 96: mean 98.8, stdev 1.6, threshold 95.76 → 96 kept.
    let (mut d, t0) = detector(5, OutlierConfig::default());
    interval_traffic(&mut d, &[100, 98, 100, 100, 96], t0);
    d.handle_interval(t0 + secs(10));
    assert!(d.ejected(t0 + secs(10)).is_empty());
}

#[test]
fn success_rate_needs_minimum_hosts_and_request_volume() {
    // Only 4 hosts: below success_rate_minimum_hosts (5).
    let (mut d, t0) = detector(4, OutlierConfig::default());
    interval_traffic(&mut d, &[100, 100, 100, 50], t0);
    d.handle_interval(t0 + secs(10));
    assert!(d.ejected(t0 + secs(10)).is_empty());

    // 5 hosts with 100 requests each, below a volume of 101: none takes part.
    let config = OutlierConfig {
        success_rate_request_volume: 101,
        ..OutlierConfig::default()
    };
    let mut strict = OutlierDetector::new(config);
    strict.set_hosts(0..5);
    interval_traffic(&mut strict, &[100, 100, 100, 100, 50], t0);
    strict.handle_interval(t0 + secs(10));
    assert!(strict.ejected(t0 + secs(10)).is_empty());
}

#[test]
fn success_rate_counts_restart_every_interval() {
    let (mut d, t0) = detector(5, OutlierConfig::default());
    interval_traffic(&mut d, &[100, 100, 100, 100, 100], t0);
    d.handle_interval(t0 + secs(10));
    // Second interval: host 4 gets 50 failures among 100 requests, but
    // only 100 requests in this interval count.
    interval_traffic(&mut d, &[100, 100, 100, 100, 50], t0 + secs(11));
    d.handle_interval(t0 + secs(20));
    assert_eq!(d.ejected(t0 + secs(20)), [4]);
    // Third interval, no traffic: nothing new happens.
    d.handle_interval(t0 + secs(30));
    assert_eq!(d.stats().ejections_success_rate, 1);
}

#[test]
fn set_hosts_forgets_removed_hosts_and_keeps_the_rest() {
    let (mut d, t0) = detector(10, OutlierConfig::default());
    report(&mut d, 0, Outcome::Http5xx, 5, t0);
    report(&mut d, 1, Outcome::Http5xx, 4, t0);
    d.set_hosts([1, 2, 3]);
    assert!(!d.is_ejected(&0, t0), "host 0 is forgotten");
    // Host 1 kept its count of 4: one more ejects it (3 hosts, at least one).
    d.handle_outcome(&1, Outcome::Http5xx, t0);
    assert!(d.is_ejected(&1, t0));
    assert_eq!(d.ejected(t0), [1]);
}

#[test]
fn unknown_hosts_are_added_on_their_first_outcome() {
    let mut d: OutlierDetector<&str> = OutlierDetector::new(OutlierConfig::default());
    let t0 = Instant::now();
    assert!(!d.is_ejected(&"a", t0));
    for _ in 0..5 {
        d.handle_outcome(&"a", Outcome::GatewayError, t0);
    }
    assert!(d.is_ejected(&"a", t0));
}

#[test]
fn set_config_keeps_counters_and_applies_new_thresholds() {
    let (mut d, t0) = detector(10, OutlierConfig::default());
    report(&mut d, 0, Outcome::Http5xx, 3, t0);
    d.set_config(OutlierConfig {
        consecutive_5xx: 4,
        ..OutlierConfig::default()
    });
    assert_eq!(d.config().consecutive_5xx, 4);
    d.handle_outcome(&0, Outcome::Http5xx, t0);
    assert!(d.is_ejected(&0, t0), "3 kept + 1 reaches the new threshold");
}

fn arb_outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Success),
        Just(Outcome::Http5xx),
        Just(Outcome::GatewayError),
    ]
}

proptest! {
    #[test]
    fn ejections_never_exceed_the_cap_but_allow_one(
        hosts in 1u32..30,
        percent in 0u32..=100,
        events in prop::collection::vec((0u32..30, arb_outcome(), 0u64..3), 0..400),
    ) {
        let config = OutlierConfig {
            max_ejection_percent: percent,
            success_rate_request_volume: 5,
            success_rate_minimum_hosts: 2,
            ..OutlierConfig::default()
        };
        let (mut d, t0) = detector(hosts, config);
        let cap = ((u64::from(percent) * u64::from(hosts)) / 100).max(1);
        let mut now = t0;
        for (host, outcome, step) in events {
            now += secs(step);
            d.handle_outcome(&(host % hosts), outcome, now);
            if d.poll_timeout().is_some_and(|t| t <= now) {
                d.handle_interval(now);
            }
            let out = d.ejected(now).len() as u64;
            prop_assert!(out <= cap, "{} ejected, cap {}", out, cap);
        }
    }

    #[test]
    fn poll_timeout_is_never_before_the_last_handled_instant(
        events in prop::collection::vec((0u32..10, arb_outcome(), 0u64..40), 1..200),
    ) {
        let (mut d, t0) = detector(10, OutlierConfig::default());
        let mut now = t0;
        for (host, outcome, step) in events {
            now += secs(step);
            // Drive like a real driver: catch up on every due timeout first.
            let mut rounds = 0;
            while let Some(due) = d.poll_timeout().filter(|&due| due <= now) {
                d.handle_interval(due);
                rounds += 1;
                prop_assert!(rounds < 100, "poll_timeout does not advance");
            }
            d.handle_outcome(&host, outcome, now);
            prop_assert!(d.poll_timeout().is_some_and(|t| t > now));
        }
    }
}
