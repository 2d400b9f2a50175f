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
use tokio::net::{TcpListener, TcpSocket, TcpStream};
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
    /// `tcp_congestion` could not be set on the listening socket (an
    /// algorithm the kernel lacks, or one not allowed without privilege).
    #[error("cannot set tcp_congestion {name:?} on the tcp_listen socket {addr}")]
    Congestion {
        /// The `tcp_congestion` value.
        name: String,
        /// The `tcp_listen` address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Backlog of the `tcp_listen` socket (as `TcpListener::bind`).
const BACKLOG: u32 = 1024;

/// Binds the `tcp_listen` socket at `addr` (SO_REUSEADDR, as
/// `TcpListener::bind`), first giving it `congestion` (`tcp_congestion`),
/// which every accepted connection inherits; `None` keeps the kernel
/// default. Returns the listener and its bound address.
///
/// # Errors
/// [`ListenError::Bind`], [`ListenError::Congestion`].
pub fn bind(
    addr: SocketAddr,
    congestion: Option<&str>,
) -> Result<(TcpListener, SocketAddr), ListenError> {
    let bind_err = |source| ListenError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(bind_err)?;
    if let Some(name) = congestion {
        super::set_congestion(&socket, name).map_err(|source| ListenError::Congestion {
            name: name.to_owned(),
            addr,
            source,
        })?;
    }
    #[cfg(not(windows))]
    socket.set_reuseaddr(true).map_err(bind_err)?;
    socket.bind(addr).map_err(bind_err)?;
    let listener = socket.listen(BACKLOG).map_err(bind_err)?;
    let bound = listener.local_addr().map_err(bind_err)?;
    Ok((listener, bound))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn congestion_of(tcp: &TcpStream) -> String {
        // The kernel's fixed-size buffer, NUL-padded.
        let mut name = socket2::SockRef::from(tcp).tcp_congestion().unwrap();
        name.truncate(name.iter().position(|&b| b == 0).unwrap_or(name.len()));
        String::from_utf8(name).unwrap()
    }

    /// `reno` is always built in and always in
    /// `net.ipv4.tcp_allowed_congestion_control`, so this also runs
    /// unprivileged.
    #[tokio::test]
    async fn accepted_connections_inherit_the_listeners_congestion_control() {
        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap(), Some("reno")).unwrap();
        assert_ne!(addr.port(), 0);
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (accepted, _) = accepted.unwrap();
        assert_eq!(congestion_of(&accepted), "reno");
        drop(client);

        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let default = congestion_of(&client.unwrap());
        assert_eq!(congestion_of(&accepted.unwrap().0), default);
    }

    #[tokio::test]
    async fn dialled_connections_run_the_configured_congestion_control() {
        use super::super::client::{connect_tcp, DialError};
        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let (client, accepted) = tokio::join!(connect_tcp(addr, Some("reno")), listener.accept());
        assert_eq!(congestion_of(&client.unwrap()), "reno");
        drop(accepted);
        let err = connect_tcp(addr, Some("no-such-cc")).await.unwrap_err();
        assert!(matches!(err, DialError::Congestion { .. }), "{err:?}");
        assert_eq!(err.to_string(), "cannot set tcp_congestion \"no-such-cc\"");
    }

    #[tokio::test]
    async fn an_unknown_congestion_control_is_an_error_naming_the_key() {
        let err = bind("127.0.0.1:0".parse().unwrap(), Some("no-such-cc")).unwrap_err();
        assert!(matches!(err, ListenError::Congestion { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("tcp_congestion \"no-such-cc\""), "{msg}");
    }
}
