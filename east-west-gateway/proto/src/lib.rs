//! The sans-IO core of the `isthmus-tunnel/1` protocol
//! (docs/reference/tunnel-protocol.md is the contract).
//!
//! # What this crate owns
//!
//! - The wire format: the [`OpenHeader`] an opener writes first on each
//!   bidirectional QUIC stream, and the [`Response`] (accept, or reject with a
//!   [`RejectReason`]) the acceptor writes back before any payload. Decoders
//!   are incremental (`Ok(None)` = need more bytes), bounded
//!   ([`MAX_HEADER_LEN`]), never panic, and refuse a bad version or an
//!   oversized length as soon as those bytes arrive.
//! - The per-stream handshakes: [`Opener`] and [`Acceptor`], with their
//!   deadlines (the acceptor's is the slowloris guard).
//! - FIN/RESET propagation between two spliced streams: [`Splice`].
//! - The application codes for RESET_STREAM / STOP_SENDING and QUIC
//!   connection close: [`code`].
//!
//! # What it does not
//!
//! No I/O, no tokio, no sockets, no clock: time comes in as [`Instant`]
//! arguments. QUIC and TLS setup (ALPN [`ALPN`], mutual TLS with SVIDs),
//! routing decisions (which cluster, which gateway, whether a service is
//! exported) and copying payload bytes belong to the drivers in the gateway
//! and the sidecar. Identity checks on the final hop use
//! [`OpenHeader::expected_identity`], but are performed by the TLS layer.
//!
//! # How to drive it
//!
//! Opener (sidecar or gateway, after opening a bidirectional stream):
//!
//! 1. `Opener::new(&header, now, timeout)`, write `poll_transmit()`.
//! 2. Feed every read to `handle_recv(data, now)`, the FIN to `handle_fin`,
//!    a RESET_STREAM to `handle_reset`; arm one timer at `poll_timeout()` and
//!    call `handle_timeout(now)` when it fires.
//! 3. On `poll_event()`: `Accepted { early_data }` → deliver `early_data`,
//!    then splice; `Rejected` → finish the stream, send no payload, report
//!    the reason; `Failed(e)` → reset the stream with `e.reset_code()`.
//!
//! Acceptor (gateway, for each accepted stream): `Acceptor::new(now,
//! timeout)`, feed reads the same way until `AcceptorEvent::Header`, decide,
//! call `accept()` or `reject(reason, detail)`, write `poll_transmit()`; after
//! a reject, finish the stream. After an accept, both sides splice the
//! stream to the next hop with a [`Splice`], feeding it FINs, resets and
//! write errors and carrying out its [`SpliceCommand`]s.
//!
//! [`Instant`]: std::time::Instant

mod error;
mod header;
mod response;
mod splice;
mod stream;

pub use error::{Field, HandshakeError, HeaderError, ResponseError};
pub use header::{
    OpenHeader, EXT_TRACEPARENT, EXT_TRACESTATE, MAX_LABEL_LEN, MAX_TRACESTATE_LEN, PREFIX_LEN,
    TRACEPARENT_LEN,
};
pub use response::{
    RejectReason, Response, MAX_DETAIL_LEN, RESPONSE_PREFIX_LEN, STATUS_ACCEPT, STATUS_OTHER,
};
pub use splice::{Side, Splice, SpliceCommand};
pub use stream::{Acceptor, AcceptorEvent, Opener, OpenerEvent};

/// The ALPN protocol ID of tunnel connections (RFC 7301).
pub const ALPN: &[u8] = b"isthmus-tunnel/1";
/// The protocol version, the first byte of every OPEN header and RESPONSE.
pub const VERSION: u8 = 1;
/// The largest OPEN header body, in bytes (the u16 length after the version).
pub const MAX_HEADER_LEN: usize = 4096;

/// Application error codes: RESET_STREAM / STOP_SENDING codes, and QUIC
/// connection close codes (docs/reference/tunnel-protocol.md).
pub mod code {
    /// Stream code `0x0`: the stream is no longer wanted.
    pub const CANCELLED: u32 = 0;
    /// Stream code `0x1`: the spliced stream on the other side was reset or
    /// failed.
    pub const PEER_RESET: u32 = 1;
    /// Stream code `0x2`: the peer broke the protocol (malformed frame, early
    /// FIN).
    pub const PROTOCOL: u32 = 2;
    /// Stream code `0x3`: the handshake did not complete in time.
    pub const HEADER_TIMEOUT: u32 = 3;
    /// Stream code `0x4`: the endpoint is draining.
    pub const DRAINING: u32 = 4;
    /// Connection close code `0x0`: normal close.
    pub const CLOSE_NORMAL: u32 = 0;
    /// Connection close code `0x1`: the endpoint is draining.
    pub const CLOSE_DRAINING: u32 = 1;
}
