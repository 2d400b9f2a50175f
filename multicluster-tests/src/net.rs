//! Loopback address plan: every cluster of every topology gets its own
//! `127.<x>.<y>.0/24`, so topologies of parallel tests (and of test processes
//! running side by side) do not meet.
//!
//! `x` = 20 + pid mod 200 (per test process), `y` = 4 × (a per-process
//! counter mod 64) + cluster index (up to 4 clusters per topology). Ports are
//! picked by binding and releasing: the preferred port when it is free on
//! that address, else an ephemeral one.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Result};

/// Clusters per topology.
pub const MAX_CLUSTERS: u8 = 4;

static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);

/// A block of [`MAX_CLUSTERS`] /24 subnets for one topology.
#[derive(Debug, Clone, Copy)]
pub struct Block {
    x: u8,
    y0: u8,
}

impl Block {
    /// The next unused block of this process.
    pub fn allocate() -> Self {
        let n = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed) % 64;
        let x = 20 + (std::process::id() % 200) as u8;
        // n < 64, so 4n + 3 < 256.
        Block {
            x,
            y0: (n * u32::from(MAX_CLUSTERS)) as u8,
        }
    }

    /// The subnet of cluster number `i` (0-based).
    ///
    /// # Errors
    /// `i >= MAX_CLUSTERS`.
    pub fn subnet(&self, i: usize) -> Result<Subnet> {
        if i >= usize::from(MAX_CLUSTERS) {
            bail!("at most {MAX_CLUSTERS} clusters per topology");
        }
        Ok(Subnet {
            x: self.x,
            y: self.y0 + i as u8,
            next_host: 10,
        })
    }
}

/// One cluster's `127.x.y.0/24`: `.1` is the gateway, hosts from `.10` up.
#[derive(Debug, Clone)]
pub struct Subnet {
    x: u8,
    y: u8,
    next_host: u8,
}

impl Subnet {
    /// The gateway's address, `127.x.y.1`.
    pub fn gateway_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(127, self.x, self.y, 1)
    }

    /// A fresh host address in this subnet.
    ///
    /// # Errors
    /// The subnet is exhausted.
    pub fn next_host(&mut self) -> Result<Ipv4Addr> {
        if self.next_host == 255 {
            bail!("subnet 127.{}.{}.0/24 exhausted", self.x, self.y);
        }
        let ip = Ipv4Addr::new(127, self.x, self.y, self.next_host);
        self.next_host += 1;
        Ok(ip)
    }
}

/// A TCP address on `ip`: `preferred` if it can be bound now, else an
/// ephemeral port.
///
/// # Errors
/// Nothing can be bound on `ip`.
pub fn tcp_addr(ip: Ipv4Addr, preferred: u16) -> Result<SocketAddr> {
    if let Ok(l) = TcpListener::bind((ip, preferred)) {
        return Ok(l.local_addr()?);
    }
    Ok(TcpListener::bind((ip, 0))?.local_addr()?)
}

/// A UDP address on `ip`: `preferred` if it can be bound now, else an
/// ephemeral port.
///
/// # Errors
/// Nothing can be bound on `ip`.
pub fn udp_addr(ip: Ipv4Addr, preferred: u16) -> Result<SocketAddr> {
    if let Ok(s) = UdpSocket::bind((ip, preferred)) {
        return Ok(s.local_addr()?);
    }
    Ok(UdpSocket::bind((ip, 0))?.local_addr()?)
}
