//! The RESPONSE frame: the acceptor's accept or reject, written before any
//! payload (docs/reference/tunnel-protocol.md, "On the wire").

use std::fmt;

use crate::error::ResponseError;
use crate::VERSION;

/// Why an acceptor refused a stream. Codes 1–7 are defined by the protocol;
/// any other non-zero code decodes as [`RejectReason::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// `1`: no such service in the target cluster.
    UnknownService,
    /// `2`: the service exists but is not exported to the opener.
    NotExported,
    /// `3`: the service has no healthy endpoint.
    NoHealthyEndpoint,
    /// `4`: the acceptor is overloaded; retry elsewhere or later.
    Overloaded,
    /// `5`: the target cluster is not known to this gateway.
    UnknownCluster,
    /// `6`: the target cluster's gateway cannot be reached.
    PeerUnavailable,
    /// `7`: the opener's identity may not open this stream.
    Unauthorized,
    /// A code this version does not know (forward compatible).
    Other(u8),
}

/// The acceptor's answer to an OPEN header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Raw payload follows in both directions.
    Accept,
    /// The stream is refused; the acceptor finishes its side after this.
    Reject {
        /// Why.
        reason: RejectReason,
        /// Human-readable detail for logs and the `x-isthmus-error` header.
        detail: String,
    },
}

impl RejectReason {
    /// The status byte on the wire. [`RejectReason::Other`]`(0)` gives
    /// [`STATUS_OTHER`], since 0 means accept; `Other(1..=7)` gives the code
    /// of the known reason, which is what it decodes as.
    pub fn code(self) -> u8 {
        match self {
            RejectReason::UnknownService => 1,
            RejectReason::NotExported => 2,
            RejectReason::NoHealthyEndpoint => 3,
            RejectReason::Overloaded => 4,
            RejectReason::UnknownCluster => 5,
            RejectReason::PeerUnavailable => 6,
            RejectReason::Unauthorized => 7,
            RejectReason::Other(0) => STATUS_OTHER,
            RejectReason::Other(code) => code,
        }
    }

    /// The reason for a status byte; `None` for 0 (accept), `Other` for codes
    /// this version does not know.
    pub fn from_code(code: u8) -> Option<RejectReason> {
        Some(match code {
            0 => return None,
            1 => RejectReason::UnknownService,
            2 => RejectReason::NotExported,
            3 => RejectReason::NoHealthyEndpoint,
            4 => RejectReason::Overloaded,
            5 => RejectReason::UnknownCluster,
            6 => RejectReason::PeerUnavailable,
            7 => RejectReason::Unauthorized,
            code => RejectReason::Other(code),
        })
    }

    /// A short lowercase description, e.g. `"not exported to you"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownService => "unknown service",
            RejectReason::NotExported => "not exported to you",
            RejectReason::NoHealthyEndpoint => "no healthy endpoint",
            RejectReason::Overloaded => "overloaded",
            RejectReason::UnknownCluster => "unknown cluster",
            RejectReason::PeerUnavailable => "peer unavailable",
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::Other(_) => "unknown reject reason",
        }
    }
}

impl Response {
    /// Encodes the frame. A detail over 255 bytes is truncated at the last
    /// char boundary that fits.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Response::Accept => vec![VERSION, STATUS_ACCEPT, 0],
            Response::Reject { reason, detail } => {
                let detail = truncate(detail, MAX_DETAIL_LEN);
                let mut out = Vec::with_capacity(RESPONSE_PREFIX_LEN + detail.len());
                // truncate() bounds the length to 255.
                out.extend_from_slice(&[VERSION, reason.code(), detail.len() as u8]);
                out.extend_from_slice(detail.as_bytes());
                out
            }
        }
    }

    /// Decodes a frame from the start of `buf`, the bytes read so far.
    ///
    /// Returns `Ok(None)` while more bytes are needed, and
    /// `Ok(Some((response, consumed)))` once the frame is there; bytes after
    /// `consumed` are payload. The version is checked as soon as the first
    /// byte is there. A detail on an accept is checked and ignored.
    ///
    /// # Errors
    /// Unsupported version, or a detail that is not UTF-8.
    pub fn decode(buf: &[u8]) -> Result<Option<(Response, usize)>, ResponseError> {
        let Some(&version) = buf.first() else {
            return Ok(None);
        };
        if version != VERSION {
            return Err(ResponseError::UnsupportedVersion { version });
        }
        let Some(&[_, status, len]) = buf.get(..RESPONSE_PREFIX_LEN) else {
            return Ok(None);
        };
        let total = RESPONSE_PREFIX_LEN + usize::from(len);
        let Some(detail) = buf.get(RESPONSE_PREFIX_LEN..total) else {
            return Ok(None);
        };
        let detail = std::str::from_utf8(detail).map_err(|e| ResponseError::DetailNotUtf8 {
            offset: RESPONSE_PREFIX_LEN + e.valid_up_to(),
        })?;
        let response = match RejectReason::from_code(status) {
            None => Response::Accept,
            Some(reason) => Response::Reject {
                reason,
                detail: detail.to_owned(),
            },
        };
        Ok(Some((response, total)))
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char
/// boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::Other(code) => write!(f, "unknown reject reason {code}"),
            known => f.write_str(known.as_str()),
        }
    }
}

/// Longest detail carried, in bytes (its length is a u8).
pub const MAX_DETAIL_LEN: usize = 255;
/// Bytes before the detail: version, status, detail length.
pub const RESPONSE_PREFIX_LEN: usize = 3;
/// The status byte of an accept.
pub const STATUS_ACCEPT: u8 = 0;
/// The status [`RejectReason::Other`]`(0)` is written as: 0 means accept, so
/// a reject must never carry it.
pub const STATUS_OTHER: u8 = 255;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accept_round_trip_and_payload_follows() {
        let bytes = Response::Accept.encode();
        assert_eq!(bytes, [1, 0, 0]);
        let mut with_payload = bytes.clone();
        with_payload.extend_from_slice(b"hello");
        assert_eq!(
            Response::decode(&with_payload),
            Ok(Some((Response::Accept, 3)))
        );
    }

    #[test]
    fn reject_round_trip_for_every_code() {
        for code in 1..=255u8 {
            let reason = RejectReason::from_code(code).unwrap();
            assert_eq!(reason.code(), code);
            let r = Response::Reject {
                reason,
                detail: "billing/api is not exported to cluster-b".into(),
            };
            let bytes = r.encode();
            assert_eq!(bytes[1], code);
            assert_eq!(Response::decode(&bytes), Ok(Some((r, bytes.len()))));
        }
    }

    #[test]
    fn codes_names_and_unknown_codes() {
        assert_eq!(RejectReason::from_code(0), None);
        assert_eq!(RejectReason::from_code(2), Some(RejectReason::NotExported));
        assert_eq!(RejectReason::from_code(8), Some(RejectReason::Other(8)));
        assert_eq!(RejectReason::NotExported.as_str(), "not exported to you");
        assert_eq!(RejectReason::Unauthorized.to_string(), "unauthorized");
        assert_eq!(
            RejectReason::Other(42).to_string(),
            "unknown reject reason 42"
        );
        // 0 would read as accept: Other(0) is sent as 255.
        assert_eq!(RejectReason::Other(0).code(), STATUS_OTHER);
        let r = Response::Reject {
            reason: RejectReason::Other(0),
            detail: String::new(),
        };
        assert!(matches!(
            Response::decode(&r.encode()),
            Ok(Some((
                Response::Reject {
                    reason: RejectReason::Other(255),
                    ..
                },
                3
            )))
        ));
    }

    #[test]
    fn detail_is_truncated_on_a_char_boundary() {
        // 127 two-byte chars = 254 bytes, then a 4-byte char that does not fit.
        let detail = format!("{}{}", "é".repeat(127), "😀");
        let r = Response::Reject {
            reason: RejectReason::Overloaded,
            detail,
        };
        let bytes = r.encode();
        assert_eq!(bytes[2], 254);
        let Ok(Some((Response::Reject { detail, .. }, n))) = Response::decode(&bytes) else {
            panic!("must decode");
        };
        assert_eq!(n, 257);
        assert_eq!(detail, "é".repeat(127));
        let long = "x".repeat(300);
        let r = Response::Reject {
            reason: RejectReason::Overloaded,
            detail: long,
        };
        assert_eq!(r.encode().len(), 3 + 255);
    }

    #[test]
    fn errors() {
        assert_eq!(
            Response::decode(&[2]),
            Err(ResponseError::UnsupportedVersion { version: 2 })
        );
        assert_eq!(
            Response::decode(&[1, 3, 3, b'a', 0xff, b'b']),
            Err(ResponseError::DetailNotUtf8 { offset: 4 })
        );
        // An accept with a detail: checked, then ignored.
        assert_eq!(
            Response::decode(&[1, 0, 2, b'o', b'k', b'!']),
            Ok(Some((Response::Accept, 5)))
        );
        assert_eq!(
            Response::decode(&[1, 0, 1, 0xc3]),
            Err(ResponseError::DetailNotUtf8 { offset: 3 })
        );
    }

    #[test]
    fn decode_one_byte_at_a_time() {
        let r = Response::Reject {
            reason: RejectReason::NoHealthyEndpoint,
            detail: "0/3 endpoints ready".into(),
        };
        let bytes = r.encode();
        for end in 0..bytes.len() {
            assert_eq!(Response::decode(&bytes[..end]), Ok(None), "prefix {end}");
        }
        assert_eq!(Response::decode(&bytes), Ok(Some((r, bytes.len()))));
    }

    proptest! {
        #[test]
        fn round_trip(code in 1..=255u8, detail in "\\PC{0,100}") {
            let r = Response::Reject { reason: RejectReason::from_code(code).unwrap(), detail };
            let bytes = r.encode();
            let (back, n) = Response::decode(&bytes).unwrap().unwrap();
            prop_assert_eq!(n, bytes.len());
            let Response::Reject { detail, .. } = &r else { unreachable!() };
            let Response::Reject { detail: got, .. } = &back else { unreachable!() };
            prop_assert!(detail.starts_with(got.as_str()));
            prop_assert!(got.len() <= MAX_DETAIL_LEN);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some((_, n))) = Response::decode(&bytes) {
                prop_assert!(n <= bytes.len());
            }
        }
    }
}
