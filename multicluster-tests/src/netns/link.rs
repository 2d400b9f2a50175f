//! One direction of a WAN link, sans-IO: given a packet's size and arrival
//! time it decides whether the packet is dropped (partition, loss, a full
//! shaper queue) or when it leaves the far end (rate, then delay and jitter).
//!
//! The order is netem's: loss first, then the rate shaper, then the delay.
//! Packets on one link never overtake each other (like netem with a rate):
//! jitter that would reorder them is clamped to the previous departure.

use std::time::{Duration, Instant};

/// The impairments of one direction of a link. `Default` is a perfect link.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkConfig {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Jitter: each packet's delay is drawn uniformly from
    /// `delay ± jitter` (netem's default distribution), floored at zero.
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a packet is dropped.
    pub loss: f64,
    /// Token-bucket rate limit; `None` is unlimited.
    pub rate: Option<Rate>,
}

/// A token bucket: `bytes_per_sec` sustained, `burst` bytes at once, and at
/// most `max_queue` of waiting in the shaper before packets are tail-dropped
/// (`tbf`'s `latency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Sustained rate, bytes per second (IP packets, headers included).
    pub bytes_per_sec: u64,
    /// Bucket size, bytes.
    pub burst: u64,
    /// Longest a packet may wait in the shaper; later ones are dropped.
    pub max_queue: Duration,
}

/// Why a link dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The link is partitioned.
    Partitioned,
    /// Random loss.
    Loss,
    /// The rate shaper's queue was full.
    Queue,
}

/// Counters of one direction of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets offered to the link.
    pub offered: u64,
    /// Packets scheduled for delivery.
    pub sent: u64,
    /// Bytes scheduled for delivery.
    pub sent_bytes: u64,
    /// Dropped because the link was partitioned (on entry or in flight).
    pub dropped_partition: u64,
    /// Dropped by random loss.
    pub dropped_loss: u64,
    /// Dropped because the shaper queue was full.
    pub dropped_queue: u64,
}

/// One direction of a link: its config, partition flag, shaper and counters.
#[derive(Debug, Clone)]
pub struct Link {
    config: LinkConfig,
    partitioned: bool,
    /// Tokens (bytes) in the bucket at `tokens_at`.
    tokens: f64,
    tokens_at: Option<Instant>,
    /// When the last packet left the shaper (FIFO through the shaper).
    shaper_free: Option<Instant>,
    /// When the last packet is delivered (FIFO on the link).
    last_delivery: Option<Instant>,
    stats: LinkStats,
}

impl LinkConfig {
    /// A link with a fixed one-way `delay`.
    pub fn delay(delay: Duration) -> Self {
        LinkConfig {
            delay,
            ..Self::default()
        }
    }

    /// Sets the jitter (uniform `± jitter`).
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the loss probability (clamped to `[0, 1]`).
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss.clamp(0.0, 1.0);
        self
    }

    /// Limits the rate to `bytes_per_sec` with [`Rate::new`]'s defaults.
    pub fn with_rate(mut self, bytes_per_sec: u64) -> Self {
        self.rate = Some(Rate::new(bytes_per_sec));
        self
    }
}

impl Rate {
    /// `bytes_per_sec` with a burst of 10 ms worth of bytes (at least two
    /// full-size packets) and a 200 ms queue.
    pub fn new(bytes_per_sec: u64) -> Self {
        Rate {
            bytes_per_sec: bytes_per_sec.max(1),
            burst: (bytes_per_sec / 100).max(3000),
            max_queue: Duration::from_millis(200),
        }
    }
}

impl Link {
    /// A healed link with `config`.
    pub fn new(config: LinkConfig) -> Self {
        Link {
            config,
            partitioned: false,
            tokens: 0.0,
            tokens_at: None,
            shaper_free: None,
            last_delivery: None,
            stats: LinkStats::default(),
        }
    }

    /// The current config.
    pub fn config(&self) -> LinkConfig {
        self.config
    }

    /// Replaces the config; packets already scheduled keep their times.
    pub fn set_config(&mut self, config: LinkConfig) {
        self.config = config;
        self.tokens_at = None;
    }

    /// Whether the link is partitioned.
    pub fn is_partitioned(&self) -> bool {
        self.partitioned
    }

    /// Partitions (`true`) or heals (`false`) the link.
    pub fn set_partitioned(&mut self, partitioned: bool) {
        self.partitioned = partitioned;
    }

    /// The counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Counts a packet dropped in flight because the link was partitioned
    /// before it arrived.
    pub fn note_dropped_in_flight(&mut self) {
        self.stats.dropped_partition += 1;
    }

    /// A packet of `len` bytes enters the link at `now`; `uniform` yields
    /// independent samples in `[0, 1)`. Returns when it leaves the far end.
    ///
    /// # Errors
    /// Why the packet is dropped.
    pub fn handle_packet(
        &mut self,
        len: usize,
        now: Instant,
        mut uniform: impl FnMut() -> f64,
    ) -> Result<Instant, DropReason> {
        self.stats.offered += 1;
        if self.partitioned {
            self.stats.dropped_partition += 1;
            return Err(DropReason::Partitioned);
        }
        if self.config.loss > 0.0 && uniform() < self.config.loss {
            self.stats.dropped_loss += 1;
            return Err(DropReason::Loss);
        }
        let shaped = match self.config.rate {
            None => now,
            Some(rate) => match self.shape(rate, len, now) {
                Some(t) => t,
                None => {
                    self.stats.dropped_queue += 1;
                    return Err(DropReason::Queue);
                }
            },
        };
        let mut delivery = shaped + self.sample_delay(uniform());
        if let Some(last) = self.last_delivery {
            delivery = delivery.max(last);
        }
        self.last_delivery = Some(delivery);
        self.stats.sent += 1;
        self.stats.sent_bytes += len as u64;
        Ok(delivery)
    }

    /// Token bucket: when the packet leaves the shaper, or `None` if it would
    /// wait longer than `max_queue`.
    fn shape(&mut self, rate: Rate, len: usize, now: Instant) -> Option<Instant> {
        let bps = rate.bytes_per_sec as f64;
        let burst = rate.burst as f64;
        let start = self.shaper_free.map_or(now, |t| t.max(now));
        let tokens = match self.tokens_at {
            None => burst,
            Some(at) => {
                (self.tokens + bps * start.saturating_duration_since(at).as_secs_f64()).min(burst)
            }
        };
        let need = len as f64;
        let (leave, left) = if tokens >= need {
            (start, tokens - need)
        } else {
            (start + Duration::from_secs_f64((need - tokens) / bps), 0.0)
        };
        if leave.saturating_duration_since(now) > rate.max_queue {
            return None;
        }
        self.tokens = left;
        self.tokens_at = Some(leave);
        self.shaper_free = Some(leave);
        Some(leave)
    }

    /// `delay ± jitter`, uniform, floored at zero; `u` in `[0, 1)`.
    fn sample_delay(&self, u: f64) -> Duration {
        let LinkConfig { delay, jitter, .. } = self.config;
        if jitter.is_zero() {
            return delay;
        }
        let offset = (2.0 * u - 1.0) * jitter.as_secs_f64();
        Duration::from_secs_f64((delay.as_secs_f64() + offset).max(0.0))
    }
}

/// A small seeded PRNG (SplitMix64): deterministic per seed, good enough for
/// drawing loss and jitter, no dependency.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform sample in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
