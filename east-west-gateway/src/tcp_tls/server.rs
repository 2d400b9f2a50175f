//! The `tcp_listen` accept side: TLS 1.3 connections from peer gateways
//! (ALPN `h2`), one HTTP/2 connection each; every CONNECT request is
//! answered 200 and its stream handed to [`crate::server::spawn_stream`],
//! the same admission and routing as a QUIC stream from a peer. Any other
//! method gets 405.
//!
//! Handshake failures and timeouts count in
//! `isthmus_gateway_handshake_failures_total`, as on the QUIC endpoint.
//! While draining, new TCP connections are closed and new streams reset
//! (REFUSED_STREAM, tunnel code `0x4`); on the shutdown signal every
//! connection is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info_span, warn, Instrument};
use trust_bundle::SpiffeId;

use super::stream::{H2Read, H2Write};
use super::{keepalive, H2Settings, ALPN_H2};
use crate::server::{spawn_stream, Ctx, Listener};

/// Why the TCP+TLS listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// rustls refused the server configuration.
    #[error("tls configuration")]
    Tls(#[source] rustls::Error),
    /// The TCP socket could not be bound.
    #[error("cannot bind tcp {addr}")]
    Bind {
        /// The `tcp_listen` address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Pause after a failed `accept` (e.g. out of file descriptors), so the
/// loop does not spin, ms.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Accepts connections on `listener` until the task is aborted.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    ctx: Arc<Ctx>,
    shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        if ctx.status.is_draining() {
            continue;
        }
        let task = connection(tcp, remote, acceptor.clone(), ctx.clone(), shutdown.clone());
        tokio::spawn(task);
    }
}

async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    ctx: Arc<Ctx>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let config = ctx.config.load();
    let settings = H2Settings::new(&config.quic);
    let handshake = async {
        let tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let session = tls.get_ref().1;
        if session.alpn_protocol() != Some(ALPN_H2) {
            return Err("client did not select alpn h2".to_owned());
        }
        let id = trust_bundle::verify::peer_spiffe_id(session.peer_certificates())
            .ok_or_else(|| "no client SPIFFE ID".to_owned())?;
        let h2 = settings
            .server()
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((id, h2))
    };
    let (id, mut h2) = match tokio::time::timeout(config.timeouts.connect, handshake).await {
        Ok(Ok(c)) => c,
        Ok(Err(error)) => {
            ctx.metrics.handshake_failed();
            debug!(%remote, error, "inbound tcp+tls handshake failed");
            return;
        }
        Err(_) => {
            ctx.metrics.handshake_failed();
            debug!(%remote, "inbound tcp+tls handshake timed out");
            return;
        }
    };
    let span = info_span!("conn", %remote, peer_id = %id, transport = "tcp-tls");
    async move {
        debug!("connection up");
        let alive = keepalive(h2.ping_pong(), settings);
        tokio::pin!(alive);
        let mut stream_no = 0u64;
        loop {
            tokio::select! {
                next = h2.accept() => match next {
                    Some(Ok((request, respond))) => {
                        stream_no += 1;
                        handle(&ctx, &id, stream_no, request, respond);
                    }
                    Some(Err(e)) => {
                        debug!(error = %e, "connection failed");
                        break;
                    }
                    None => break,
                },
                () = &mut alive => {
                    debug!("peer gateway stopped answering PINGs; closing");
                    break;
                }
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        debug!("connection closed");
    }
    .instrument(span)
    .await;
}

/// Answers one request: CONNECT gets 200 and becomes a tunnel stream.
fn handle(
    ctx: &Arc<Ctx>,
    id: &SpiffeId,
    n: u64,
    request: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    if request.method() != Method::CONNECT {
        let mut refused = Response::new(());
        *refused.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        let _ = respond.send_response(refused, true);
        return;
    }
    let recv = H2Read::body(request.into_body());
    match respond.send_response(Response::new(()), false) {
        Ok(send) => spawn_stream(ctx, id, n, H2Write::new(send), recv, Listener::TcpTls),
        Err(e) => debug!(error = %e, "cannot answer a CONNECT"),
    }
}
