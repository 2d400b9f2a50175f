//! Thin async drivers for the sans-IO [`Acceptor`] and [`Opener`] on quinn
//! streams: feed reads, FIN and resets in, arm one timer at
//! `poll_timeout()`, act on `poll_event()`. Time is tokio's, so paused-time
//! tests apply.

use std::time::{Duration, Instant};

use quinn::{RecvStream, SendStream, VarInt};
use tunnel_proto::{
    Acceptor, AcceptorEvent, HandshakeError, OpenHeader, Opener, OpenerEvent, RejectReason,
};

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
pub async fn read_header(
    recv: &mut RecvStream,
    acceptor: &mut Acceptor,
) -> Result<(OpenHeader, Vec<u8>), HandshakeError> {
    loop {
        match acceptor.poll_event() {
            Some(AcceptorEvent::Header { header, early_data }) => return Ok((header, early_data)),
            Some(AcceptorEvent::Failed(e)) => return Err(e),
            None => {}
        }
        tokio::select! {
            r = recv.read_chunk(READ_CHUNK, true) => match r {
                Ok(Some(chunk)) => acceptor.handle_recv(&chunk.bytes, now()),
                Ok(None) => acceptor.handle_fin(now()),
                Err(quinn::ReadError::Reset(code)) => acceptor.handle_reset(code.into_inner(), now()),
                Err(_) => acceptor.handle_reset(u64::from(tunnel_proto::code::PEER_RESET), now()),
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
pub async fn respond(
    send: &mut SendStream,
    recv: &mut RecvStream,
    acceptor: &mut Acceptor,
    reject: Option<(RejectReason, &str)>,
) -> Result<(), quinn::WriteError> {
    match reject {
        None => acceptor.accept(),
        Some((reason, detail)) => acceptor.reject(reason, detail),
    }
    if let Some(bytes) = acceptor.poll_transmit() {
        send.write_all(&bytes).await?;
    }
    if reject.is_some() {
        let _ = send.finish();
        let _ = recv.stop(VarInt::from_u32(tunnel_proto::code::CANCELLED));
    }
    Ok(())
}

/// Resets both halves of a stream with `code`.
pub fn abort(send: &mut SendStream, recv: &mut RecvStream, code: u32) {
    let _ = send.reset(VarInt::from_u32(code));
    let _ = recv.stop(VarInt::from_u32(code));
}

/// Opens a tunnel on an already opened stream: writes `header` and waits up
/// to `timeout` for the response. On `Failed` the caller resets the stream.
pub async fn open(
    send: &mut SendStream,
    recv: &mut RecvStream,
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
            Ok(Err(quinn::WriteError::Stopped(code))) => {
                return OpenerEvent::Failed(HandshakeError::Reset(code.into_inner()))
            }
            Ok(Err(_)) => return OpenerEvent::Failed(HandshakeError::Closed),
            Err(_) => return OpenerEvent::Failed(HandshakeError::TimedOut),
        }
    }
    loop {
        if let Some(ev) = opener.poll_event() {
            return ev;
        }
        tokio::select! {
            r = recv.read_chunk(READ_CHUNK, true) => match r {
                Ok(Some(chunk)) => opener.handle_recv(&chunk.bytes, now()),
                Ok(None) => opener.handle_fin(now()),
                Err(quinn::ReadError::Reset(code)) => opener.handle_reset(code.into_inner(), now()),
                Err(_) => opener.handle_reset(u64::from(tunnel_proto::code::PEER_RESET), now()),
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
