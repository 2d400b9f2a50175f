//! Thin async drivers for the sans-IO [`Acceptor`] and [`Opener`] on the
//! halves of a tunnel stream, whatever carries it (a QUIC stream, an HTTP/2
//! CONNECT stream: anything implementing [`SpliceRead`] and
//! [`TunnelWrite`]): feed reads, FIN and resets in, arm one timer at
//! `poll_timeout()`, act on `poll_event()`. Time is tokio's, so paused-time
//! tests apply.

use std::time::{Duration, Instant};

use tunnel_proto::{
    Acceptor, AcceptorEvent, HandshakeError, OpenHeader, Opener, OpenerEvent, RejectReason,
};

use crate::relay::{ReadOutcome, SpliceRead, TunnelWrite, WriteError};

/// Largest read per call while handshaking, bytes (a header is at most
/// 4099 bytes).
const READ_CHUNK: usize = 8 * 1024;

/// Now, on tokio's clock, as a std `Instant` for the sans-IO cores.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Reads an OPEN header from `recv` within the acceptor's deadline.
/// Returns the header and payload bytes read past it; on failure the caller
/// resets the stream with [`HandshakeError::reset_code`].
///
/// # Errors
/// [`HandshakeError`] from the acceptor: timeout, early FIN, reset,
/// malformed header.
pub async fn read_header<R: SpliceRead>(
    recv: &mut R,
    acceptor: &mut Acceptor,
) -> Result<(OpenHeader, Vec<u8>), HandshakeError> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match acceptor.poll_event() {
            Some(AcceptorEvent::Header { header, early_data }) => return Ok((header, early_data)),
            Some(AcceptorEvent::Failed(e)) => return Err(e),
            None => {}
        }
        tokio::select! {
            r = recv.read(&mut buf) => match r {
                ReadOutcome::Data(n) => acceptor.handle_recv(&buf[..n], now()),
                ReadOutcome::Fin => acceptor.handle_fin(now()),
                ReadOutcome::Reset(code) => acceptor.handle_reset(code, now()),
            },
            () = sleep_until(acceptor.poll_timeout()) => acceptor.handle_timeout(now()),
        }
    }
}

/// Writes the acceptor's decision (`None` = accept) on `send`; after a
/// reject, finishes the stream and stops reading it.
///
/// # Errors
/// The stream was stopped or the connection is gone.
pub async fn respond<W: TunnelWrite, R: SpliceRead>(
    send: &mut W,
    recv: &mut R,
    acceptor: &mut Acceptor,
    reject: Option<(RejectReason, &str)>,
) -> Result<(), WriteError> {
    match reject {
        None => acceptor.accept(),
        Some((reason, detail)) => acceptor.reject(reason, detail),
    }
    if let Some(bytes) = acceptor.poll_transmit() {
        send.write_all(&bytes).await?;
    }
    if reject.is_some() {
        send.finish_now();
        recv.stop(tunnel_proto::code::CANCELLED);
    }
    Ok(())
}

/// Resets both halves of a stream with `code`.
pub fn abort<W: TunnelWrite, R: SpliceRead>(send: &mut W, recv: &mut R, code: u32) {
    send.reset(code);
    recv.stop(code);
}

/// Opens a tunnel on an already opened stream: writes `header` and waits up
/// to `timeout` for the response. On `Failed` the caller resets the stream.
pub async fn open<W: TunnelWrite, R: SpliceRead>(
    send: &mut W,
    recv: &mut R,
    header: &OpenHeader,
    timeout: Duration,
) -> OpenerEvent {
    let mut opener = match Opener::new(header, now(), timeout) {
        Ok(o) => o,
        Err(e) => return OpenerEvent::Failed(HandshakeError::Header(e)),
    };
    if let Some(bytes) = opener.poll_transmit() {
        let write = tokio::time::timeout(timeout, send.write_all(&bytes)).await;
        match write {
            Ok(Ok(())) => {}
            Ok(Err(WriteError::Stopped(code))) => {
                return OpenerEvent::Failed(HandshakeError::Reset(code))
            }
            Ok(Err(WriteError::Closed)) => return OpenerEvent::Failed(HandshakeError::Closed),
            Err(_) => return OpenerEvent::Failed(HandshakeError::TimedOut),
        }
    }
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        if let Some(ev) = opener.poll_event() {
            return ev;
        }
        tokio::select! {
            r = recv.read(&mut buf) => match r {
                ReadOutcome::Data(n) => opener.handle_recv(&buf[..n], now()),
                ReadOutcome::Fin => opener.handle_fin(now()),
                ReadOutcome::Reset(code) => opener.handle_reset(code, now()),
            },
            () = sleep_until(opener.poll_timeout()) => opener.handle_timeout(now()),
        }
    }
}

/// How long the opener waits for a peer gateway's response: the peer may
/// try several endpoints, each within `connect`.
pub fn open_timeout(header: Duration, connect: Duration) -> Duration {
    header.saturating_add(connect.saturating_mul(2))
}
