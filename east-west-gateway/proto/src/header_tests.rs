//! Unit and property tests of the OPEN header (kept apart from header.rs to
//! keep both files short).

use proptest::prelude::*;

use super::*;

const ID: &str = "spiffe://cluster-b.mesh/ns/billing/sa/api";
const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn sample() -> OpenHeader {
    OpenHeader {
        target_cluster: "cluster-b".into(),
        namespace: "billing".into(),
        service: "api".into(),
        port: 8443,
        expected_identity: SpiffeId::parse(ID).unwrap(),
        traceparent: Some(TP.into()),
        tracestate: Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7".into()),
    }
}

/// Body fields up to and including the identity, for a handcrafted frame.
fn fixed_fields(cluster: &[u8], id: &[u8]) -> Vec<u8> {
    let mut b = vec![cluster.len() as u8];
    b.extend_from_slice(cluster);
    b.extend_from_slice(b"\x07billing\x03api\x20\xfb");
    b.extend_from_slice(&(id.len() as u16).to_be_bytes());
    b.extend_from_slice(id);
    b
}

fn ext(b: &mut Vec<u8>, ty: u8, value: &[u8]) {
    b.push(ty);
    b.extend_from_slice(&(value.len() as u16).to_be_bytes());
    b.extend_from_slice(value);
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = vec![VERSION];
    f.extend_from_slice(&(body.len() as u16).to_be_bytes());
    f.extend_from_slice(body);
    f
}

fn decode_err(body: &[u8]) -> HeaderError {
    OpenHeader::decode(&frame(body)).unwrap_err()
}

/// Offset of the first extension in a frame built from `fixed_fields(b"cluster-b", ID)`.
const EXT_AT: usize = 3 + 10 + 8 + 4 + 2 + 2 + ID.len();

#[test]
fn round_trip_with_and_without_extensions() {
    let h = sample();
    let bytes = h.encode().unwrap();
    assert_eq!(&bytes[..4], &[1, 0, (bytes.len() - 3) as u8, 9]);
    assert_eq!(
        OpenHeader::decode(&bytes),
        Ok(Some((h.clone(), bytes.len())))
    );
    let bare = OpenHeader {
        traceparent: None,
        tracestate: None,
        ..h
    };
    let bytes = bare.encode().unwrap();
    assert_eq!(bytes.len(), EXT_AT);
    assert_eq!(
        bytes[3..],
        frame(&fixed_fields(b"cluster-b", ID.as_bytes()))[3..]
    );
    assert_eq!(OpenHeader::decode(&bytes), Ok(Some((bare, bytes.len()))));
}

#[test]
fn decode_one_byte_at_a_time_then_payload() {
    let h = sample();
    let mut bytes = h.encode().unwrap();
    let n = bytes.len();
    for end in 0..n {
        assert_eq!(OpenHeader::decode(&bytes[..end]), Ok(None), "prefix {end}");
    }
    bytes.extend_from_slice(b"\x16\x03\x01 client hello");
    assert_eq!(OpenHeader::decode(&bytes), Ok(Some((h, n))));
}

#[test]
fn version_and_length_are_checked_before_the_body() {
    assert_eq!(
        OpenHeader::decode(&[0]),
        Err(HeaderError::UnsupportedVersion { version: 0 })
    );
    assert_eq!(
        OpenHeader::decode(b"GET / HTTP/1.1"),
        Err(HeaderError::UnsupportedVersion { version: b'G' })
    );
    assert_eq!(OpenHeader::decode(&[1, 0x10]), Ok(None));
    assert_eq!(
        OpenHeader::decode(&[1, 0x10, 0x01]),
        Err(HeaderError::TooLong { len: 4097 })
    );
    assert_eq!(
        OpenHeader::decode(&[1, 0xff, 0xff]),
        Err(HeaderError::TooLong { len: 65535 })
    );
}

#[test]
fn the_4096_byte_boundary() {
    let mut body = fixed_fields(b"cluster-b", ID.as_bytes());
    let pad = MAX_HEADER_LEN - body.len() - 3;
    ext(&mut body, 200, &vec![0xaa; pad]);
    assert_eq!(body.len(), MAX_HEADER_LEN);
    let f = frame(&body);
    let (h, n) = OpenHeader::decode(&f).unwrap().unwrap();
    assert_eq!((h.port, n), (8443, 3 + MAX_HEADER_LEN));
    assert_eq!(OpenHeader::decode(&f[..f.len() - 1]), Ok(None));

    body.push(0);
    assert_eq!(decode_err(&body), HeaderError::TooLong { len: 4097 });

    // The largest header encode can produce still fits.
    let td = "a".repeat(200);
    let path = "p".repeat(2048 - "spiffe://".len() - td.len() - 1);
    let big = OpenHeader {
        target_cluster: "c".repeat(63),
        namespace: "n".repeat(63),
        service: "s".repeat(63),
        port: 65535,
        expected_identity: SpiffeId::parse(&format!("spiffe://{td}/{path}")).unwrap(),
        traceparent: Some(TP.into()),
        tracestate: Some("x".repeat(512)),
    };
    let bytes = big.encode().unwrap();
    assert!(bytes.len() - 3 < MAX_HEADER_LEN);
    assert_eq!(OpenHeader::decode(&bytes), Ok(Some((big, bytes.len()))));
}

#[test]
fn unknown_extensions_are_skipped() {
    let mut body = fixed_fields(b"cluster-b", ID.as_bytes());
    ext(&mut body, 0, b"");
    ext(&mut body, 9, b"future stuff");
    ext(&mut body, EXT_TRACEPARENT, TP.as_bytes());
    ext(&mut body, 255, &[0; 300]);
    let (h, _) = OpenHeader::decode(&frame(&body)).unwrap().unwrap();
    assert_eq!(h.traceparent.as_deref(), Some(TP));
    assert_eq!(h.tracestate, None);
}

#[test]
fn truncated_fields() {
    use Field::*;
    let full = fixed_fields(b"cluster-b", ID.as_bytes());
    let cases: &[(usize, Field, usize)] = &[
        (0, TargetCluster, 3),
        (5, TargetCluster, 3),
        (10, Namespace, 13),
        (15, Namespace, 13),
        (18, Service, 21),
        (22, Port, 25),
        (23, Port, 25),
        (25, ExpectedIdentity, 27),
        (26, ExpectedIdentity, 27),
        (40, ExpectedIdentity, 27),
    ];
    for &(len, field, offset) in cases {
        assert_eq!(
            decode_err(&full[..len]),
            HeaderError::Truncated { field, offset },
            "body cut at {len}"
        );
    }
}

#[test]
fn label_errors_name_field_and_offset() {
    let id = ID.as_bytes();
    assert_eq!(
        decode_err(&fixed_fields(b"", id)),
        HeaderError::EmptyLabel {
            field: Field::TargetCluster,
            offset: 3
        }
    );
    assert_eq!(
        decode_err(&fixed_fields(&[b'a'; 64], id)),
        HeaderError::LabelTooLong {
            field: Field::TargetCluster,
            len: 64,
            offset: 3
        }
    );
    for (label, byte, at) in [
        (&b"Cluster"[..], b'C', 4),
        (b"a_b", b'_', 5),
        (b"ab\xff", 0xff, 6),
    ] {
        assert_eq!(
            decode_err(&fixed_fields(label, id)),
            HeaderError::LabelByte {
                field: Field::TargetCluster,
                byte,
                offset: at
            }
        );
    }
    assert_eq!(
        decode_err(&fixed_fields(b"-ab", id)),
        HeaderError::LabelHyphen {
            field: Field::TargetCluster,
            offset: 4
        }
    );
    assert_eq!(
        decode_err(&fixed_fields(b"ab-", id)),
        HeaderError::LabelHyphen {
            field: Field::TargetCluster,
            offset: 6
        }
    );
    let mut body = fixed_fields(b"c", id);
    body[3] = b'B'; // the namespace's first byte, "billing" -> "Billing"
    assert_eq!(
        decode_err(&body),
        HeaderError::LabelByte {
            field: Field::Namespace,
            byte: b'B',
            offset: 6
        }
    );
}

#[test]
fn port_and_identity_errors() {
    let mut body = fixed_fields(b"c", ID.as_bytes());
    body[14..16].copy_from_slice(&[0, 0]);
    assert_eq!(decode_err(&body), HeaderError::ZeroPort { offset: 17 });

    let mut body = fixed_fields(b"c", b"");
    body.truncate(body.len() - 2);
    body.extend_from_slice(&2049u16.to_be_bytes());
    assert_eq!(
        decode_err(&body),
        HeaderError::IdentityTooLong {
            len: 2049,
            offset: 19
        }
    );
    assert_eq!(
        decode_err(&fixed_fields(b"c", b"spiffe://td/\xc3(")),
        HeaderError::IdentityNotUtf8 { offset: 21 + 12 }
    );
    assert_eq!(
        decode_err(&fixed_fields(b"c", b"spiffe://td/a?b")),
        HeaderError::Identity {
            offset: 21,
            source: trust_bundle::IdError::QueryOrFragment(13)
        }
    );
    assert!(matches!(
        decode_err(&fixed_fields(b"c", b"")),
        HeaderError::Identity {
            source: trust_bundle::IdError::Empty,
            ..
        }
    ));
    // The trust domain is case-insensitive and comes out normalized.
    let body = fixed_fields(b"c", b"SPIFFE://Cluster-B.mesh/ns/billing/sa/api");
    let (h, _) = OpenHeader::decode(&frame(&body)).unwrap().unwrap();
    assert_eq!(h.expected_identity.as_str(), ID);
}

#[test]
fn extension_errors() {
    let base = fixed_fields(b"cluster-b", ID.as_bytes());
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = base.clone();
        f(&mut b);
        decode_err(&b)
    };
    assert_eq!(
        with(&|b| {
            ext(b, 9, b"x");
            ext(b, 9, b"y");
        }),
        HeaderError::DuplicateExtension {
            ext_type: 9,
            offset: EXT_AT + 4
        }
    );
    assert_eq!(
        with(&|b| {
            ext(b, EXT_TRACEPARENT, TP.as_bytes());
            ext(b, EXT_TRACEPARENT, TP.as_bytes());
        }),
        HeaderError::DuplicateExtension {
            ext_type: 1,
            offset: EXT_AT + 58
        }
    );
    assert_eq!(
        with(&|b| b.extend_from_slice(&[7, 0, 5, 1, 2])),
        HeaderError::ExtensionTruncated {
            ext_type: 7,
            len: 5,
            offset: EXT_AT
        }
    );
    assert_eq!(
        with(&|b| b.push(1)),
        HeaderError::TrailingBytes {
            len: 1,
            offset: EXT_AT
        }
    );
    assert_eq!(
        with(&|b| b.extend_from_slice(&[2, 0])),
        HeaderError::TrailingBytes {
            len: 2,
            offset: EXT_AT
        }
    );
    let upper = TP.to_uppercase();
    for bad in [&TP[..54], upper.as_str(), &TP.replace('-', "_"), ""] {
        assert_eq!(
            with(&|b| ext(b, EXT_TRACEPARENT, bad.as_bytes())),
            HeaderError::Traceparent { offset: EXT_AT + 3 },
            "{bad:?}"
        );
    }
    assert_eq!(
        with(&|b| ext(b, EXT_TRACESTATE, &[b'a'; 513])),
        HeaderError::Tracestate {
            len: 513,
            offset: EXT_AT + 3
        }
    );
    assert_eq!(
        with(&|b| ext(b, EXT_TRACESTATE, b"a=\n")),
        HeaderError::Tracestate {
            len: 3,
            offset: EXT_AT + 3
        }
    );
}

#[test]
fn encode_validates_every_field() {
    let enc = |f: &dyn Fn(&mut OpenHeader)| {
        let mut h = sample();
        f(&mut h);
        h.encode().unwrap_err()
    };
    assert_eq!(
        enc(&|h| h.target_cluster = "Cluster".into()),
        HeaderError::LabelByte {
            field: Field::TargetCluster,
            byte: b'C',
            offset: 4
        }
    );
    assert_eq!(
        enc(&|h| h.namespace = String::new()),
        HeaderError::EmptyLabel {
            field: Field::Namespace,
            offset: 13
        }
    );
    assert_eq!(
        enc(&|h| h.service = "s".repeat(300)),
        HeaderError::LabelTooLong {
            field: Field::Service,
            len: 300,
            offset: 21
        }
    );
    assert_eq!(
        enc(&|h| h.service = "api-".into()),
        HeaderError::LabelHyphen {
            field: Field::Service,
            offset: 25
        }
    );
    assert_eq!(enc(&|h| h.port = 0), HeaderError::ZeroPort { offset: 25 });
    assert_eq!(
        enc(&|h| h.traceparent = Some("00-abc".into())),
        HeaderError::Traceparent { offset: EXT_AT + 3 }
    );
    assert_eq!(
        enc(&|h| h.tracestate = Some("é".into())),
        HeaderError::Tracestate {
            len: 2,
            offset: EXT_AT + 58 + 3
        }
    );
}

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
}

fn header() -> impl Strategy<Value = OpenHeader> {
    let id = (
        "[a-z0-9._-]{1,40}",
        "(/[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,20}){0,5}",
    )
        .prop_map(|(td, path)| SpiffeId::parse(&format!("spiffe://{td}{path}")).unwrap());
    let tp = "[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}";
    (
        (label(), label(), label(), 1..=u16::MAX),
        id,
        proptest::option::of(tp),
        proptest::option::of("[ -~]{0,512}"),
    )
        .prop_map(
            |((c, n, s, port), id, traceparent, tracestate)| OpenHeader {
                target_cluster: c,
                namespace: n,
                service: s,
                port,
                expected_identity: id,
                traceparent,
                tracestate,
            },
        )
}

proptest! {
    #[test]
    fn valid_headers_round_trip(h in header(), payload in proptest::collection::vec(any::<u8>(), 0..16)) {
        let mut bytes = h.encode().unwrap();
        let n = bytes.len();
        prop_assert!(n - PREFIX_LEN <= MAX_HEADER_LEN);
        bytes.extend_from_slice(&payload);
        prop_assert_eq!(OpenHeader::decode(&bytes), Ok(Some((h, n))));
        prop_assert_eq!(OpenHeader::decode(&bytes[..n - 1]), Ok(None));
    }

    #[test]
    fn decode_of_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(Some((h, n))) = OpenHeader::decode(&bytes) {
            prop_assert!(n <= bytes.len());
            // Whatever decodes is valid, so it encodes again.
            prop_assert!(h.encode().is_ok());
        }
    }

    #[test]
    fn decode_of_mutated_headers_never_panics(
        h in header(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = h.encode().unwrap();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if let Ok(Some((h, n))) = OpenHeader::decode(&bytes) {
            prop_assert!(n <= bytes.len());
            prop_assert!(h.encode().is_ok());
        }
    }
}
