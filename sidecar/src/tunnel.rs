//! The client side of `isthmus-tunnel/1` toward the local east-west gateway
//! (docs/reference/tunnel-protocol.md): one pooled QUIC connection
//! (ALPN `isthmus-tunnel/1`, mutual TLS with our SVID, the gateway checked
//! against `gateway.spiffe_id`), re-established on demand when closed, and
//! one bidirectional stream per proxied connection.
//!
//! [`TunnelClient::open`] is a thin driver around the sans-IO
//! [`tunnel_proto::Opener`]: it writes the OPEN header, feeds reads, the FIN
//! and resets to the opener, arms its one timer, and returns a
//! [`TunnelStream`] on accept or an [`OpenError`] carrying the reject reason.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use quinn::{RecvStream, SendStream, VarInt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use trust_bundle::{Authorizer, BundleStore, SvidSource};
use tunnel_proto::{HandshakeError, HeaderError, OpenHeader, Opener, OpenerEvent, RejectReason};

use crate::config::Gateway;

/// Why a tunnel stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The local UDP socket could not be bound.
    #[error("cannot bind the QUIC client socket")]
    Bind(#[source] io::Error),
    /// The QUIC TLS config could not be built.
    #[error("cannot build the QUIC client config")]
    Config(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// quinn refused to start the connection.
    #[error("cannot connect to the gateway")]
    Connect(#[source] quinn::ConnectError),
    /// The QUIC connection failed or closed.
    #[error("gateway connection failed")]
    Connection(#[source] quinn::ConnectionError),
    /// The connection or the handshake did not complete within the deadline.
    #[error("tunnel open timed out")]
    TimedOut,
    /// The gateway refused the stream.
    #[error("rejected: {reason}: {detail}")]
    Rejected {
        /// The reason code.
        reason: RejectReason,
        /// The gateway's detail.
        detail: String,
    },
    /// The OPEN header could not be encoded (names out of protocol bounds).
    #[error("invalid tunnel header")]
    Header(#[source] HeaderError),
    /// The stream handshake failed (malformed response, early FIN, reset).
    #[error("tunnel handshake failed")]
    Handshake(#[source] HandshakeError),
    /// Writing the header failed.
    #[error("writing the tunnel header failed")]
    Write(#[source] quinn::WriteError),
    /// Reading the response failed.
    #[error("reading the tunnel response failed")]
    Read(#[source] quinn::ReadError),
    /// The connection closed while opening the stream.
    #[error("gateway connection closed")]
    Closed,
}

/// A pooled QUIC connection to the local gateway.
pub struct TunnelClient {
    source: Arc<SvidSource>,
    store: BundleStore,
    bind_ip: IpAddr,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    endpoint: Option<quinn::Endpoint>,
    conn: Option<(Gateway, quinn::Connection)>,
}

/// An accepted tunnel stream: early data first, then the QUIC stream; the
/// write half's shutdown is a FIN (half-close).
#[derive(Debug)]
pub struct TunnelStream {
    early: Bytes,
    recv: RecvStream,
    send: SendStream,
}

impl TunnelClient {
    /// A client presenting `source`'s SVID, checking gateways with `store`,
    /// binding its UDP socket to `bind_ip` (port 0) on first use.
    pub fn new(source: Arc<SvidSource>, store: BundleStore, bind_ip: IpAddr) -> Self {
        TunnelClient {
            source,
            store,
            bind_ip,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// Opens a stream to `header`'s target through `gateway`; the QUIC
    /// connection (if a new one is needed) and the stream handshake each
    /// get `timeout`.
    ///
    /// # Errors
    /// See [`OpenError`]; [`OpenError::Rejected`] carries the gateway's reason.
    pub async fn open(
        &self,
        gateway: &Gateway,
        header: &OpenHeader,
        timeout: Duration,
    ) -> Result<TunnelStream, OpenError> {
        let conn = self.connection(gateway, timeout).await?;
        let (mut send, mut recv) = match tokio::time::timeout(timeout, conn.open_bi()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(OpenError::Connection(e)),
            Err(_) => return Err(OpenError::TimedOut),
        };
        match handshake(&mut send, &mut recv, header, timeout).await {
            Ok(early) => Ok(TunnelStream {
                early: early.into(),
                recv,
                send,
            }),
            Err(e) => {
                let code = match &e {
                    OpenError::Rejected { .. } => None,
                    OpenError::Handshake(h) => Some(h.reset_code()),
                    OpenError::TimedOut => Some(tunnel_proto::code::HEADER_TIMEOUT),
                    _ => Some(tunnel_proto::code::CANCELLED),
                };
                match code {
                    // After a reject the opener finishes its side and sends
                    // no payload.
                    None => {
                        let _ = send.finish();
                    }
                    Some(c) => {
                        let _ = send.reset(VarInt::from_u32(c));
                        let _ = recv.stop(VarInt::from_u32(c));
                    }
                }
                Err(e)
            }
        }
    }

    /// The pooled connection to `gateway`, connecting if there is none, it
    /// closed, or the gateway settings changed.
    async fn connection(
        &self,
        gateway: &Gateway,
        timeout: Duration,
    ) -> Result<quinn::Connection, OpenError> {
        let mut state = self.state.lock().await;
        if let Some((gw, conn)) = &state.conn {
            if gw == gateway && conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
        }
        if let Some((_, old)) = state.conn.take() {
            old.close(VarInt::from_u32(tunnel_proto::code::CLOSE_NORMAL), b"");
        }
        let endpoint = match &state.endpoint {
            Some(e) => e.clone(),
            None => {
                let e = quinn::Endpoint::client(SocketAddr::new(self.bind_ip, 0))
                    .map_err(OpenError::Bind)?;
                state.endpoint = Some(e.clone());
                e
            }
        };
        let config = self.client_config(gateway)?;
        let connecting = endpoint
            .connect_with(config, gateway.address, "spiffe.invalid")
            .map_err(OpenError::Connect)?;
        let conn = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(OpenError::Connection(e)),
            Err(_) => return Err(OpenError::TimedOut),
        };
        tracing::info!(gateway = %gateway.address, id = %gateway.spiffe_id, "connected to the gateway");
        state.conn = Some((gateway.clone(), conn.clone()));
        Ok(conn)
    }

    fn client_config(&self, gateway: &Gateway) -> Result<quinn::ClientConfig, OpenError> {
        let tls = trust_bundle::tls::client_config(
            Some(self.source.clone()),
            self.store.clone(),
            Authorizer::Exact(gateway.spiffe_id.clone()),
            &[tunnel_proto::ALPN],
        )
        .map_err(|e| OpenError::Config(Box::new(e)))?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))
            .map_err(|e| OpenError::Config(Box::new(e)))?;
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(gateway.keep_alive));
        transport.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(gateway.idle_timeout)
                .map_err(|e| OpenError::Config(Box::new(e)))?,
        ));
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(Arc::new(transport));
        Ok(config)
    }

    /// Closes the pooled connection (drain).
    pub async fn close(&self) {
        let mut state = self.state.lock().await;
        if let Some((_, conn)) = state.conn.take() {
            conn.close(VarInt::from_u32(tunnel_proto::code::CLOSE_NORMAL), b"");
        }
    }
}

/// Runs the opener over a fresh stream; returns the early data on accept.
async fn handshake(
    send: &mut SendStream,
    recv: &mut RecvStream,
    header: &OpenHeader,
    timeout: Duration,
) -> Result<Vec<u8>, OpenError> {
    let now = || tokio::time::Instant::now().into_std();
    let mut opener = Opener::new(header, now(), timeout).map_err(OpenError::Header)?;
    if let Some(bytes) = opener.poll_transmit() {
        match tokio::time::timeout(timeout, send.write_all(&bytes)).await {
            Ok(r) => r.map_err(OpenError::Write)?,
            Err(_) => return Err(OpenError::TimedOut),
        }
    }
    let mut buf = vec![0u8; 4096];
    loop {
        if let Some(event) = opener.poll_event() {
            return match event {
                OpenerEvent::Accepted { early_data } => Ok(early_data),
                OpenerEvent::Rejected { reason, detail } => {
                    Err(OpenError::Rejected { reason, detail })
                }
                OpenerEvent::Failed(HandshakeError::TimedOut) => Err(OpenError::TimedOut),
                OpenerEvent::Failed(e) => Err(OpenError::Handshake(e)),
            };
        }
        let deadline = opener.poll_timeout();
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = recv.read(&mut buf) => match r {
                Ok(Some(n)) => opener.handle_recv(&buf[..n], now()),
                Ok(None) => opener.handle_fin(now()),
                Err(quinn::ReadError::Reset(code)) => opener.handle_reset(code.into_inner(), now()),
                Err(quinn::ReadError::ConnectionLost(e)) => return Err(OpenError::Connection(e)),
                Err(e) => return Err(OpenError::Read(e)),
            },
            () = timer => opener.handle_timeout(now()),
        }
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.early.has_remaining() {
            let n = self.early.len().min(buf.remaining());
            buf.put_slice(&self.early[..n]);
            self.early.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx)
    }
}

impl std::fmt::Debug for TunnelClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelClient")
            .field("bind_ip", &self.bind_ip)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "tunnel_tests.rs"]
mod tests;
