//! An [`Opener`] and an [`Acceptor`] wired through in-memory byte queues,
//! on a virtual clock (one base `Instant` plus `Duration`s; nothing sleeps).

use std::time::{Duration, Instant};

use trust_bundle::SpiffeId;
use tunnel_proto::{
    code, Acceptor, AcceptorEvent, HandshakeError, HeaderError, OpenHeader, Opener, OpenerEvent,
    RejectReason, Response, Side, Splice, SpliceCommand,
};

const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

fn header() -> OpenHeader {
    OpenHeader {
        target_cluster: "cluster-b".into(),
        namespace: "billing".into(),
        service: "api".into(),
        port: 8443,
        expected_identity: SpiffeId::parse("spiffe://cluster-b.mesh/ns/billing/sa/api").unwrap(),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        tracestate: None,
    }
}

/// Both ends of one stream and the virtual clock.
struct Pair {
    base: Instant,
    opener: Opener,
    acceptor: Acceptor,
}

impl Pair {
    fn new() -> Pair {
        let base = Instant::now();
        Pair {
            base,
            opener: Opener::new(&header(), base, RESPONSE_TIMEOUT).unwrap(),
            acceptor: Acceptor::new(base, HEADER_TIMEOUT),
        }
    }

    fn at(&self, millis: u64) -> Instant {
        self.base + Duration::from_millis(millis)
    }

    /// The opener's header bytes (asserting they come exactly once).
    fn header_bytes(&mut self) -> Vec<u8> {
        let bytes = self.opener.poll_transmit().expect("header to send");
        assert_eq!(self.opener.poll_transmit(), None);
        bytes
    }
}

/// Feeds `bytes` in chunks of `chunk` bytes.
fn feed(bytes: &[u8], chunk: usize, mut f: impl FnMut(&[u8])) {
    for part in bytes.chunks(chunk) {
        f(part);
    }
}

#[test]
fn accept_with_early_data_both_ways_for_every_chunk_size() {
    let wire_len = Pair::new().header_bytes().len() + 14;
    for chunk in 1..=wire_len {
        let mut p = Pair::new();
        // The opener pipelines its first payload (a TLS ClientHello) after the header.
        let mut up = p.header_bytes();
        up.extend_from_slice(b"client-hello!!");
        assert_eq!(up.len(), wire_len);
        // The acceptor's driver: feed the core until the header is out, then
        // the bytes are payload for the application.
        let (mut got, mut app) = (None, Vec::new());
        feed(&up, chunk, |c| {
            if got.is_some() {
                app.extend_from_slice(c);
                return;
            }
            p.acceptor.handle_recv(c, p.at(100));
            if let Some(AcceptorEvent::Header { header, early_data }) = p.acceptor.poll_event() {
                got = Some(header);
                app.extend_from_slice(&early_data);
            }
        });
        assert_eq!(got, Some(header()), "chunk {chunk}");
        assert_eq!(app, b"client-hello!!", "chunk {chunk}");
        assert_eq!(p.acceptor.poll_timeout(), None);
        assert_eq!(p.acceptor.poll_transmit(), None);

        p.acceptor.accept();
        let mut down = p.acceptor.poll_transmit().expect("response");
        assert_eq!(p.acceptor.poll_transmit(), None);
        assert!(p.acceptor.is_finished());
        down.extend_from_slice(b"server-hello");
        let (mut accepted, mut app) = (false, Vec::new());
        feed(&down, chunk, |c| {
            if accepted {
                app.extend_from_slice(c);
                return;
            }
            p.opener.handle_recv(c, p.at(200));
            match p.opener.poll_event() {
                Some(OpenerEvent::Accepted { early_data }) => {
                    accepted = true;
                    app.extend_from_slice(&early_data);
                }
                None => {}
                Some(other) => panic!("chunk {chunk}: {other:?}"),
            }
        });
        assert!(accepted, "chunk {chunk}");
        assert_eq!(app, b"server-hello", "chunk {chunk}");
        assert_eq!(p.opener.poll_timeout(), None);
        assert!(p.opener.is_finished());
    }
}

#[test]
fn reject_delivers_reason_and_detail_but_no_payload() {
    let mut p = Pair::new();
    let bytes = p.header_bytes();
    p.acceptor.handle_recv(&bytes, p.at(1));
    assert!(matches!(
        p.acceptor.poll_event(),
        Some(AcceptorEvent::Header { .. })
    ));
    p.acceptor.reject(
        RejectReason::NotExported,
        "billing/api is not exported to cluster-a",
    );
    p.acceptor.accept(); // too late: ignored
    let mut down = p.acceptor.poll_transmit().unwrap();
    assert_eq!(p.acceptor.poll_transmit(), None);
    // Whatever follows a reject is not payload for the opener.
    down.extend_from_slice(b"stray bytes");
    feed(&down, 1, |c| p.opener.handle_recv(c, p.at(2)));
    p.opener.handle_fin(p.at(3));
    assert_eq!(
        p.opener.poll_event(),
        Some(OpenerEvent::Rejected {
            reason: RejectReason::NotExported,
            detail: "billing/api is not exported to cluster-a".into()
        })
    );
    assert_eq!(p.opener.poll_event(), None);
    assert_eq!(RejectReason::NotExported.as_str(), "not exported to you");
}

#[test]
fn acceptor_can_reject_before_the_header_when_overloaded() {
    let mut p = Pair::new();
    p.acceptor.reject(RejectReason::Overloaded, "");
    assert_eq!(p.acceptor.poll_timeout(), None);
    let down = p.acceptor.poll_transmit().unwrap();
    p.opener.handle_recv(&down, p.at(1));
    assert!(matches!(
        p.opener.poll_event(),
        Some(OpenerEvent::Rejected {
            reason: RejectReason::Overloaded,
            ..
        })
    ));
}

#[test]
fn slowloris_header_times_out_with_header_timeout_code() {
    let mut p = Pair::new();
    let bytes = p.header_bytes();
    assert_eq!(p.acceptor.poll_timeout(), Some(p.at(5_000)));
    // One byte every 300 ms: 25 bytes by the deadline, far from the ~100 needed.
    let mut t = 0;
    for b in &bytes {
        if p.at(t) >= p.acceptor.poll_timeout().unwrap() {
            break;
        }
        p.acceptor.handle_recv(std::slice::from_ref(b), p.at(t));
        assert_eq!(p.acceptor.poll_event(), None);
        t += 300;
    }
    let deadline = p.acceptor.poll_timeout().unwrap();
    p.acceptor
        .handle_timeout(deadline - Duration::from_millis(1)); // early timer: no-op
    assert_eq!(p.acceptor.poll_event(), None);
    p.acceptor.handle_timeout(deadline);
    let Some(AcceptorEvent::Failed(e)) = p.acceptor.poll_event() else {
        panic!("must time out");
    };
    assert_eq!(e, HandshakeError::TimedOut);
    assert_eq!(e.reset_code(), code::HEADER_TIMEOUT);
    assert_eq!(p.acceptor.poll_timeout(), None);
    // The rest of the header, late, changes nothing.
    p.acceptor.handle_recv(&bytes, p.at(6_000));
    assert_eq!(p.acceptor.poll_event(), None);
}

#[test]
fn bytes_after_the_deadline_time_out_even_before_the_timer_fires() {
    let mut p = Pair::new();
    let bytes = p.header_bytes();
    p.acceptor.handle_recv(&bytes, p.at(5_000));
    assert_eq!(
        p.acceptor.poll_event(),
        Some(AcceptorEvent::Failed(HandshakeError::TimedOut))
    );
}

#[test]
fn a_header_just_in_time_is_accepted() {
    let mut p = Pair::new();
    let bytes = p.header_bytes();
    let (head, tail) = bytes.split_at(10);
    p.acceptor.handle_recv(head, p.at(0));
    p.acceptor.handle_recv(tail, p.at(4_999));
    assert!(matches!(
        p.acceptor.poll_event(),
        Some(AcceptorEvent::Header { .. })
    ));
    p.acceptor.handle_timeout(p.at(60_000)); // the application decides at its own pace
    assert_eq!(p.acceptor.poll_event(), None);
}

#[test]
fn opener_gives_up_when_no_response_arrives() {
    let mut p = Pair::new();
    let bytes = p.header_bytes();
    p.acceptor.handle_recv(&bytes, p.at(1));
    assert!(matches!(
        p.acceptor.poll_event(),
        Some(AcceptorEvent::Header { .. })
    ));
    // The acceptor never decides; half a response trickles in.
    p.opener.handle_recv(&[1, 2], p.at(2_000));
    assert_eq!(p.opener.poll_timeout(), Some(p.at(10_000)));
    p.opener.handle_timeout(p.at(9_999));
    assert_eq!(p.opener.poll_event(), None);
    p.opener.handle_timeout(p.at(10_000));
    let Some(OpenerEvent::Failed(e)) = p.opener.poll_event() else {
        panic!("must time out");
    };
    assert_eq!(e, HandshakeError::TimedOut);
    assert_eq!(e.reset_code(), code::HEADER_TIMEOUT);
    assert_eq!(p.opener.poll_timeout(), None);
    p.opener
        .handle_recv(&Response::Accept.encode(), p.at(10_001));
    assert_eq!(p.opener.poll_event(), None);
}

#[test]
fn fin_before_the_header_or_the_response_is_a_protocol_error() {
    let mut p = Pair::new();
    let bytes = p.header_bytes();
    p.acceptor.handle_recv(&bytes[..20], p.at(1));
    p.acceptor.handle_fin(p.at(2));
    let Some(AcceptorEvent::Failed(e)) = p.acceptor.poll_event() else {
        panic!("must fail");
    };
    assert_eq!(
        (e.clone(), e.reset_code()),
        (HandshakeError::Closed, code::PROTOCOL)
    );

    p.opener.handle_recv(&[1, 0], p.at(3));
    p.opener.handle_fin(p.at(4));
    assert_eq!(
        p.opener.poll_event(),
        Some(OpenerEvent::Failed(HandshakeError::Closed))
    );

    // A FIN after the whole header is a half-close, for the driver.
    let mut p = Pair::new();
    let bytes = p.header_bytes();
    p.acceptor.handle_recv(&bytes, p.at(1));
    p.acceptor.handle_fin(p.at(1));
    assert!(matches!(
        p.acceptor.poll_event(),
        Some(AcceptorEvent::Header { .. })
    ));
    assert_eq!(p.acceptor.poll_event(), None);
}

#[test]
fn reset_mid_handshake() {
    let mut p = Pair::new();
    let bytes = p.header_bytes();
    p.acceptor.handle_recv(&bytes[..7], p.at(1));
    p.acceptor.handle_reset(u64::from(code::CANCELLED), p.at(2));
    let Some(AcceptorEvent::Failed(e)) = p.acceptor.poll_event() else {
        panic!("must fail");
    };
    assert_eq!(e, HandshakeError::Reset(0));
    assert_eq!(e.reset_code(), code::PEER_RESET);

    // After the header but before the decision: reported, and the decision
    // is then ignored.
    let mut p = Pair::new();
    let bytes = p.header_bytes();
    p.acceptor.handle_recv(&bytes, p.at(1));
    p.acceptor.handle_reset(7, p.at(2));
    assert!(matches!(
        p.acceptor.poll_event(),
        Some(AcceptorEvent::Header { .. })
    ));
    assert_eq!(
        p.acceptor.poll_event(),
        Some(AcceptorEvent::Failed(HandshakeError::Reset(7)))
    );
    p.acceptor.accept();
    assert_eq!(p.acceptor.poll_transmit(), None);

    p.opener.handle_reset(u64::from(code::DRAINING), p.at(3));
    assert_eq!(
        p.opener.poll_event(),
        Some(OpenerEvent::Failed(HandshakeError::Reset(4)))
    );
}

#[test]
fn malformed_frames_fail_early() {
    // An oversized length is refused from the 3-byte prefix alone.
    let mut p = Pair::new();
    p.acceptor.handle_recv(&[1, 0x10], p.at(1));
    assert_eq!(p.acceptor.poll_event(), None);
    p.acceptor.handle_recv(&[0x01], p.at(2));
    let Some(AcceptorEvent::Failed(e)) = p.acceptor.poll_event() else {
        panic!("must fail");
    };
    assert_eq!(
        e,
        HandshakeError::Header(HeaderError::TooLong { len: 4097 })
    );
    assert_eq!(e.reset_code(), code::PROTOCOL);
    assert_eq!(p.acceptor.poll_timeout(), None);

    // A wrong version on the first response byte.
    p.opener.handle_recv(b"H", p.at(3));
    let Some(OpenerEvent::Failed(HandshakeError::Response(e))) = p.opener.poll_event() else {
        panic!("must fail");
    };
    assert_eq!(
        e.to_string(),
        "unsupported tunnel version 72 at byte 0 (expected 1)"
    );
}

#[test]
fn acceptor_any_two_way_split_of_the_header() {
    let bytes = Pair::new().header_bytes();
    for i in 0..=bytes.len() {
        let mut p = Pair::new();
        p.acceptor.handle_recv(&bytes[..i], p.at(1));
        p.acceptor.handle_recv(&bytes[i..], p.at(2));
        assert_eq!(
            p.acceptor.poll_event(),
            Some(AcceptorEvent::Header {
                header: header(),
                early_data: vec![]
            }),
            "split at {i}"
        );
    }
}

fn drain(s: &mut Splice) -> Vec<SpliceCommand> {
    std::iter::from_fn(|| s.poll_command()).collect()
}

#[test]
fn splice_propagates_half_closes() {
    let mut s = Splice::new();
    // The client finishes its request; the destination keeps answering.
    s.handle_fin(Side::Downstream);
    assert_eq!(drain(&mut s), [SpliceCommand::Finish(Side::Upstream)]);
    assert!(!s.is_done());
    s.handle_fin(Side::Upstream);
    assert_eq!(drain(&mut s), [SpliceCommand::Finish(Side::Downstream)]);
    assert!(s.is_done());
}

/// sidecar-a → gateway-a → gateway-b → sidecar-b: two splices in a row.
/// A reset at one end reaches the other end with its code.
#[test]
fn splice_propagates_resets_across_two_hops() {
    let mut gw_a = Splice::new();
    let mut gw_b = Splice::new();
    gw_b.handle_reset(Side::Upstream, u64::from(code::DRAINING));
    let cmds = drain(&mut gw_b);
    assert_eq!(
        cmds,
        [
            SpliceCommand::Reset(Side::Downstream, code::DRAINING),
            SpliceCommand::StopSending(Side::Downstream, code::DRAINING),
            SpliceCommand::Reset(Side::Upstream, code::DRAINING),
        ]
    );
    // gateway-a sees gateway-b's reset on its upstream stream.
    let SpliceCommand::Reset(_, c) = cmds[0] else {
        unreachable!()
    };
    gw_a.handle_reset(Side::Upstream, u64::from(c));
    assert_eq!(
        drain(&mut gw_a)[0],
        SpliceCommand::Reset(Side::Downstream, code::DRAINING)
    );
    assert!(gw_a.is_done() && gw_b.is_done());
}

#[test]
fn splice_write_error_and_reset_after_fin() {
    let mut s = Splice::new();
    s.handle_fin(Side::Upstream);
    assert_eq!(drain(&mut s), [SpliceCommand::Finish(Side::Downstream)]);
    // The client stops reading (STOP_SENDING): writes to it fail.
    s.handle_write_error(Side::Downstream);
    assert_eq!(
        drain(&mut s),
        [
            SpliceCommand::Reset(Side::Upstream, code::PEER_RESET),
            SpliceCommand::StopSending(Side::Downstream, code::PEER_RESET),
        ]
    );
    assert!(s.is_done() && s.is_aborted());
    s.handle_fin(Side::Downstream);
    assert_eq!(drain(&mut s), []);
}
