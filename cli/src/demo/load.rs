//! The frontend's steady background load: `rate` requests per second to one
//! upstream over a kept-alive connection, reconnecting after failures.
//! Each call is recorded in the upstream's [`Counter`].

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use super::Counter;
use crate::http::Conn;

/// Deadline of one background request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until aborted.
pub(super) async fn run(name: String, addr: SocketAddr, rate: f64, counter: Arc<Counter>) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    // After a slow request, carry on at the rate rather than burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<Conn> = None;
    loop {
        tick.tick().await;
        if !conn.as_ref().is_some_and(Conn::is_open) {
            conn = match Conn::connect(addr).await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::debug!(upstream = %name, error = %e, "connect failed");
                    None
                }
            };
        }
        let Some(c) = conn.as_mut() else {
            counter.record(false);
            continue;
        };
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, c.get("/")).await;
        counter.record(matches!(&outcome, Ok(Ok(r)) if r.status.is_success()));
        match outcome {
            Ok(Ok(r)) => tracing::trace!(upstream = %name, status = %r.status, "load request"),
            Ok(Err(e)) => {
                tracing::debug!(upstream = %name, error = %e, "load request failed");
                conn = None;
            }
            Err(_) => {
                tracing::debug!(upstream = %name, "load request timed out");
                conn = None;
            }
        }
    }
}
