//! The client side of `isthmus-tunnel/1` toward the local east-west gateway
//! (docs/reference/tunnel-protocol.md): one pooled QUIC connection per
//! gateway replica (ALPN `isthmus-tunnel/1`, mutual TLS with our SVID, the
//! gateway checked against `gateway.spiffe_id`), re-established on demand
//! when closed, and one bidirectional stream per proxied connection. With
//! several replicas (`gateway.addresses`) streams go round robin over the
//! healthy ones and fail over between them ([`TunnelClient::open`]).
//!
//! [`TunnelClient::open`] is a thin driver around the sans-IO
//! [`tunnel_proto::Opener`]: it writes the OPEN header, feeds reads, the FIN
//! and resets to the opener, arms its one timer, and returns a
//! [`TunnelStream`] on accept or an [`OpenError`] carrying the reject reason.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Every replica of the local gateway failed recently and is cooling
    /// down.
    #[error("every gateway replica is cooling down")]
    Unavailable,
}

/// Pooled QUIC connections to the local gateway's replicas.
pub struct TunnelClient {
    source: Arc<SvidSource>,
    store: BundleStore,
    bind_ip: IpAddr,
    endpoint: tokio::sync::OnceCell<quinn::Endpoint>,
    slots: std::sync::Mutex<Slots>,
    /// Round robin over the replicas.
    cursor: AtomicUsize,
}

/// The connections of the current gateway settings, one slot per replica.
#[derive(Default)]
struct Slots {
    gateway: Option<Gateway>,
    by_addr: HashMap<SocketAddr, Arc<Slot>>,
}

/// One replica: its connection (connected under the async lock, so one
/// replica's slow connect does not hold up the others) and its health.
#[derive(Default)]
struct Slot {
    conn: tokio::sync::Mutex<Option<quinn::Connection>>,
    health: std::sync::Mutex<ReplicaHealth>,
}

/// A replica's failure record: skipped until `down_until`.
#[derive(Debug, Default, Clone, Copy)]
struct ReplicaHealth {
    failures: u32,
    down_until: Option<tokio::time::Instant>,
}

/// How long a replica from which nothing at all (not even the ACK of the
/// header) arrived after an OPEN may stay silent before it is declared
/// lost and the next replica is tried, at most: the gateway's default
/// `timeouts.peer_open_ms`. Capped at a third of the open deadline.
pub const REPLICA_SILENCE: Duration = Duration::from_millis(1000);

/// First cool-down of a failed replica; doubles per consecutive failure
/// up to [`REPLICA_MAX_COOLDOWN`].
const REPLICA_COOLDOWN: Duration = Duration::from_millis(250);
/// Largest cool-down of a failed replica.
const REPLICA_MAX_COOLDOWN: Duration = Duration::from_secs(5);

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
            endpoint: tokio::sync::OnceCell::new(),
            slots: std::sync::Mutex::new(Slots::default()),
            cursor: AtomicUsize::new(0),
        }
    }

    /// Opens a stream to `header`'s target through `gateway`; the QUIC
    /// connection (if a new one is needed) and the stream handshake each
    /// get `timeout`.
    ///
    /// With several replicas (`gateway.replicas`) new streams go round
    /// robin over the ones not cooling down; a replica that cannot be
    /// connected, refuses the stream, or sends nothing at all within
    /// [`REPLICA_SILENCE`] after the header is declared lost (its
    /// connection is closed, resetting its streams at once; it cools down
    /// with exponential backoff) and the header goes to the next one (no
    /// payload was sent: the opener writes none before the accept). Every
    /// replica cooling down: [`OpenError::Unavailable`] at once.
    ///
    /// # Errors
    /// See [`OpenError`]; [`OpenError::Rejected`] carries the gateway's reason.
    pub async fn open(
        &self,
        gateway: &Gateway,
        header: &OpenHeader,
        timeout: Duration,
    ) -> Result<TunnelStream, OpenError> {
        let replicas = self.replicas(gateway);
        let several = replicas.len() > 1;
        let now = tokio::time::Instant::now();
        let mut order: Vec<&(SocketAddr, Arc<Slot>)> = replicas
            .iter()
            .filter(|(_, slot)| !several || slot.is_up(now))
            .collect();
        if order.is_empty() {
            return Err(OpenError::Unavailable);
        }
        let n = order.len();
        order.rotate_left(self.cursor.fetch_add(1, Ordering::Relaxed) % n);
        let mut last = OpenError::Unavailable;
        for (addr, slot) in order {
            match self.open_on(gateway, *addr, slot, header, timeout).await {
                Ok(stream) => {
                    slot.mark_ok();
                    return Ok(stream);
                }
                Err((e, lost)) => {
                    if !lost || !several {
                        return Err(e);
                    }
                    tracing::warn!(gateway = %addr, error = %e, "gateway replica declared lost; trying the next");
                    slot.mark_down(tokio::time::Instant::now());
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// One attempt on the replica at `addr`. On failure, also whether the
    /// replica is to blame (unreachable, connection closed, silent).
    async fn open_on(
        &self,
        gateway: &Gateway,
        addr: SocketAddr,
        slot: &Slot,
        header: &OpenHeader,
        timeout: Duration,
    ) -> Result<TunnelStream, (OpenError, bool)> {
        let conn = self
            .connection(gateway, addr, slot, timeout)
            .await
            .map_err(|e| {
                let lost = !matches!(e, OpenError::Bind(_) | OpenError::Config(_));
                (e, lost)
            })?;
        let (mut send, mut recv) = match tokio::time::timeout(timeout, conn.open_bi()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err((OpenError::Connection(e), true)),
            Err(_) => return Err((OpenError::TimedOut, false)),
        };
        let heard = conn.stats().udp_rx.datagrams;
        let silence = REPLICA_SILENCE.min(timeout / 3);
        let result = {
            let hs = handshake(&mut send, &mut recv, header, timeout);
            tokio::pin!(hs);
            let first = tokio::select! {
                r = &mut hs => Some(r),
                () = tokio::time::sleep(silence) => None,
            };
            match first {
                Some(r) => Some(r),
                // Not even the ACK of the header: the replica is gone.
                None if conn.stats().udp_rx.datagrams == heard => None,
                None => Some(hs.await),
            }
        };
        let Some(result) = result else {
            conn.close(
                VarInt::from_u32(tunnel_proto::code::CLOSE_NORMAL),
                b"replica unresponsive",
            );
            return Err((OpenError::TimedOut, true));
        };
        match result {
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
                let lost = matches!(e, OpenError::Connection(_) | OpenError::Closed);
                Err((e, lost))
            }
        }
    }

    /// The slots of `gateway`'s replicas, in config order; new settings
    /// close every old connection.
    fn replicas(&self, gateway: &Gateway) -> Vec<(SocketAddr, Arc<Slot>)> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.gateway.as_ref() != Some(gateway) {
            for slot in slots.by_addr.values() {
                if let Ok(conn) = slot.conn.try_lock() {
                    if let Some(c) = conn.as_ref() {
                        c.close(VarInt::from_u32(tunnel_proto::code::CLOSE_NORMAL), b"");
                    }
                }
            }
            slots.by_addr.clear();
            slots.gateway = Some(gateway.clone());
        }
        let addrs: Vec<SocketAddr> = if gateway.replicas.is_empty() {
            vec![gateway.address]
        } else {
            gateway.replicas.clone()
        };
        addrs
            .into_iter()
            .map(|a| (a, slots.by_addr.entry(a).or_default().clone()))
            .collect()
    }

    /// The pooled connection to the replica at `addr`, connecting if there
    /// is none or it closed.
    async fn connection(
        &self,
        gateway: &Gateway,
        addr: SocketAddr,
        slot: &Slot,
        timeout: Duration,
    ) -> Result<quinn::Connection, OpenError> {
        let mut held = slot.conn.lock().await;
        if let Some(conn) = held.as_ref() {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
        }
        *held = None;
        let endpoint = self
            .endpoint
            .get_or_try_init(|| async {
                quinn::Endpoint::client(SocketAddr::new(self.bind_ip, 0)).map_err(OpenError::Bind)
            })
            .await?
            .clone();
        let config = self.client_config(gateway)?;
        let connecting = endpoint
            .connect_with(config, addr, "spiffe.invalid")
            .map_err(OpenError::Connect)?;
        let conn = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(OpenError::Connection(e)),
            Err(_) => return Err(OpenError::TimedOut),
        };
        tracing::info!(gateway = %addr, id = %gateway.spiffe_id, "connected to the gateway");
        *held = Some(conn.clone());
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

    /// Closes the pooled connections (drain).
    pub async fn close(&self) {
        let slots: Vec<Arc<Slot>> = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.gateway = None;
            slots.by_addr.drain().map(|(_, s)| s).collect()
        };
        for slot in slots {
            if let Some(conn) = slot.conn.lock().await.take() {
                conn.close(VarInt::from_u32(tunnel_proto::code::CLOSE_NORMAL), b"");
            }
        }
    }
}

impl Slot {
    fn is_up(&self, now: tokio::time::Instant) -> bool {
        let h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.down_until.is_none_or(|t| now >= t)
    }

    fn mark_ok(&self) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        *h = ReplicaHealth::default();
    }

    fn mark_down(&self, now: tokio::time::Instant) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let factor = 1u32.checked_shl(h.failures.min(16)).unwrap_or(u32::MAX);
        let cooldown = REPLICA_COOLDOWN
            .saturating_mul(factor)
            .min(REPLICA_MAX_COOLDOWN);
        h.failures = h.failures.saturating_add(1);
        h.down_until = Some(now + cooldown);
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
