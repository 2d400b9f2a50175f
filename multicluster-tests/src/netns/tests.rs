//! Unit tests of the WAN core: statistics of delay, jitter, loss and rate
//! on virtual time, partitions, routing. Deterministic (fixed seeds).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::link::{DropReason, Link, LinkConfig, Rate, SplitMix64};
use super::router::{cluster_addr, owner, Router, Transmit, Verdict};

const MS: Duration = Duration::from_millis(1);

fn mean_stddev(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// A minimal IPv4 header of `len` bytes to `dst`.
fn packet(dst: Ipv4Addr, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len.max(20)];
    p[0] = 0x45;
    p[16..20].copy_from_slice(&dst.octets());
    p
}

#[test]
fn fixed_delay_is_exact() {
    let t0 = Instant::now();
    let mut link = Link::new(LinkConfig::delay(15 * MS));
    let mut rng = SplitMix64::new(1);
    for i in 0..100u32 {
        let now = t0 + i * MS;
        let at = link.handle_packet(1500, now, || rng.uniform()).unwrap();
        assert_eq!(at - now, 15 * MS);
    }
}

#[test]
fn jitter_is_uniform_around_the_delay() {
    // 20 000 packets 20 ms apart (more than 2 × jitter, so FIFO clamping
    // never applies): delay 15 ms ± 5 ms uniform has mean 15 ms and
    // stddev 5/√3 = 2.887 ms. With n = 20 000 the mean's standard error is
    // 0.02 ms, so ±0.1 ms is 5 σ.
    let t0 = Instant::now();
    let mut link = Link::new(LinkConfig::delay(15 * MS).with_jitter(5 * MS));
    let mut rng = SplitMix64::new(7);
    let delays: Vec<f64> = (0..20_000u32)
        .map(|i| {
            let now = t0 + i * 20 * MS;
            let at = link.handle_packet(1200, now, || rng.uniform()).unwrap();
            (at - now).as_secs_f64() * 1e3
        })
        .collect();
    let (mean, sd) = mean_stddev(&delays);
    let min = delays.iter().copied().fold(f64::MAX, f64::min);
    let max = delays.iter().copied().fold(f64::MIN, f64::max);
    println!("15 ms ± 5 ms over 20 000: mean {mean:.3} ms, stddev {sd:.3} ms, range {min:.2}..{max:.2} ms");
    assert!((mean - 15.0).abs() < 0.1, "mean {mean} ms");
    let want_sd = 5.0 / 3f64.sqrt();
    assert!(
        (sd - want_sd).abs() < 0.05 * want_sd,
        "stddev {sd} ms, want {want_sd}"
    );
    assert!(min >= 10.0 && max <= 20.0, "range {min}..{max} ms");
}

#[test]
fn jitter_never_reorders_packets_on_a_link() {
    let t0 = Instant::now();
    let mut link = Link::new(LinkConfig::delay(10 * MS).with_jitter(8 * MS));
    let mut rng = SplitMix64::new(3);
    let mut last = t0;
    for i in 0..10_000u32 {
        let now = t0 + i * Duration::from_micros(200);
        let at = link.handle_packet(100, now, || rng.uniform()).unwrap();
        assert!(at >= last, "packet {i} overtook its predecessor");
        assert!(at >= now + 2 * MS);
        last = at;
    }
}

#[test]
fn one_percent_loss_over_100k_packets_is_within_a_binomial_bound() {
    // Binomial(100 000, 0.01): mean 1000, σ = √(n p (1-p)) = 31.5; allow 4 σ
    // for each of five seeds.
    let t0 = Instant::now();
    let n = 100_000u32;
    let sigma = (f64::from(n) * 0.01 * 0.99).sqrt();
    for seed in [42, 1, 2, 3, 4] {
        let mut link = Link::new(LinkConfig::default().with_loss(0.01));
        let mut rng = SplitMix64::new(seed);
        let lost = (0..n)
            .filter(|i| {
                link.handle_packet(1000, t0 + *i * MS, || rng.uniform()) == Err(DropReason::Loss)
            })
            .count() as f64;
        println!(
            "1% loss, seed {seed}: {lost} of {n} lost ({:.3}%), bound 1000 ± {:.0}",
            lost / f64::from(n) * 100.0,
            4.0 * sigma
        );
        assert!(
            (lost - 1000.0).abs() < 4.0 * sigma,
            "seed {seed}: lost {lost} of {n}"
        );
        let s = link.stats();
        assert_eq!(s.offered, u64::from(n));
        assert_eq!(s.dropped_loss + s.sent, u64::from(n));
    }
}

#[test]
fn loss_zero_and_one_are_exact() {
    let t0 = Instant::now();
    let mut rng = SplitMix64::new(5);
    let mut never = Link::new(LinkConfig::default());
    let mut always = Link::new(LinkConfig::default().with_loss(1.0));
    for i in 0..10_000u32 {
        assert!(never
            .handle_packet(60, t0 + i * MS, || rng.uniform())
            .is_ok());
        assert_eq!(
            always.handle_packet(60, t0 + i * MS, || rng.uniform()),
            Err(DropReason::Loss)
        );
    }
}

#[test]
fn rate_limit_holds_the_configured_bytes_per_second() {
    // 1 MB/s offered at 2 MB/s for 2 s: after the burst, departures are
    // paced at the rate, and the 200 ms queue overflows, so about half the
    // packets are dropped.
    let t0 = Instant::now();
    let rate = 1_000_000u64;
    let mut link = Link::new(LinkConfig::default().with_rate(rate));
    let mut rng = SplitMix64::new(9);
    let gap = Duration::from_micros(750); // 1500 B / 750 µs = 2 MB/s
    let mut departures = Vec::new();
    for i in 0..2667u32 {
        let now = t0 + i * gap;
        if let Ok(at) = link.handle_packet(1500, now, || rng.uniform()) {
            departures.push(at);
            assert!(
                at - now <= Duration::from_millis(200),
                "queued beyond max_queue"
            );
        }
    }
    let s = link.stats();
    let burst = Rate::new(rate).burst as f64;
    let span = (*departures.last().unwrap() - departures[0]).as_secs_f64();
    let measured = (s.sent_bytes as f64 - burst) / span;
    println!(
        "rate 1 000 000 B/s offered 2 MB/s: {measured:.0} B/s after the burst, {} queue drops of {}",
        s.dropped_queue, s.offered
    );
    assert!(
        (measured - rate as f64).abs() < 0.01 * rate as f64,
        "measured {measured:.0} B/s"
    );
    assert!(s.dropped_queue > 1000, "queue drops {}", s.dropped_queue);
}

#[test]
fn under_the_rate_nothing_waits_or_drops() {
    let t0 = Instant::now();
    let mut link = Link::new(LinkConfig::delay(5 * MS).with_rate(1_000_000));
    let mut rng = SplitMix64::new(11);
    for i in 0..2000u32 {
        let now = t0 + i * 3 * MS; // 500 kB/s
        let at = link.handle_packet(1500, now, || rng.uniform()).unwrap();
        assert_eq!(at - now, 5 * MS);
    }
}

#[test]
fn a_partition_drops_everything_and_healing_restores_it() {
    let t0 = Instant::now();
    let mut link = Link::new(LinkConfig::delay(MS));
    let mut rng = SplitMix64::new(13);
    link.set_partitioned(true);
    for i in 0..1000u32 {
        assert_eq!(
            link.handle_packet(100, t0 + i * MS, || rng.uniform()),
            Err(DropReason::Partitioned)
        );
    }
    link.set_partitioned(false);
    assert!(link
        .handle_packet(100, t0 + 2 * Duration::from_secs(1), || rng.uniform())
        .is_ok());
    assert_eq!(link.stats().dropped_partition, 1000);
}

#[test]
fn router_delivers_to_the_owner_of_the_destination_in_time_order() {
    let t0 = Instant::now();
    let mut r = Router::new(3, LinkConfig::delay(10 * MS), 1);
    r.link_mut(0, 2).set_config(LinkConfig::delay(3 * MS));
    let to_b = packet(Ipv4Addr::new(198, 18, 2, 9), 100);
    let to_c = packet(cluster_addr(2), 100);
    assert_eq!(
        r.handle_packet(0, to_b.clone(), t0),
        Verdict::Scheduled {
            to: 1,
            at: t0 + 10 * MS
        }
    );
    assert_eq!(
        r.handle_packet(0, to_c.clone(), t0),
        Verdict::Scheduled {
            to: 2,
            at: t0 + 3 * MS
        }
    );
    assert_eq!(r.poll_timeout(), Some(t0 + 3 * MS));
    assert_eq!(r.poll_transmit(t0 + 2 * MS), None);
    assert_eq!(
        r.poll_transmit(t0 + 3 * MS),
        Some(Transmit {
            to: 2,
            packet: to_c
        })
    );
    assert_eq!(r.poll_timeout(), Some(t0 + 10 * MS));
    assert_eq!(
        r.poll_transmit(t0 + 20 * MS),
        Some(Transmit {
            to: 1,
            packet: to_b
        })
    );
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn router_drops_what_it_cannot_route() {
    let t0 = Instant::now();
    let mut r = Router::new(2, LinkConfig::default(), 1);
    let mut v6 = packet(Ipv4Addr::new(198, 18, 1, 1), 40);
    v6[0] = 0x60;
    for p in [
        packet(Ipv4Addr::new(10, 0, 0, 1), 60),
        packet(Ipv4Addr::new(198, 18, 3, 1), 60), // no third cluster
        packet(Ipv4Addr::new(198, 19, 1, 1), 60),
        v6,
        vec![0x45; 10],
    ] {
        assert_eq!(r.handle_packet(0, p, t0), Verdict::Unroutable);
    }
    assert_eq!(r.unroutable(), 5);
    assert_eq!(owner(Ipv4Addr::new(198, 18, 2, 200), 2), Some(1));
    assert_eq!(owner(Ipv4Addr::new(198, 18, 0, 1), 2), None);
}

#[test]
fn partition_drops_packets_already_in_flight() {
    let t0 = Instant::now();
    let mut r = Router::new(2, LinkConfig::delay(15 * MS), 1);
    let p = packet(cluster_addr(1), 100);
    assert!(matches!(
        r.handle_packet(0, p.clone(), t0),
        Verdict::Scheduled { .. }
    ));
    r.link_mut(0, 1).set_partitioned(true);
    assert_eq!(r.poll_transmit(t0 + 20 * MS), None);
    assert_eq!(r.stats(0, 1).dropped_partition, 1);
    // The other direction is independent until partitioned too.
    assert!(matches!(
        r.handle_packet(1, packet(cluster_addr(0), 100), t0),
        Verdict::Scheduled { to: 0, .. }
    ));
}

#[test]
fn links_are_directional_and_seeded_runs_repeat() {
    let t0 = Instant::now();
    let cfg = LinkConfig::delay(10 * MS)
        .with_jitter(2 * MS)
        .with_loss(0.1);
    let run = |seed| {
        let mut r = Router::new(2, cfg, seed);
        r.link_mut(1, 0).set_config(LinkConfig::delay(20 * MS));
        let back = r.handle_packet(1, packet(cluster_addr(0), 100), t0);
        assert_eq!(
            back,
            Verdict::Scheduled {
                to: 0,
                at: t0 + 20 * MS
            }
        );
        (0..1000u32)
            .map(|i| r.handle_packet(0, packet(cluster_addr(1), 100), t0 + i * 5 * MS))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn the_wan_handle_can_be_shared_with_load_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<super::Wan>();
}
