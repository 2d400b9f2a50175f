//! Graceful drain: a signal every connection task watches, and a count of
//! open connections kept by drop guards, so shutdown can wait for in-flight
//! work up to a bound.

use std::time::Duration;

use tokio::sync::watch;

/// The drain signal and the open-connection count.
#[derive(Debug)]
pub struct Drain {
    signal: watch::Sender<bool>,
    active: watch::Sender<usize>,
}

/// Counts one open connection until dropped.
#[derive(Debug)]
pub struct ConnGuard {
    active: watch::Sender<usize>,
}

impl Drain {
    /// Not draining, no connection open.
    pub fn new() -> Self {
        Drain {
            signal: watch::channel(false).0,
            active: watch::channel(0).0,
        }
    }

    /// Counts a connection until the guard drops.
    pub fn guard(&self) -> ConnGuard {
        self.active.send_modify(|n| *n += 1);
        ConnGuard {
            active: self.active.clone(),
        }
    }

    /// Open connections now.
    pub fn active(&self) -> usize {
        *self.active.borrow()
    }

    /// A receiver that turns `true` when draining starts.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.signal.subscribe()
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        *self.signal.borrow()
    }

    /// Starts draining and waits until every connection closed or `bound`
    /// passed. Returns whether everything closed in time.
    pub async fn drain(&self, bound: Duration) -> bool {
        self.signal.send_replace(true);
        let mut rx = self.active.subscribe();
        let done = tokio::time::timeout(bound, rx.wait_for(|n| *n == 0))
            .await
            .is_ok();
        done
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.active.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Resolves when `rx` reports draining (or its sender is gone).
pub async fn draining(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|d| *d).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_guards_up_to_the_bound() {
        let d = Drain::new();
        let g = d.guard();
        assert_eq!(d.active(), 1);
        assert!(
            !d.drain(Duration::from_secs(1)).await,
            "a guard is still held"
        );
        assert!(d.is_draining());
        drop(g);
        assert!(d.drain(Duration::from_secs(1)).await);
        assert_eq!(d.active(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn draining_resolves_once_signalled() {
        let d = Drain::new();
        let mut rx = d.watch();
        let waiter = tokio::spawn(async move { draining(&mut rx).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        d.drain(Duration::ZERO).await;
        waiter.await.unwrap();
    }
}
