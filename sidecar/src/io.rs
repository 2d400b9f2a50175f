//! Byte-stream plumbing: [`PrefixedIo`] (bytes already read, then the
//! stream), [`Transport`] (TCP or a tunnel stream under the inner TLS) and
//! HTTP version sniffing for listeners that take both HTTP/1.1 and HTTP/2
//! with prior knowledge.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::tunnel::TunnelStream;

/// Copy buffer per direction of an opaque TCP connection, bytes. Tokio's
/// default (8 KiB) makes a bulk transfer cost a read, a TLS record and a
/// write per 8 KiB; 64 KiB fills four full TLS records per write (RFC 8446
/// §5.1: at most 16 KiB of plaintext each), as the gateway's relay does.
pub const TCP_COPY_BYTES: usize = 64 * 1024;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A stream whose first bytes were already read: reads return `prefix`
/// first. Writes go straight to the stream.
#[derive(Debug)]
pub struct PrefixedIo<T> {
    prefix: Bytes,
    inner: T,
}

/// The byte stream the inner TLS runs over.
#[derive(Debug)]
pub enum Transport {
    /// Straight to a sidecar in this cluster.
    Tcp(TcpStream),
    /// A tunnel stream through the local gateway.
    Tunnel(TunnelStream),
}

/// Which HTTP version a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 with prior knowledge (the preface was sent).
    Http2,
}

impl<T> PrefixedIo<T> {
    /// `prefix`, then `inner`.
    pub fn new(prefix: Bytes, inner: T) -> Self {
        PrefixedIo { prefix, inner }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

/// Reads until the bytes are known to be (or not be) the HTTP/2 preface.
/// Returns `None` if the stream ends first. Time bounds are the caller's.
///
/// # Errors
/// Read errors.
pub async fn sniff_http<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<Option<(Sniffed, Bytes)>> {
    let mut buf = Vec::with_capacity(H2_PREFACE.len());
    loop {
        let mut chunk = [0u8; 24];
        let want = H2_PREFACE.len() - buf.len();
        let n = io.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf[..] != H2_PREFACE[..buf.len()] {
            return Ok(Some((Sniffed::Http1, buf.into())));
        }
        if buf.len() == H2_PREFACE.len() {
            return Ok(Some((Sniffed::Http2, buf.into())));
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PrefixedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tunnel(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tunnel(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    // TLS hands its records over as a list of chunks; without these two the
    // default would write only the first chunk per call: one syscall per
    // TLS record instead of one per flush.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tunnel(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Tcp(s) => s.is_write_vectored(),
            Transport::Tunnel(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Tunnel(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tunnel(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn sniff_tells_http1_from_the_h2_preface_and_replays_the_bytes() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (v, prefix) = sniff_http(&mut b).await.unwrap().unwrap();
        assert_eq!(v, Sniffed::Http1);
        assert!(prefix.starts_with(b"G"));
        let mut io = PrefixedIo::new(prefix, b);
        let mut out = vec![0u8; 16];
        io.read_exact(&mut out).await.unwrap();
        assert_eq!(&out, b"GET / HTTP/1.1\r\n");

        let (mut a, mut b) = tokio::io::duplex(64);
        for chunk in H2_PREFACE.chunks(5) {
            a.write_all(chunk).await.unwrap();
        }
        let (v, prefix) = sniff_http(&mut b).await.unwrap().unwrap();
        assert_eq!(v, Sniffed::Http2);
        assert_eq!(&prefix[..], H2_PREFACE);
    }

    #[tokio::test]
    async fn sniff_returns_none_on_early_eof() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"PRI * HT").await.unwrap();
        drop(a);
        assert!(sniff_http(&mut b).await.unwrap().is_none());
    }
}
