//! The WAN router's core, sans-IO: IPv4 packets come in from a cluster with
//! [`Router::handle_packet`]`(from, packet, now)`, go out to the cluster
//! owning their destination through [`Router::poll_transmit`]`(now)`, and
//! the next departure is [`Router::poll_timeout`]. No clock, no TUN, no
//! tokio: the driver in [`super::wan`] owns those.
//!
//! Addressing: cluster `i` (0-based) owns `198.18.(i+1).0/24`
//! ([`cluster_prefix`]). Every ordered pair of clusters has its own
//! [`Link`], so links can be asymmetric.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::Ipv4Addr;
use std::time::Instant;

use super::link::{Link, LinkConfig, LinkStats, SplitMix64};

/// Most clusters one WAN can have (third octet 1..=254 of 198.18.0.0/16).
pub const MAX_CLUSTERS: usize = 254;

/// A packet to write to cluster `to`'s TUN.
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination cluster index.
    pub to: usize,
    /// The IP packet, unchanged.
    pub packet: Vec<u8>,
}

/// What happened to a packet handed to [`Router::handle_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Scheduled for delivery to this cluster at this time.
    Scheduled {
        /// Destination cluster.
        to: usize,
        /// Delivery time.
        at: Instant,
    },
    /// Dropped by the link towards this cluster.
    Dropped {
        /// Destination cluster.
        to: usize,
        /// Why.
        why: super::link::DropReason,
    },
    /// Not IPv4, too short, or to an address no cluster owns.
    Unroutable,
}

/// The router: one [`Link`] per ordered pair of clusters and the packets in
/// flight, ordered by delivery time.
#[derive(Debug)]
pub struct Router {
    clusters: usize,
    /// `links[from * clusters + to]`.
    links: Vec<Link>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    rng: SplitMix64,
    unroutable: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    from: usize,
    to: usize,
    packet: Vec<u8>,
}

/// Cluster `index`'s prefix: `198.18.(index+1).0`, length 24.
pub fn cluster_prefix(index: usize) -> Ipv4Addr {
    debug_assert!(index < MAX_CLUSTERS);
    Ipv4Addr::new(198, 18, (index + 1) as u8, 0)
}

/// Cluster `index`'s WAN address: `198.18.(index+1).1`.
pub fn cluster_addr(index: usize) -> Ipv4Addr {
    let [a, b, c, _] = cluster_prefix(index).octets();
    Ipv4Addr::new(a, b, c, 1)
}

/// The cluster owning `addr`, if any of `clusters` does.
pub fn owner(addr: Ipv4Addr, clusters: usize) -> Option<usize> {
    match addr.octets() {
        [198, 18, c, _] if c >= 1 && usize::from(c) <= clusters => Some(usize::from(c) - 1),
        _ => None,
    }
}

impl Router {
    /// A router for `clusters` clusters, every link set to `link`, drawing
    /// loss and jitter from a generator seeded with `seed`.
    pub fn new(clusters: usize, link: LinkConfig, seed: u64) -> Self {
        assert!(
            clusters <= MAX_CLUSTERS,
            "at most {MAX_CLUSTERS} clusters, got {clusters}"
        );
        Router {
            clusters,
            links: (0..clusters * clusters).map(|_| Link::new(link)).collect(),
            in_flight: BinaryHeap::new(),
            seq: 0,
            rng: SplitMix64::new(seed),
            unroutable: 0,
        }
    }

    /// The number of clusters.
    pub fn clusters(&self) -> usize {
        self.clusters
    }

    /// The link from `from` to `to`.
    ///
    /// # Panics
    /// If either index is out of range (a harness bug).
    pub fn link(&self, from: usize, to: usize) -> &Link {
        &self.links[self.index(from, to)]
    }

    /// The link from `from` to `to`, mutable.
    ///
    /// # Panics
    /// If either index is out of range (a harness bug).
    pub fn link_mut(&mut self, from: usize, to: usize) -> &mut Link {
        let i = self.index(from, to);
        &mut self.links[i]
    }

    /// Counters of the link from `from` to `to`.
    pub fn stats(&self, from: usize, to: usize) -> LinkStats {
        self.link(from, to).stats()
    }

    /// Packets dropped because they were not IPv4 or had no owner.
    pub fn unroutable(&self) -> u64 {
        self.unroutable
    }

    /// A packet read from cluster `from`'s TUN at `now`.
    pub fn handle_packet(&mut self, from: usize, packet: Vec<u8>, now: Instant) -> Verdict {
        let Some(to) = destination(&packet).and_then(|d| owner(d, self.clusters)) else {
            self.unroutable += 1;
            return Verdict::Unroutable;
        };
        let i = self.index(from, to);
        let rng = &mut self.rng;
        match self.links[i].handle_packet(packet.len(), now, || rng.uniform()) {
            Ok(at) => {
                self.seq += 1;
                self.in_flight.push(Reverse(InFlight {
                    at,
                    seq: self.seq,
                    from,
                    to,
                    packet,
                }));
                Verdict::Scheduled { to, at }
            }
            Err(why) => Verdict::Dropped { to, why },
        }
    }

    /// The next packet due at `now`, if any. Packets whose link was
    /// partitioned while they were in flight are dropped here.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        while self.in_flight.peek().is_some_and(|Reverse(p)| p.at <= now) {
            let Reverse(p) = self.in_flight.pop()?;
            let link = self.link_mut(p.from, p.to);
            if link.is_partitioned() {
                link.note_dropped_in_flight();
                continue;
            }
            return Some(Transmit {
                to: p.to,
                packet: p.packet,
            });
        }
        None
    }

    /// When the next packet is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse(p)| p.at)
    }

    fn index(&self, from: usize, to: usize) -> usize {
        assert!(
            from < self.clusters && to < self.clusters,
            "cluster index out of range"
        );
        from * self.clusters + to
    }
}

/// The destination of an IPv4 packet, `None` for anything else.
fn destination(packet: &[u8]) -> Option<Ipv4Addr> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    Some(Ipv4Addr::new(
        packet[16], packet[17], packet[18], packet[19],
    ))
}
