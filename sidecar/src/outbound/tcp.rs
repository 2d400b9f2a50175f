//! The outbound TCP listener: each app connection is planned, connected
//! with mTLS (ALPN `isthmus-tcp/1`) to the peer sidecar directly or through
//! a tunnel stream, and copied both ways. A FIN from either side is passed on
//! as a half-close (TLS close_notify, then FIN); a failure closes the app's
//! connection.
//!
//! Resilience: a connect failure moves to the next candidate while
//! `connect-failure` is in the service's `retry_on` (nothing was sent);
//! each connection holds a `max_connections` slot (over it the app's
//! connection is closed at once); no bytes either way for the service's
//! `idle` timeout close both sides.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;

use crate::config::Protocol;
use crate::errors::error_chain;
use crate::health::Outcome;
use crate::metrics::{Direction, ServiceLabels};
use crate::plan::{plan, Target};
use crate::runtime::{Shared, Snapshot};

/// Serves one app connection on the outbound TCP listener at `listen`.
pub async fn serve(
    shared: Arc<Shared>,
    listen: SocketAddr,
    client: TcpStream,
    snapshot: Arc<Snapshot>,
    peer: SocketAddr,
) {
    let Some(entry) = snapshot.config.outbound_at(listen).cloned() else {
        return;
    };
    let service = entry.service.to_string();
    shared
        .metrics
        .tcp_connections
        .get_or_create(&ServiceLabels {
            direction: Direction::Outbound,
            service: service.clone(),
        })
        .inc();
    let target = Target {
        service: entry.service.clone(),
        port: entry.port,
        cluster: entry.cluster.clone(),
    };
    let rotation = shared.rotation.fetch_add(1, Ordering::Relaxed);
    let plan = match plan(
        &snapshot.config,
        &target,
        &shared.health.at(Instant::now()),
        rotation,
    ) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(%service, %peer, error = %e, "no route; closing");
            return;
        }
    };
    let (policy, state) = shared.resilience.for_outbound(&snapshot.config, &entry);
    let _slot = match state.circuit.connection(&policy.circuit_breaker) {
        Ok(g) => g,
        Err(limit) => {
            shared.resilience.count_circuit_open(&state, limit);
            tracing::warn!(%service, %peer, limit = limit.as_str(), "circuit breaker overflow; closing");
            return;
        }
    };
    let mut upstream = None;
    for (i, candidate) in plan.candidates.iter().enumerate() {
        if i > 0 {
            shared
                .resilience
                .count_retry(&state, crate::resilience::RetryReason::ConnectFailure);
        }
        let result = super::connect::connect_tls(
            &shared,
            &snapshot,
            candidate,
            Protocol::Tcp,
            policy.timeouts.connect,
        )
        .await;
        let outcome = match &result {
            Ok(_) => Some(Outcome::Success),
            Err(e) => Outcome::of_error(candidate, e),
        };
        if let Some(o) = outcome {
            shared.health.report(&target, candidate, o, Instant::now());
        }
        match result {
            Ok(s) => {
                upstream = Some(s);
                break;
            }
            Err(e) => {
                tracing::debug!(%candidate, error = %error_chain(&e), "candidate failed");
                let retry_on = policy.retries.retry_on;
                if !e.try_next_candidate()
                    || !retry_on.contains(crate::resilience::retry::RetryClass::ConnectFailure)
                {
                    break;
                }
            }
        }
    }
    let Some(mut upstream) = upstream else {
        tracing::warn!(%service, %peer, "every candidate failed; closing");
        return;
    };
    let activity = super::idle::Activity::new();
    let mut client = super::idle::Tracked::new(client, activity.clone());
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        crate::io::TCP_COPY_BYTES,
        crate::io::TCP_COPY_BYTES,
    );
    tokio::select! {
        r = copy => match r {
            Ok((up, down)) => {
                tracing::debug!(%service, %peer, bytes_up = up, bytes_down = down, "tcp connection done")
            }
            Err(e) => tracing::debug!(%service, %peer, error = %e, "tcp connection failed"),
        },
        () = idle(&activity, policy.timeouts.idle) => {
            tracing::debug!(%service, %peer, "tcp connection idle; closing");
        }
    }
}

/// Resolves once `activity` was quiet for `limit`; never without a limit.
async fn idle(activity: &super::idle::Activity, limit: Option<std::time::Duration>) {
    match limit {
        Some(l) => activity.idle(l).await,
        None => std::future::pending().await,
    }
}
