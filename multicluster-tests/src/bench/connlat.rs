//! Latency of a request on a new connection versus a reused one, measured
//! with a blocking one-request-at-a-time HTTP/1.1 client.
//!
//! - *new*: for each request a fresh TCP connection to an entry that opens a
//!   new mesh connection per client connection (the sidecar's opaque `tcp`
//!   listener: one new tunnel stream and one new TLS session to the remote
//!   sidecar each time), `GET /1k` with `Connection: close`; timed from
//!   `connect()` to the last body byte.
//! - *reused*: one keep-alive connection through the `http` listener, the
//!   requests one after another; timed from writing the request to the last
//!   body byte.
//!
//! Both run sequentially after a few unrecorded warm-up requests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::load::percentile;

/// Per-request I/O deadline.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Unrecorded requests before each measurement.
const WARM_UP: usize = 20;

/// Median and p99 of sequential requests, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SeqLatency {
    /// Requests timed.
    pub requests: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

impl SeqLatency {
    /// From latencies in µs (any order).
    pub fn of(mut us: Vec<u64>) -> Self {
        us.sort_unstable();
        let ms = |q| percentile(&us, q).map_or(0.0, |v| v as f64 / 1000.0);
        SeqLatency {
            requests: us.len(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
        }
    }
}

/// `n` requests, each on a new connection to `addr`.
///
/// # Errors
/// Any request fails.
pub fn new_connections(addr: SocketAddr, path: &str, n: usize) -> Result<SeqLatency> {
    let mut out = Vec::with_capacity(n);
    for i in 0..WARM_UP + n {
        let start = Instant::now();
        let mut s = connect(addr)?;
        request(&mut s, addr, path, true).with_context(|| format!("new connection {i}"))?;
        if i >= WARM_UP {
            out.push(start.elapsed().as_micros() as u64);
        }
    }
    Ok(SeqLatency::of(out))
}

/// `n` requests one after another on a single keep-alive connection to
/// `addr`.
///
/// # Errors
/// Any request fails.
pub fn reused_connection(addr: SocketAddr, path: &str, n: usize) -> Result<SeqLatency> {
    let mut s = connect(addr)?;
    let mut out = Vec::with_capacity(n);
    for i in 0..WARM_UP + n {
        let start = Instant::now();
        request(&mut s, addr, path, false).with_context(|| format!("request {i}"))?;
        if i >= WARM_UP {
            out.push(start.elapsed().as_micros() as u64);
        }
    }
    Ok(SeqLatency::of(out))
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Sends one GET and reads the whole response (a `Content-Length` body);
/// fails on a non-2xx status.
fn request(s: &mut TcpStream, addr: SocketAddr, path: &str, close: bool) -> Result<()> {
    let conn = if close { "close" } else { "keep-alive" };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: {conn}\r\n\r\n"
    )?;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed before the response head");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let (status, len) = parse_head(&buf[..head_end])?;
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed in the body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if !(200..300).contains(&status) {
        bail!("status {status}");
    }
    Ok(())
}

/// Status and `Content-Length` of an HTTP/1.1 response head.
fn parse_head(head: &[u8]) -> Result<(u16, usize)> {
    let text = std::str::from_utf8(head).map_err(|_| anyhow!("non-UTF-8 response head"))?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad status line in {text:?}"))?;
    let len = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no content-length in {text:?}"))?;
    Ok((status, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse() {
        let h = b"HTTP/1.1 200 OK\r\nServer: nginx\r\ncontent-length: 1024\r\n\r\n";
        assert_eq!(parse_head(h).unwrap(), (200, 1024));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }

    #[test]
    fn sequential_stats() {
        let s = SeqLatency::of((1..=100).rev().map(|v| v * 10).collect());
        assert_eq!(s.requests, 100);
        assert_eq!(s.p50_ms, 0.5);
        assert_eq!(s.p99_ms, 0.99);
    }
}
