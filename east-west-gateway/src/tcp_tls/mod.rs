//! The TCP+TLS baseline transport between peer gateways: tunnel streams as
//! HTTP/2 CONNECT streams (RFC 9113 §8.5) on one TLS 1.3 over TCP
//! connection per peer, ALPN `h2`. It exists to judge the QUIC transport
//! against the obvious alternative (docs/reference/tunnel-protocol.md,
//! "TCP+TLS baseline transport"); local sidecars always use QUIC.
//!
//! Inside a CONNECT stream the bytes are exactly those of a QUIC tunnel
//! stream: OPEN header, RESPONSE frame, payload. The stream adapters
//! ([`stream`]) implement the same [`crate::relay`] traits as quinn's
//! streams, so [`crate::handshake`], [`crate::inbound`] and
//! [`crate::forward`] run unchanged. END_STREAM is the FIN; RST_STREAM is
//! the reset, its error code mapped from the tunnel code ([`h2_reason`],
//! [`tunnel_code`]).
//!
//! Modules: [`tls`] (rustls configs with the SPIFFE verifiers), [`server`]
//! (the `tcp_listen` accept loop), [`client`] (the pooled connection to a
//! peer), [`stream`] (the stream adapters). HTTP/2 settings come from the
//! `quic` section ([`H2Settings`]) so both transports get the same windows.

pub mod client;
pub mod server;
pub mod stream;
pub mod tls;

use std::time::Duration;

use h2::Reason;
use tunnel_proto::code;

use crate::config::QuicConfig;

/// The ALPN protocol ID of the TCP+TLS listener (RFC 9113 §3.2).
pub const ALPN_H2: &[u8] = b"h2";

/// The `:authority` of every CONNECT request: a placeholder, since the
/// destination travels in the OPEN header inside the stream.
pub const AUTHORITY: &str = "tunnel.isthmus.invalid:443";

/// The RST_STREAM error code carrying tunnel code `0x3` (header timeout):
/// HTTP/2 has no code for a timeout, so a private one (RFC 9113 §7 lets a
/// receiver treat an unknown code as INTERNAL_ERROR).
pub const HEADER_TIMEOUT_REASON: u32 = 0x4953_0003;

/// Largest HTTP/2 window, bytes (RFC 9113 §6.9.1).
const MAX_WINDOW: u64 = (1 << 31) - 1;

/// Largest DATA frame we accept, bytes: 64 KiB (RFC 9113 §4.2 allows
/// 16 KiB..16 MiB); fewer frames per bulk write than the 16 KiB default.
pub const MAX_FRAME_BYTES: u32 = 64 * 1024;

/// The RST_STREAM error code for a tunnel stream code (RFC 9113 §7):
/// `0x0` cancelled → CANCEL, `0x1` peer reset → CONNECT_ERROR (as §8.5 asks
/// for a reset TCP connection), `0x2` protocol → PROTOCOL_ERROR, `0x3`
/// header timeout → [`HEADER_TIMEOUT_REASON`], `0x4` draining →
/// REFUSED_STREAM; any other code → CONNECT_ERROR.
pub fn h2_reason(tunnel: u32) -> Reason {
    match tunnel {
        code::CANCELLED => Reason::CANCEL,
        code::PROTOCOL => Reason::PROTOCOL_ERROR,
        code::HEADER_TIMEOUT => Reason::from(HEADER_TIMEOUT_REASON),
        code::DRAINING => Reason::REFUSED_STREAM,
        _ => Reason::CONNECT_ERROR,
    }
}

/// The tunnel stream code for a RST_STREAM error code: the inverse of
/// [`h2_reason`], with NO_ERROR read as `0x0` cancelled and every other code
/// (e.g. h2's own FLOW_CONTROL_ERROR) as `0x1` peer reset.
pub fn tunnel_code(reason: Reason) -> u32 {
    match reason {
        Reason::CANCEL | Reason::NO_ERROR => code::CANCELLED,
        Reason::PROTOCOL_ERROR => code::PROTOCOL,
        Reason::REFUSED_STREAM => code::DRAINING,
        r if u32::from(r) == HEADER_TIMEOUT_REASON => code::HEADER_TIMEOUT,
        _ => code::PEER_RESET,
    }
}

/// The tunnel code an h2 stream error stands for: a RST_STREAM's mapped
/// code, else `0x1` peer reset (connection lost, GOAWAY, I/O error).
pub(crate) fn error_code(e: &h2::Error) -> u32 {
    match e.reason() {
        Some(r) if e.is_reset() => tunnel_code(r),
        _ => code::PEER_RESET,
    }
}

/// `setsockopt(TCP_CONGESTION)` on `socket`: `name` (the `tcp_congestion`
/// key) becomes its congestion control. On a listening socket every
/// accepted connection inherits it.
///
/// # Errors
/// The kernel's: `ENOENT` for an algorithm it does not have (or cannot
/// load), `EPERM` for one not in `net.ipv4.tcp_allowed_congestion_control`
/// without `CAP_NET_ADMIN`.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
pub fn set_congestion<S>(socket: &S, name: &str) -> std::io::Result<()>
where
    S: std::os::fd::AsFd,
{
    socket2::SockRef::from(socket).set_tcp_congestion(name.as_bytes())
}

/// `TCP_CONGESTION` is not available on this platform.
///
/// # Errors
/// Always [`std::io::ErrorKind::Unsupported`].
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
pub fn set_congestion<S>(_socket: &S, _name: &str) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// HTTP/2 settings of both ends, taken from the `quic` section so that the
/// baseline gets the same flow-control budget as QUIC: fixed windows (no
/// adaptive window), 64 KiB frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Settings {
    /// SETTINGS_INITIAL_WINDOW_SIZE: `stream_receive_window_bytes`, capped
    /// at 2^31-1 bytes.
    pub stream_window: u32,
    /// Connection window: `receive_window_bytes`, capped at 2^31-1 bytes.
    pub connection_window: u32,
    /// SETTINGS_MAX_CONCURRENT_STREAMS: `max_concurrent_streams`, capped at
    /// 2^32-1.
    pub max_concurrent_streams: u32,
    /// Bytes h2 buffers per stream before `write_all` waits: the stream
    /// window, so one stream can fill the peer's window.
    pub send_buffer: usize,
    /// PING interval (`keep_alive_ms`); `None` = no PINGs.
    pub keep_alive: Option<Duration>,
    /// A PING unanswered this long closes the connection (`idle_timeout_ms`).
    pub idle_timeout: Duration,
}

impl H2Settings {
    /// The settings for `quic`.
    pub fn new(quic: &QuicConfig) -> Self {
        let window = |v: u64| u32::try_from(v.min(MAX_WINDOW)).unwrap_or(u32::MAX >> 1);
        let stream_window = window(quic.stream_receive_window);
        H2Settings {
            stream_window,
            connection_window: window(quic.receive_window),
            max_concurrent_streams: u32::try_from(quic.max_concurrent_streams).unwrap_or(u32::MAX),
            send_buffer: stream_window as usize,
            keep_alive: quic.keep_alive,
            idle_timeout: quic.idle_timeout,
        }
    }

    /// An h2 server builder with these settings.
    pub fn server(&self) -> h2::server::Builder {
        let mut b = h2::server::Builder::new();
        b.initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(MAX_FRAME_BYTES)
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_send_buffer_size(self.send_buffer);
        b
    }

    /// An h2 client builder with these settings.
    pub fn client(&self) -> h2::client::Builder {
        let mut b = h2::client::Builder::new();
        b.initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(MAX_FRAME_BYTES)
            .max_send_buffer_size(self.send_buffer)
            .enable_push(false);
        b
    }
}

/// Sends a PING every `keep_alive` and returns when one goes unanswered for
/// `idle_timeout` (or PINGs cannot be sent): the connection is dead. Never
/// returns without a keep-alive interval. Poll it alongside the connection.
pub(crate) async fn keepalive(ping_pong: Option<h2::PingPong>, s: H2Settings) {
    let (Some(mut pp), Some(every)) = (ping_pong, s.keep_alive) else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(every).await;
        match tokio::time::timeout(s.idle_timeout, pp.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_codes_round_trip_through_rst_stream() {
        for c in [
            code::CANCELLED,
            code::PEER_RESET,
            code::PROTOCOL,
            code::HEADER_TIMEOUT,
            code::DRAINING,
        ] {
            assert_eq!(tunnel_code(h2_reason(c)), c, "code {c}");
        }
        assert_eq!(h2_reason(code::PEER_RESET), Reason::CONNECT_ERROR);
        assert_eq!(h2_reason(99), Reason::CONNECT_ERROR);
        assert_eq!(tunnel_code(Reason::FLOW_CONTROL_ERROR), code::PEER_RESET);
        assert_eq!(tunnel_code(Reason::NO_ERROR), code::CANCELLED);
    }

    #[test]
    fn settings_follow_the_quic_section_capped_to_http2_limits() {
        let mut q = crate::config::Config::from_yaml(
            "cluster: a\nidentity: { spiffe_id: 'spiffe://a.mesh/gw', svid: { cert: s.pem, key: k.pem }, bundles: b.json }\nlisten: 127.0.0.1:1\nadmin: 127.0.0.1:2\n",
            std::path::Path::new("."),
        )
        .unwrap()
        .quic;
        let s = H2Settings::new(&q);
        assert_eq!(s.stream_window, 8_388_608);
        assert_eq!(s.connection_window, 67_108_864);
        assert_eq!(s.max_concurrent_streams, 4096);
        q.receive_window = 1 << 40;
        q.max_concurrent_streams = 1 << 40;
        let s = H2Settings::new(&q);
        assert_eq!(u64::from(s.connection_window), MAX_WINDOW);
        assert_eq!(s.max_concurrent_streams, u32::MAX);
    }
}
