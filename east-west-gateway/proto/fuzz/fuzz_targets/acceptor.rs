//! Arbitrary stream bytes fed to an `Acceptor` in arbitrary chunks, on a
//! virtual clock, checked against one-shot `OpenHeader::decode` of the same
//! bytes.
//!
//! Input: byte 0 = flags (bit 0: FIN after the last chunk; bit 1: accept,
//! else reject; bits 2-7: virtual milliseconds between chunks, times 100),
//! byte 1 = chunk sizes (alternating `1 + low nibble` and `high nibble`, so
//! empty reads happen too), the rest = the bytes the opener sent.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tunnel_proto::{
    Acceptor, AcceptorEvent, HandshakeError, OpenHeader, RejectReason, Response,
};

const TIMEOUT: Duration = Duration::from_secs(5);

fuzz_target!(|data: &[u8]| {
    let &[flags, sizes, ref stream @ ..] = data else {
        return;
    };
    let fin = flags & 1 == 1;
    let accept = flags & 2 == 2;
    let step = Duration::from_millis(u64::from(flags >> 2) * 100);
    let sizes = [1 + usize::from(sizes & 0xf), usize::from(sizes >> 4)];

    let base = Instant::now();
    let mut acceptor = Acceptor::new(base, TIMEOUT);
    let mut now = base;
    let mut fed = 0;
    let mut event = None;
    for i in 0.. {
        if fed >= stream.len() {
            break;
        }
        // The driver's timer fires before the next read when it is due.
        if acceptor.poll_timeout().is_some_and(|d| now >= d) {
            acceptor.handle_timeout(now);
        }
        if let Some(ev) = acceptor.poll_event() {
            event = Some((ev, fed, now));
            break;
        }
        let end = (fed + sizes[i % 2]).min(stream.len());
        acceptor.handle_recv(&stream[fed..end], now);
        let before = fed;
        fed = end;
        if let Some(ev) = acceptor.poll_event() {
            // The event must come from the read that completed the frame.
            if !matches!(ev, AcceptorEvent::Failed(HandshakeError::TimedOut)) {
                assert_eq!(OpenHeader::decode(&stream[..before]), Ok(None));
            }
            event = Some((ev, fed, now));
            break;
        }
        now += step;
    }
    if event.is_none() && fin {
        acceptor.handle_fin(now);
        event = acceptor.poll_event().map(|ev| (ev, fed, now));
    }

    match event {
        None => {
            assert_eq!(OpenHeader::decode(&stream[..fed]), Ok(None));
            assert!(acceptor.poll_timeout().is_some());
        }
        Some((AcceptorEvent::Header { header, early_data }, fed, at)) => {
            assert!(at < base + TIMEOUT, "header accepted after the deadline");
            let Ok(Some((expected, n))) = OpenHeader::decode(&stream[..fed]) else {
                panic!("acceptor saw a header that one-shot decode does not");
            };
            assert_eq!(header, expected);
            assert_eq!(early_data, &stream[n..fed]);
            assert_eq!(acceptor.poll_timeout(), None);
            if accept {
                acceptor.accept();
            } else {
                acceptor.reject(RejectReason::Other(flags), "fuzz");
            }
            let bytes = acceptor.poll_transmit().expect("a response after the decision");
            let Ok(Some((response, len))) = Response::decode(&bytes) else {
                panic!("acceptor wrote an undecodable response");
            };
            assert_eq!(len, bytes.len());
            assert_eq!(matches!(response, Response::Accept), accept);
            assert_eq!(acceptor.poll_transmit(), None);
        }
        Some((AcceptorEvent::Failed(HandshakeError::Header(e)), fed, _)) => {
            assert_eq!(OpenHeader::decode(&stream[..fed]), Err(e));
        }
        Some((AcceptorEvent::Failed(HandshakeError::TimedOut), _, at)) => {
            assert!(at >= base + TIMEOUT);
        }
        Some((AcceptorEvent::Failed(HandshakeError::Closed), fed, _)) => {
            assert!(fin);
            assert_eq!(OpenHeader::decode(&stream[..fed]), Ok(None));
        }
        Some((AcceptorEvent::Failed(e), ..)) => panic!("unexpected failure {e:?}"),
    }
    // Whatever happened, the acceptor is quiet now.
    assert_eq!(acceptor.poll_event(), None);
});
