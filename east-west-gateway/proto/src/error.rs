//! Errors of the tunnel protocol: one enum per concern.
//!
//! Offsets are byte offsets from the first byte of the frame (the version
//! byte is offset 0), so an operator can find the bad byte in a capture.

use std::fmt;

use trust_bundle::IdError;

use crate::code;

/// A field of the OPEN header, named in [`HeaderError`]s
/// (docs/reference/tunnel-protocol.md, "Body").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// The u8 length prefix and bytes of the target cluster name.
    TargetCluster,
    /// The u8 length prefix and bytes of the destination namespace.
    Namespace,
    /// The u8 length prefix and bytes of the destination service.
    Service,
    /// The u16 destination port.
    Port,
    /// The u16 length prefix and bytes of the expected destination SPIFFE ID.
    ExpectedIdentity,
    /// The TLV extension area at the end of the body.
    Extensions,
}

/// Why an OPEN header could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The version byte (offset 0) is not [`crate::VERSION`].
    #[error(
        "unsupported tunnel version {version} at byte 0 (expected {})",
        crate::VERSION
    )]
    UnsupportedVersion {
        /// The version byte received.
        version: u8,
    },
    /// The body length (offset 1) is over [`crate::MAX_HEADER_LEN`]; refused
    /// before the body is read.
    #[error(
        "header body of {len} bytes (length at byte 1) is over the {} byte limit",
        crate::MAX_HEADER_LEN
    )]
    TooLong {
        /// The declared (or, when encoding, the computed) body length in bytes.
        len: usize,
    },
    /// The body ends inside a field.
    #[error("header body ends inside the {field} field at byte {offset}")]
    Truncated {
        /// The field being read.
        field: Field,
        /// Where the field (or its length prefix) starts.
        offset: usize,
    },
    /// A DNS-label field is empty.
    #[error("{field} is empty (byte {offset}); it must be a 1-63 byte DNS label")]
    EmptyLabel {
        /// The field.
        field: Field,
        /// Offset of its length prefix.
        offset: usize,
    },
    /// A DNS-label field is longer than 63 bytes (RFC 1035 §2.3.4).
    #[error("{field} is {len} bytes long (byte {offset}); a DNS label has at most 63")]
    LabelTooLong {
        /// The field.
        field: Field,
        /// Its length in bytes.
        len: usize,
        /// Offset of its length prefix.
        offset: usize,
    },
    /// A DNS-label field has a byte outside `[a-z0-9-]` (RFC 1123 §2.1,
    /// lowercase only as in Kubernetes names).
    #[error("invalid byte 0x{byte:02x} in {field} at byte {offset}; a DNS label has only a-z, 0-9 and '-'")]
    LabelByte {
        /// The field.
        field: Field,
        /// The offending byte.
        byte: u8,
        /// Its offset.
        offset: usize,
    },
    /// A DNS-label field starts or ends with `-` (RFC 1123 §2.1).
    #[error("{field} starts or ends with '-' (byte {offset})")]
    LabelHyphen {
        /// The field.
        field: Field,
        /// Offset of the hyphen.
        offset: usize,
    },
    /// The port is 0.
    #[error("port at byte {offset} is 0; it must be 1-65535")]
    ZeroPort {
        /// Offset of the port.
        offset: usize,
    },
    /// The expected identity is longer than [`trust_bundle::id::MAX_ID_LEN`] bytes.
    #[error("expected identity at byte {offset} is {len} bytes long; at most 2048 are allowed")]
    IdentityTooLong {
        /// Its declared length in bytes.
        len: usize,
        /// Offset of its length prefix.
        offset: usize,
    },
    /// The expected identity is not UTF-8.
    #[error("expected identity at byte {offset} is not UTF-8")]
    IdentityNotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// The expected identity is not a valid SPIFFE ID (SPIFFE-ID §2).
    #[error("expected identity at byte {offset} is not a valid SPIFFE ID")]
    Identity {
        /// Offset of the first byte of the ID; the source's offsets are
        /// relative to it.
        offset: usize,
        /// The SPIFFE-ID rule broken.
        #[source]
        source: IdError,
    },
    /// An extension type appears twice.
    #[error("extension type {ext_type} at byte {offset} appears twice")]
    DuplicateExtension {
        /// The extension type.
        ext_type: u8,
        /// Offset of the second occurrence.
        offset: usize,
    },
    /// An extension's value runs past the end of the body.
    #[error(
        "extension type {ext_type} at byte {offset} declares {len} bytes, past the end of the body"
    )]
    ExtensionTruncated {
        /// The extension type.
        ext_type: u8,
        /// The declared value length in bytes.
        len: usize,
        /// Offset of the extension's type byte.
        offset: usize,
    },
    /// 1 or 2 bytes are left at the end of the body: too few for an
    /// extension's type and length.
    #[error("{len} trailing bytes at byte {offset} are too short for an extension")]
    TrailingBytes {
        /// How many bytes are left.
        len: usize,
        /// Offset of the first of them.
        offset: usize,
    },
    /// The `traceparent` extension is not 55 bytes of
    /// `version-traceid-parentid-flags` in lowercase hex (W3C Trace Context §3.2).
    #[error("traceparent at byte {offset} is not a 55-byte W3C traceparent")]
    Traceparent {
        /// Offset of the value.
        offset: usize,
    },
    /// The `tracestate` extension is over 512 bytes or not printable ASCII
    /// (W3C Trace Context §3.3).
    #[error(
        "tracestate at byte {offset} ({len} bytes) is not at most 512 bytes of printable ASCII"
    )]
    Tracestate {
        /// Its length in bytes.
        len: usize,
        /// Offset of the value.
        offset: usize,
    },
}

/// Why a RESPONSE frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// The version byte (offset 0) is not [`crate::VERSION`].
    #[error(
        "unsupported tunnel version {version} at byte 0 (expected {})",
        crate::VERSION
    )]
    UnsupportedVersion {
        /// The version byte received.
        version: u8,
    },
    /// The detail is not UTF-8.
    #[error("response detail is not UTF-8 (byte {offset})")]
    DetailNotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
}

/// Why a stream handshake (OPEN header, then RESPONSE) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The deadline passed before the header (acceptor) or the response
    /// (opener) was complete.
    #[error("tunnel handshake timed out")]
    TimedOut,
    /// The peer finished its side of the stream before the handshake was done.
    #[error("stream finished before the tunnel handshake completed")]
    Closed,
    /// The peer reset the stream with this application code.
    #[error("stream reset by peer with code {0}")]
    Reset(u64),
    /// The OPEN header was malformed.
    #[error("malformed OPEN header")]
    Header(#[from] HeaderError),
    /// The RESPONSE frame was malformed.
    #[error("malformed tunnel response")]
    Response(#[from] ResponseError),
}

impl HandshakeError {
    /// The RESET_STREAM (and STOP_SENDING) application code the driver sends
    /// on this stream after the failure (docs/reference/tunnel-protocol.md):
    /// [`code::HEADER_TIMEOUT`] for a timeout, [`code::PEER_RESET`] after a
    /// reset, [`code::PROTOCOL`] for a malformed frame or an early FIN.
    pub fn reset_code(&self) -> u32 {
        match self {
            HandshakeError::TimedOut => code::HEADER_TIMEOUT,
            HandshakeError::Reset(_) => code::PEER_RESET,
            HandshakeError::Closed | HandshakeError::Header(_) | HandshakeError::Response(_) => {
                code::PROTOCOL
            }
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::TargetCluster => "target cluster",
            Field::Namespace => "namespace",
            Field::Service => "service",
            Field::Port => "port",
            Field::ExpectedIdentity => "expected identity",
            Field::Extensions => "extensions",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_codes() {
        assert_eq!(HandshakeError::TimedOut.reset_code(), code::HEADER_TIMEOUT);
        assert_eq!(HandshakeError::Closed.reset_code(), code::PROTOCOL);
        assert_eq!(HandshakeError::Reset(9).reset_code(), code::PEER_RESET);
        let h = HandshakeError::from(HeaderError::ZeroPort { offset: 3 });
        assert_eq!(h.reset_code(), code::PROTOCOL);
        let r = HandshakeError::from(ResponseError::DetailNotUtf8 { offset: 3 });
        assert_eq!(r.reset_code(), code::PROTOCOL);
    }

    #[test]
    fn messages_name_field_and_offset() {
        let e = HeaderError::LabelByte {
            field: Field::Namespace,
            byte: b'A',
            offset: 9,
        };
        assert_eq!(
            e.to_string(),
            "invalid byte 0x41 in namespace at byte 9; a DNS label has only a-z, 0-9 and '-'"
        );
        assert_eq!(
            HeaderError::UnsupportedVersion { version: 2 }.to_string(),
            "unsupported tunnel version 2 at byte 0 (expected 1)"
        );
        assert_eq!(
            HeaderError::TooLong { len: 4097 }.to_string(),
            "header body of 4097 bytes (length at byte 1) is over the 4096 byte limit"
        );
    }
}
