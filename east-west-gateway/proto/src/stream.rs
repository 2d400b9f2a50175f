//! The per-stream handshake state machines: [`Opener`] writes the OPEN
//! header and waits for the RESPONSE; [`Acceptor`] reads the header, lets
//! the application decide, and writes the RESPONSE.
//!
//! Both are sans-IO: the driver feeds what it read (`handle_recv`, in any
//! split), the FIN, a reset, and timer expiries, each with `now`; it writes
//! what `poll_transmit` returns, arms a timer for `poll_timeout`, and acts on
//! `poll_event`. A deadline that has passed counts even if the driver calls
//! `handle_recv` before `handle_timeout`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::error::{HandshakeError, HeaderError};
use crate::header::OpenHeader;
use crate::response::{RejectReason, Response};

/// The opener's side of a stream handshake.
#[derive(Debug)]
pub struct Opener {
    transmit: Option<Vec<u8>>,
    /// Bytes of the response received so far.
    buf: Vec<u8>,
    deadline: Option<Instant>,
    finished: bool,
    events: VecDeque<OpenerEvent>,
}

/// What the opener's handshake produced. Exactly one is emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenerEvent {
    /// The acceptor accepted; `early_data` is payload that came in the same
    /// reads as the response. The driver reads the rest from the stream.
    Accepted {
        /// Payload bytes already read after the response.
        early_data: Vec<u8>,
    },
    /// The acceptor refused; the driver must not send payload and should
    /// finish the stream. Bytes after the response are discarded.
    Rejected {
        /// Why.
        reason: RejectReason,
        /// The acceptor's detail.
        detail: String,
    },
    /// The handshake failed; reset the stream with
    /// [`HandshakeError::reset_code`].
    Failed(HandshakeError),
}

/// The acceptor's side of a stream handshake.
#[derive(Debug)]
pub struct Acceptor {
    state: AcceptorState,
    /// Bytes of the header received so far.
    buf: Vec<u8>,
    deadline: Option<Instant>,
    transmit: Option<Vec<u8>>,
    events: VecDeque<AcceptorEvent>,
}

/// What the acceptor's handshake produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptorEvent {
    /// The whole header arrived: call [`Acceptor::accept`] or
    /// [`Acceptor::reject`]. From now on the stream's payload, FIN and
    /// reset belong to the driver (a reset before the decision is still
    /// reported as `Failed`).
    Header {
        /// The decoded header.
        header: OpenHeader,
        /// Payload bytes already read after the header.
        early_data: Vec<u8>,
    },
    /// The handshake failed; reset the stream with
    /// [`HandshakeError::reset_code`].
    Failed(HandshakeError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptorState {
    ReadingHeader,
    Deciding,
    Done,
}

impl Opener {
    /// Starts a handshake for `header`; the response must arrive within
    /// `timeout` of `now`.
    ///
    /// # Errors
    /// The header is invalid (see [`OpenHeader::encode`]).
    pub fn new(
        header: &OpenHeader,
        now: Instant,
        timeout: Duration,
    ) -> Result<Opener, HeaderError> {
        Ok(Opener {
            transmit: Some(header.encode()?),
            buf: Vec::new(),
            deadline: now.checked_add(timeout),
            finished: false,
            events: VecDeque::new(),
        })
    }

    /// The header bytes to write, exactly once.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.take()
    }

    /// Bytes read from the stream, split anyhow. Ignored once finished.
    pub fn handle_recv(&mut self, data: &[u8], now: Instant) {
        if self.finished || self.expire(now) {
            return;
        }
        self.buf.extend_from_slice(data);
        match Response::decode(&self.buf) {
            Ok(None) => {}
            Ok(Some((Response::Accept, n))) => {
                let early_data = self.buf.split_off(n);
                self.finish(OpenerEvent::Accepted { early_data });
            }
            Ok(Some((Response::Reject { reason, detail }, _))) => {
                self.finish(OpenerEvent::Rejected { reason, detail });
            }
            Err(e) => self.finish(OpenerEvent::Failed(e.into())),
        }
    }

    /// The acceptor finished its side before a whole response.
    pub fn handle_fin(&mut self, now: Instant) {
        if !self.finished && !self.expire(now) {
            self.finish(OpenerEvent::Failed(HandshakeError::Closed));
        }
    }

    /// The acceptor reset the stream with application code `code`.
    pub fn handle_reset(&mut self, code: u64, now: Instant) {
        if !self.finished && !self.expire(now) {
            self.finish(OpenerEvent::Failed(HandshakeError::Reset(code)));
        }
    }

    /// The timer armed for [`Opener::poll_timeout`] fired.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.finished {
            self.expire(now);
        }
    }

    /// When to call [`Opener::handle_timeout`]; `None` once finished.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline.filter(|_| !self.finished)
    }

    /// The handshake's outcome, once.
    pub fn poll_event(&mut self) -> Option<OpenerEvent> {
        self.events.pop_front()
    }

    /// Whether the handshake has an outcome (polled or not).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Fails with `TimedOut` if the deadline passed; returns whether it did.
    fn expire(&mut self, now: Instant) -> bool {
        let expired = self.deadline.is_some_and(|d| now >= d);
        if expired {
            self.finish(OpenerEvent::Failed(HandshakeError::TimedOut));
        }
        expired
    }

    fn finish(&mut self, event: OpenerEvent) {
        self.finished = true;
        self.transmit = None;
        self.buf = Vec::new();
        self.events.push_back(event);
    }
}

impl Acceptor {
    /// Starts reading a header, which must be complete within `timeout` of
    /// `now` (the slowloris guard).
    pub fn new(now: Instant, timeout: Duration) -> Acceptor {
        Acceptor {
            state: AcceptorState::ReadingHeader,
            buf: Vec::new(),
            deadline: now.checked_add(timeout),
            transmit: None,
            events: VecDeque::new(),
        }
    }

    /// Bytes read from the stream, split anyhow. Ignored after the header
    /// (payload then belongs to the driver).
    pub fn handle_recv(&mut self, data: &[u8], now: Instant) {
        if self.state != AcceptorState::ReadingHeader || self.expire(now) {
            return;
        }
        self.buf.extend_from_slice(data);
        match OpenHeader::decode(&self.buf) {
            Ok(None) => {}
            Ok(Some((header, n))) => {
                let early_data = self.buf.split_off(n);
                self.buf = Vec::new();
                self.state = AcceptorState::Deciding;
                self.events
                    .push_back(AcceptorEvent::Header { header, early_data });
            }
            Err(e) => self.fail(e.into()),
        }
    }

    /// The opener finished its side. Before the header is complete this
    /// fails the handshake; after it, it is a half-close for the driver.
    pub fn handle_fin(&mut self, now: Instant) {
        if self.state == AcceptorState::ReadingHeader && !self.expire(now) {
            self.fail(HandshakeError::Closed);
        }
    }

    /// The opener reset the stream with application code `code`; fails the
    /// handshake unless it was already decided.
    pub fn handle_reset(&mut self, code: u64, now: Instant) {
        if self.state != AcceptorState::Done && !self.expire(now) {
            self.fail(HandshakeError::Reset(code));
        }
    }

    /// The timer armed for [`Acceptor::poll_timeout`] fired.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
    }

    /// When to call [`Acceptor::handle_timeout`]: the header deadline while
    /// the header is incomplete, `None` after (the decision is the
    /// application's, with its own deadlines).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
            .filter(|_| self.state == AcceptorState::ReadingHeader)
    }

    /// The next event: `Header` once, or `Failed`.
    pub fn poll_event(&mut self) -> Option<AcceptorEvent> {
        self.events.pop_front()
    }

    /// Accepts the stream after the `Header` event; ignored otherwise.
    /// [`Acceptor::poll_transmit`] then gives the RESPONSE to write before
    /// any payload.
    pub fn accept(&mut self) {
        if self.state == AcceptorState::Deciding {
            self.decide(Response::Accept);
        }
    }

    /// Rejects the stream, after the `Header` event or even before it (e.g.
    /// when overloaded); ignored once decided or failed. After writing
    /// [`Acceptor::poll_transmit`], the driver finishes its side and stops
    /// reading. `detail` is cut to 255 bytes.
    pub fn reject(&mut self, reason: RejectReason, detail: &str) {
        if self.state != AcceptorState::Done {
            self.decide(Response::Reject {
                reason,
                detail: detail.to_owned(),
            });
        }
    }

    /// The RESPONSE bytes to write, once, after `accept` or `reject`.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.take()
    }

    /// Whether the handshake is over: decided or failed.
    pub fn is_finished(&self) -> bool {
        self.state == AcceptorState::Done
    }

    fn decide(&mut self, response: Response) {
        self.transmit = Some(response.encode());
        self.state = AcceptorState::Done;
        self.buf = Vec::new();
    }

    /// Fails with `TimedOut` if the header deadline passed while it was
    /// still incomplete; returns whether it did.
    fn expire(&mut self, now: Instant) -> bool {
        let expired =
            self.state == AcceptorState::ReadingHeader && self.deadline.is_some_and(|d| now >= d);
        if expired {
            self.fail(HandshakeError::TimedOut);
        }
        expired
    }

    fn fail(&mut self, error: HandshakeError) {
        self.state = AcceptorState::Done;
        self.buf = Vec::new();
        self.events.push_back(AcceptorEvent::Failed(error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Field;
    use trust_bundle::SpiffeId;

    fn header() -> OpenHeader {
        OpenHeader {
            target_cluster: "b".into(),
            namespace: "ns".into(),
            service: "svc".into(),
            port: 80,
            expected_identity: SpiffeId::parse("spiffe://b.mesh/ns/ns/sa/svc").unwrap(),
            traceparent: None,
            tracestate: None,
        }
    }

    #[test]
    fn opener_refuses_an_invalid_header_and_sends_a_valid_one_once() {
        let now = Instant::now();
        let bad = OpenHeader {
            service: "Svc".into(),
            ..header()
        };
        assert!(matches!(
            Opener::new(&bad, now, Duration::from_secs(1)),
            Err(HeaderError::LabelByte {
                field: Field::Service,
                ..
            })
        ));
        let mut o = Opener::new(&header(), now, Duration::from_secs(1)).unwrap();
        assert_eq!(o.poll_transmit(), Some(header().encode().unwrap()));
        assert_eq!(o.poll_transmit(), None);
        assert!(!o.is_finished());
        assert_eq!(o.poll_event(), None);
    }

    #[test]
    fn a_timeout_past_the_end_of_time_means_no_deadline() {
        let now = Instant::now();
        let o = Opener::new(&header(), now, Duration::MAX).unwrap();
        assert_eq!(o.poll_timeout(), None);
        let mut a = Acceptor::new(now, Duration::MAX);
        assert_eq!(a.poll_timeout(), None);
        a.handle_timeout(now + Duration::from_secs(86_400));
        assert_eq!(a.poll_event(), None);
    }

    #[test]
    fn outcomes_are_reported_once_and_later_input_is_ignored() {
        let now = Instant::now();
        let mut o = Opener::new(&header(), now, Duration::from_secs(1)).unwrap();
        o.handle_recv(&[1, 0, 0, b'x'], now);
        o.handle_fin(now);
        o.handle_reset(1, now);
        o.handle_timeout(now + Duration::from_secs(2));
        o.handle_recv(b"more", now);
        assert_eq!(
            o.poll_event(),
            Some(OpenerEvent::Accepted {
                early_data: b"x".to_vec()
            })
        );
        assert_eq!(o.poll_event(), None);

        let mut a = Acceptor::new(now, Duration::from_secs(1));
        a.handle_recv(&[9], now);
        a.handle_fin(now);
        a.handle_timeout(now + Duration::from_secs(2));
        a.reject(RejectReason::Overloaded, "late");
        assert_eq!(
            a.poll_event(),
            Some(AcceptorEvent::Failed(HandshakeError::Header(
                HeaderError::UnsupportedVersion { version: 9 }
            )))
        );
        assert_eq!(a.poll_event(), None);
        assert_eq!(a.poll_transmit(), None);
        assert!(a.is_finished());
    }
}
