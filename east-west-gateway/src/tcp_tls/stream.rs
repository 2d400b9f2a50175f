//! The halves of a tunnel stream carried by an HTTP/2 CONNECT stream,
//! implementing the [`crate::relay`] traits:
//!
//! - [`H2Write`]: DATA within the peer's flow-control window (the write
//!   waits for capacity), END_STREAM for a FIN, RST_STREAM for a reset.
//! - [`H2Read`]: DATA until END_STREAM (a FIN) or RST_STREAM (a reset with
//!   the mapped code); window credit is returned as bytes are consumed. On
//!   the client, it first waits for the CONNECT response: a 2xx opens the
//!   stream, anything else is a protocol error.
//!
//! HTTP/2 has no STOP_SENDING: [`H2Read`]'s `stop` drops the receive half
//! (h2 then discards what arrives); when every handle of a stream not yet
//! closed is gone, h2 resets it with CANCEL after the frames already queued,
//! so a reject's RESPONSE frame still goes out first.

use std::future::poll_fn;
use std::task::Poll;

use bytes::{Buf, Bytes};
use tracing::debug;
use tunnel_proto::code;

use crate::relay::{ReadOutcome, SpliceRead, SpliceWrite, TunnelWrite, WriteError};

use super::{error_code, h2_reason};

/// The send half: an h2 [`h2::SendStream`] (a CONNECT request's body on the
/// client, the 2xx response's body on the server).
#[derive(Debug)]
pub struct H2Write {
    send: h2::SendStream<Bytes>,
}

/// The receive half.
#[derive(Debug)]
pub struct H2Read {
    state: ReadState,
    /// Received, not yet consumed (its window credit not yet returned).
    buf: Bytes,
}

#[derive(Debug)]
enum ReadState {
    /// Client: the CONNECT response has not arrived yet.
    Response(h2::client::ResponseFuture),
    /// The peer's DATA.
    Body(h2::RecvStream),
    /// Stopped, or the response was not a 2xx.
    Done,
}

impl H2Write {
    /// Wraps a send stream.
    pub fn new(send: h2::SendStream<Bytes>) -> Self {
        H2Write { send }
    }

    /// Waits until h2 assigns send capacity (flow control and the send
    /// buffer limit); returns how many bytes may be sent now.
    async fn capacity(&mut self, want: usize) -> Result<usize, WriteError> {
        self.send.reserve_capacity(want);
        poll_fn(|cx| loop {
            let have = self.send.capacity();
            if have > 0 {
                return Poll::Ready(Ok(have));
            }
            match self.send.poll_capacity(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(write_error(&e))),
                // No longer sendable: finished by us or reset by the peer.
                Poll::Ready(None) => {
                    return Poll::Ready(match self.send.poll_reset(cx) {
                        Poll::Ready(Ok(r)) => {
                            Err(WriteError::Stopped(u64::from(super::tunnel_code(r))))
                        }
                        _ => Err(WriteError::Closed),
                    })
                }
            }
        })
        .await
    }
}

impl H2Read {
    /// The request body of an accepted CONNECT (server side).
    pub fn body(recv: h2::RecvStream) -> Self {
        H2Read {
            state: ReadState::Body(recv),
            buf: Bytes::new(),
        }
    }

    /// The response to a CONNECT we sent (client side).
    pub fn response(response: h2::client::ResponseFuture) -> Self {
        H2Read {
            state: ReadState::Response(response),
            buf: Bytes::new(),
        }
    }
}

fn write_error(e: &h2::Error) -> WriteError {
    if e.is_reset() {
        WriteError::Stopped(u64::from(error_code(e)))
    } else {
        WriteError::Closed
    }
}

impl SpliceWrite for H2Write {
    async fn write_all(&mut self, mut buf: &[u8]) -> Result<(), WriteError> {
        while !buf.is_empty() {
            let n = self.capacity(buf.len()).await?.min(buf.len());
            self.send
                .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                .map_err(|e| write_error(&e))?;
            buf = &buf[n..];
        }
        Ok(())
    }

    async fn finish(&mut self) {
        self.finish_now();
    }

    fn reset(&mut self, code: u32) {
        self.send.send_reset(h2_reason(code));
    }
}

impl TunnelWrite for H2Write {
    fn finish_now(&mut self) {
        // Fails only if the stream is already finished or reset.
        let _ = self.send.send_data(Bytes::new(), true);
    }
}

impl SpliceRead for H2Read {
    async fn read(&mut self, out: &mut [u8]) -> ReadOutcome {
        loop {
            if !self.buf.is_empty() {
                let n = out.len().min(self.buf.len());
                out[..n].copy_from_slice(&self.buf[..n]);
                self.buf.advance(n);
                if let ReadState::Body(recv) = &mut self.state {
                    // Fails only if the stream is gone; nothing to return.
                    let _ = recv.flow_control().release_capacity(n);
                }
                return ReadOutcome::Data(n);
            }
            match &mut self.state {
                ReadState::Response(response) => match response.await {
                    Ok(r) if r.status().is_success() => {
                        self.state = ReadState::Body(r.into_body());
                    }
                    Ok(r) => {
                        debug!(status = %r.status(), "CONNECT refused");
                        self.state = ReadState::Done;
                        return ReadOutcome::Reset(u64::from(code::PROTOCOL));
                    }
                    Err(e) => {
                        self.state = ReadState::Done;
                        return ReadOutcome::Reset(u64::from(error_code(&e)));
                    }
                },
                ReadState::Body(recv) => match recv.data().await {
                    None => return ReadOutcome::Fin,
                    Some(Ok(data)) => self.buf = data,
                    Some(Err(e)) => return ReadOutcome::Reset(u64::from(error_code(&e))),
                },
                ReadState::Done => return ReadOutcome::Fin,
            }
        }
    }

    fn stop(&mut self, _code: u32) {
        // See the module doc: dropping the receive half is all HTTP/2 has.
        self.state = ReadState::Done;
        self.buf = Bytes::new();
    }
}
