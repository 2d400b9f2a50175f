//! The outbound TCP listener: each app connection is planned, connected
//! with mTLS (ALPN `isthmus-tcp/1`) to the peer sidecar directly or through
//! a tunnel stream, and copied both ways. A FIN from either side is passed on
//! as a half-close (TLS close_notify, then FIN); a failure closes the app's
//! connection.

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
    mut client: TcpStream,
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
    let mut upstream = None;
    for candidate in &plan.candidates {
        let result =
            super::connect::connect_tls(&shared, &snapshot, candidate, Protocol::Tcp).await;
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
                if !e.try_next_candidate() {
                    break;
                }
            }
        }
    }
    let Some(mut upstream) = upstream else {
        tracing::warn!(%service, %peer, "every candidate failed; closing");
        return;
    };
    match tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        crate::io::TCP_COPY_BYTES,
        crate::io::TCP_COPY_BYTES,
    )
    .await
    {
        Ok((up, down)) => {
            tracing::debug!(%service, %peer, bytes_up = up, bytes_down = down, "tcp connection done")
        }
        Err(e) => tracing::debug!(%service, %peer, error = %e, "tcp connection failed"),
    }
}
