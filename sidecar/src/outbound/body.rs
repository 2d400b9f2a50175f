//! Bodies of the outbound HTTP path: the replay buffer that lets a request
//! be sent again, and the response body that holds the circuit-breaker
//! request slot until it ends.
//!
//! Only bodies known to be small are buffered: one that is already at its
//! end (GET, HEAD, ...) or whose exact length (`content-length`, or an
//! HTTP/2 DATA frame with END_STREAM) is at most
//! [`REPLAY_BUFFER_BYTES`]. A body of unknown length streams through, so a
//! streaming gRPC call is never held back waiting for its end; such a
//! request is replayable only until it is sent.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};

use crate::errors::ProxyError;
use crate::http_util::Body;
use crate::resilience::circuit::Guard;
use crate::resilience::REPLAY_BUFFER_BYTES;

/// A request body, kept for replay or streamed once.
#[derive(Debug)]
pub enum RequestBody {
    /// The whole body and its trailers, sent again on every attempt.
    Buffered {
        /// The data.
        data: Bytes,
        /// The trailers, if any.
        trailers: Option<HeaderMap>,
    },
    /// Streamed through; `None` once it was handed to an attempt.
    Streaming(Option<Body>),
}

/// A complete body: the data (if not empty), then the trailers.
#[derive(Debug)]
pub struct Replay {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

/// A response body that gives back its request slot when it ends or is
/// dropped.
#[derive(Debug)]
pub struct Guarded {
    inner: Body,
    guard: Option<Guard>,
}

impl RequestBody {
    /// Buffers `body` if it is known to fit [`REPLAY_BUFFER_BYTES`].
    ///
    /// # Errors
    /// [`ProxyError::RequestBody`] when reading the small body fails.
    pub async fn prepare(body: Body) -> Result<RequestBody, ProxyError> {
        let fits = body.is_end_stream()
            || body
                .size_hint()
                .exact()
                .is_some_and(|n| n <= REPLAY_BUFFER_BYTES as u64);
        if !fits {
            return Ok(RequestBody::Streaming(Some(body)));
        }
        let collected = body.collect().await.map_err(ProxyError::RequestBody)?;
        let trailers = collected.trailers().cloned();
        Ok(RequestBody::Buffered {
            data: collected.to_bytes(),
            trailers,
        })
    }

    /// Whether every attempt can get the whole body.
    pub fn is_replayable(&self) -> bool {
        matches!(self, RequestBody::Buffered { .. })
    }

    /// The body for the next attempt; `None` if a streamed body was
    /// already taken (and not given back).
    pub fn take(&mut self) -> Option<Body> {
        match self {
            RequestBody::Buffered { data, trailers } => Some(
                Replay {
                    data: (!data.is_empty()).then(|| data.clone()),
                    trailers: trailers.clone(),
                }
                .boxed(),
            ),
            RequestBody::Streaming(b) => b.take(),
        }
    }

    /// Gives back a streamed body that was not sent.
    pub fn give_back(&mut self, body: Body) {
        if let RequestBody::Streaming(slot @ None) = self {
            *slot = Some(body);
        }
    }
}

impl Guarded {
    /// `inner`, holding `guard` until it ends.
    pub fn new(inner: Body, guard: Guard) -> Self {
        let guard = (!inner.is_end_stream()).then_some(guard);
        Guarded { inner, guard }
    }
}

impl hyper::body::Body for Replay {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

impl hyper::body::Body for Guarded {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) || self.inner.is_end_stream() {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_util::full;

    #[tokio::test]
    async fn small_known_bodies_are_replayed_whole_and_unknown_ones_stream_once() {
        let mut b = RequestBody::prepare(full("hello")).await.unwrap();
        assert!(b.is_replayable());
        for _ in 0..2 {
            let body = b.take().unwrap();
            assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        }

        let big = full(vec![0u8; REPLAY_BUFFER_BYTES + 1]);
        let mut b = RequestBody::prepare(big).await.unwrap();
        assert!(!b.is_replayable());
        let body = b.take().unwrap();
        assert!(b.take().is_none(), "a streamed body goes out once");
        b.give_back(body);
        assert!(b.take().is_some(), "unless it came back unsent");

        let empty = RequestBody::prepare(full("")).await.unwrap();
        assert!(empty.is_replayable());
    }
}
