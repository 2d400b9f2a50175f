//! Shared runtime state: the current config snapshot (swapped atomically on
//! reload), endpoint health cool-downs, and the in-flight stream count that
//! drain waits on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Config;

/// How long an endpoint that refused a TCP connection is skipped, ms.
pub const ENDPOINT_COOLDOWN: Duration = Duration::from_millis(5_000);

/// The current config. Readers take an `Arc` snapshot and keep it for the
/// life of a stream; a reload swaps the whole `Arc`.
#[derive(Debug)]
pub struct ConfigCell(RwLock<Arc<Config>>);

impl ConfigCell {
    /// A cell holding `config`.
    pub fn new(config: Config) -> Self {
        ConfigCell(RwLock::new(Arc::new(config)))
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Config> {
        // Poisoning only means a writer panicked while swapping an `Arc`,
        // which cannot leave it half-written.
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Installs `config` for every stream started from now on.
    pub fn store(&self, config: Arc<Config>) {
        match self.0.write() {
            Ok(mut g) => *g = config,
            Err(p) => *p.into_inner() = config,
        }
    }
}

/// Endpoints in their failure cool-down.
#[derive(Debug, Default)]
pub struct Health {
    down_until: Mutex<HashMap<SocketAddr, Instant>>,
}

impl Health {
    /// Whether `addr` may be tried at `now`.
    pub fn is_healthy(&self, addr: SocketAddr, now: Instant) -> bool {
        let map = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&addr).is_none_or(|until| now >= *until)
    }

    /// Records a failed connect at `now`: skip `addr` for [`ENDPOINT_COOLDOWN`].
    pub fn mark_failed(&self, addr: SocketAddr, now: Instant) {
        let mut map = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, until| *until > now);
        map.insert(addr, now + ENDPOINT_COOLDOWN);
    }

    /// Records a successful connect: `addr` is healthy again.
    pub fn mark_ok(&self, addr: SocketAddr) {
        let mut map = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&addr);
    }
}

/// Counts streams in flight; drain waits for zero.
#[derive(Debug)]
pub struct InFlight {
    count: watch::Sender<usize>,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            count: watch::Sender::new(0),
        }
    }
}

impl InFlight {
    /// Registers a stream until the guard drops.
    pub fn enter(self: &Arc<Self>) -> StreamGuard {
        self.count.send_modify(|c| *c += 1);
        StreamGuard(self.clone())
    }

    /// Streams in flight now.
    pub fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// Resolves when no stream is in flight.
    pub async fn idle(&self) {
        let mut rx = self.count.subscribe();
        // The sender lives in `self`: `wait_for` cannot fail here.
        let _ = rx.wait_for(|c| *c == 0).await;
    }
}

/// Keeps a stream counted in [`InFlight`].
#[derive(Debug)]
pub struct StreamGuard(Arc<InFlight>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.count.send_modify(|c| *c = c.saturating_sub(1));
    }
}

/// Lifecycle flags read by `/readyz` and the accept loops.
#[derive(Debug, Default)]
pub struct Status {
    ready: AtomicBool,
    draining: AtomicBool,
}

impl Status {
    /// Listening with an SVID loaded.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Drain started: refuse new connections and streams.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.is_draining()
    }

    /// Whether drain has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
