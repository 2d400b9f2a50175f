//! The client end: one TLS 1.3 over TCP connection carrying HTTP/2 to a
//! peer gateway's `tcp_listen`, dialled and held by the peer pool
//! ([`crate::peers`]); each tunnel stream is a CONNECT request on it.
//!
//! A task per connection drives h2, sends keep-alive PINGs and ends the
//! connection on a dead peer or on the gateway's shutdown signal; the
//! pooled handle learns it through [`H2Connection::closed`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Uri};
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsConnector;
use tracing::debug;

use super::stream::{H2Read, H2Write};
use super::{keepalive, H2Settings, ALPN_H2, AUTHORITY};
use crate::metrics::Metrics;

/// Why a connection to a peer's `tcp_listen` could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The TCP connect failed.
    #[error("tcp connect")]
    Connect(#[source] std::io::Error),
    /// `tcp_congestion` could not be set on the socket (an algorithm the
    /// kernel lacks, or one not allowed without privilege).
    #[error("cannot set tcp_congestion {name:?}")]
    Congestion {
        /// The `tcp_congestion` value.
        name: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (counted as a handshake failure).
    #[error("tls handshake")]
    Tls(#[source] std::io::Error),
    /// The peer did not select ALPN `h2`.
    #[error("peer did not select alpn h2")]
    Alpn,
    /// The HTTP/2 preface could not be sent.
    #[error("http/2 handshake")]
    H2(#[source] h2::Error),
    /// Connect and handshakes did not finish within `connect_ms`.
    #[error("connect and handshake timed out")]
    TimedOut,
}

/// Why no CONNECT stream could be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The connection is gone.
    #[error("connection to the peer gateway closed")]
    Closed(#[source] h2::Error),
    /// No stream slot (SETTINGS_MAX_CONCURRENT_STREAMS) within the wait.
    #[error("no stream slot within the deadline")]
    TimedOut,
    /// h2 refused the request.
    #[error("sending the CONNECT request")]
    Send(#[source] h2::Error),
}

/// A TCP connection to `addr` with congestion control `congestion` (set
/// before the SYN, so the whole connection runs it).
///
/// # Errors
/// [`DialError::Congestion`], [`DialError::Connect`].
pub async fn connect_tcp(
    addr: SocketAddr,
    congestion: Option<&str>,
) -> Result<TcpStream, DialError> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(DialError::Connect)?;
    if let Some(name) = congestion {
        super::set_congestion(&socket, name).map_err(|source| DialError::Congestion {
            name: name.to_owned(),
            source,
        })?;
    }
    socket.connect(addr).await.map_err(DialError::Connect)
}

/// A pooled HTTP/2 connection to a peer gateway; cheap to clone.
#[derive(Debug, Clone)]
pub struct H2Connection {
    send: h2::client::SendRequest<Bytes>,
    remote: SocketAddr,
    closed: watch::Receiver<bool>,
    /// Bytes read from the TCP socket so far.
    received: Arc<AtomicU64>,
    /// Ends the connection's driver (and so the connection).
    abort: Arc<Notify>,
}

impl H2Connection {
    /// Connects to `addr` (TCP_NODELAY; congestion control `congestion`,
    /// the `tcp_congestion` key, else the kernel default), runs the TLS
    /// handshake with `tls` and the HTTP/2 preface, all within `timeout`,
    /// and spawns the connection's driver, which stops when `shutdown`
    /// turns true.
    ///
    /// # Errors
    /// [`DialError`]; a failed TLS handshake is also counted in `metrics`.
    #[allow(clippy::too_many_arguments)]
    pub async fn dial(
        addr: SocketAddr,
        tls: Arc<ClientConfig>,
        settings: H2Settings,
        congestion: Option<&str>,
        timeout: Duration,
        metrics: &Metrics,
        shutdown: watch::Receiver<bool>,
    ) -> Result<H2Connection, DialError> {
        let received = Arc::new(AtomicU64::new(0));
        let dial = async {
            let tcp = connect_tcp(addr, congestion).await?;
            let _ = tcp.set_nodelay(true);
            let tcp = Counting {
                inner: tcp,
                received: received.clone(),
            };
            let stream = TlsConnector::from(tls)
                .connect(trust_bundle::tls::spiffe_server_name(), tcp)
                .await
                .map_err(|e| {
                    metrics.handshake_failed();
                    DialError::Tls(e)
                })?;
            if stream.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
                return Err(DialError::Alpn);
            }
            settings
                .client()
                .handshake(stream)
                .await
                .map_err(DialError::H2)
        };
        let (send, mut conn) = tokio::time::timeout(timeout, dial)
            .await
            .map_err(|_| DialError::TimedOut)??;
        let (done, closed) = watch::channel(false);
        let ping = conn.ping_pong();
        let abort = Arc::new(Notify::new());
        let aborted = abort.clone();
        tokio::spawn(async move {
            let mut shutdown = shutdown;
            tokio::select! {
                () = aborted.notified() => {
                    debug!(%addr, "http/2 connection to peer declared lost; closing");
                }
                r = &mut conn => {
                    if let Err(e) = r {
                        debug!(%addr, error = %e, "http/2 connection to peer ended");
                    }
                }
                () = keepalive(ping, settings) => {
                    debug!(%addr, "peer gateway stopped answering PINGs; closing");
                }
                _ = shutdown.wait_for(|s| *s) => {}
            }
            done.send_replace(true);
        });
        Ok(H2Connection {
            send,
            remote: addr,
            closed,
            received,
            abort,
        })
    }

    /// Bytes read from the peer's TCP socket so far (TLS records included).
    pub fn bytes_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Closes the connection now: its driver ends and drops the socket, so
    /// every stream on it fails at once.
    pub fn close(&self) {
        self.abort.notify_one();
    }

    /// Whether the connection is still up.
    pub fn is_open(&self) -> bool {
        !*self.closed.borrow()
    }

    /// Resolves when the connection has ended.
    pub async fn closed(&self) {
        let mut rx = self.closed.clone();
        // The sender is dropped only after sending `true`.
        let _ = rx.wait_for(|c| *c).await;
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.remote
    }

    /// Opens a tunnel stream: a CONNECT request (RFC 9113 §8.5) with the
    /// placeholder [`AUTHORITY`], waiting at most `wait` for a stream slot.
    /// The request goes out at once; the response is awaited by the first
    /// read of the returned [`H2Read`], so the OPEN header is pipelined.
    ///
    /// # Errors
    /// [`OpenError`].
    pub async fn open_stream(&self, wait: Duration) -> Result<(H2Write, H2Read), OpenError> {
        let ready = tokio::time::timeout(wait, self.send.clone().ready()).await;
        let mut send = match ready {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(OpenError::Closed(e)),
            Err(_) => return Err(OpenError::TimedOut),
        };
        let mut request = Request::new(());
        *request.method_mut() = Method::CONNECT;
        *request.uri_mut() = Uri::from_static(AUTHORITY);
        let (response, stream) = send.send_request(request, false).map_err(OpenError::Send)?;
        Ok((H2Write::new(stream), H2Read::response(response)))
    }
}

/// A TCP stream that counts the bytes it reads (liveness of the peer).
struct Counting {
    inner: TcpStream,
    received: Arc<AtomicU64>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
