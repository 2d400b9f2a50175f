//! Inbound opaque TCP: connect to the app and copy both ways, passing
//! half-closes on.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use trust_bundle::SpiffeId;

use crate::config::Inbound;
use crate::metrics::{Direction, ServiceLabels};
use crate::runtime::{Shared, Snapshot};

/// Forwards one authenticated connection to the app.
pub async fn serve(
    shared: Arc<Shared>,
    entry: Inbound,
    snapshot: Arc<Snapshot>,
    mut tls: TlsStream<TcpStream>,
    caller: SpiffeId,
) {
    let app = entry.app;
    shared
        .metrics
        .tcp_connections
        .get_or_create(&ServiceLabels {
            direction: Direction::Inbound,
            service: app.to_string(),
        })
        .inc();
    let connect = tokio::time::timeout(snapshot.config.timeouts.connect, TcpStream::connect(app));
    let mut upstream = match connect.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%app, %caller, error = %e, "app connect failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%app, %caller, "app connect timed out");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    match tokio::io::copy_bidirectional_with_sizes(
        &mut tls,
        &mut upstream,
        crate::io::TCP_COPY_BYTES,
        crate::io::TCP_COPY_BYTES,
    )
    .await
    {
        Ok((a, b)) => {
            tracing::debug!(%app, %caller, bytes_in = a, bytes_out = b, "inbound tcp done")
        }
        Err(e) => tracing::debug!(%app, %caller, error = %e, "inbound tcp failed"),
    }
}
