//! The OPEN header: the first bytes an opener writes on a tunnel stream
//! (docs/reference/tunnel-protocol.md, "On the wire").

use trust_bundle::id::MAX_ID_LEN;
use trust_bundle::SpiffeId;

use crate::error::{Field, HeaderError};
use crate::{MAX_HEADER_LEN, VERSION};

/// What the opener asks for: the destination service and the identity the
/// destination workload must present. Encoded as the OPEN header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenHeader {
    /// The cluster that holds the destination, a DNS label of 1–63 bytes.
    pub target_cluster: String,
    /// The destination's namespace, a DNS label of 1–63 bytes.
    pub namespace: String,
    /// The destination service, a DNS label of 1–63 bytes.
    pub service: String,
    /// The destination port, 1–65535.
    pub port: u16,
    /// The SPIFFE ID the final hop (the destination workload) must present.
    pub expected_identity: SpiffeId,
    /// The W3C `traceparent` of the caller (55 bytes), if any.
    pub traceparent: Option<String>,
    /// The W3C `tracestate` of the caller (at most 512 bytes), if any.
    pub tracestate: Option<String>,
}

impl OpenHeader {
    /// Checks every field and encodes the header: prefix, body, then the
    /// `traceparent` and `tracestate` extensions when present.
    ///
    /// # Errors
    /// The first field that breaks its rule; offsets are where it would have
    /// been written.
    pub fn encode(&self) -> Result<Vec<u8>, HeaderError> {
        let id = self.expected_identity.as_str().as_bytes();
        let mut out = Vec::with_capacity(PREFIX_LEN + 3 * 64 + 4 + id.len() + 64);
        out.extend_from_slice(&[VERSION, 0, 0]);
        put_label(&mut out, Field::TargetCluster, &self.target_cluster)?;
        put_label(&mut out, Field::Namespace, &self.namespace)?;
        put_label(&mut out, Field::Service, &self.service)?;
        if self.port == 0 {
            return Err(HeaderError::ZeroPort { offset: out.len() });
        }
        out.extend_from_slice(&self.port.to_be_bytes());
        let id_len = u16::try_from(id.len())
            .ok()
            .filter(|&l| usize::from(l) <= MAX_ID_LEN)
            .ok_or(HeaderError::IdentityTooLong {
                len: id.len(),
                offset: out.len(),
            })?;
        out.extend_from_slice(&id_len.to_be_bytes());
        out.extend_from_slice(id);
        if let Some(tp) = &self.traceparent {
            check_traceparent(tp.as_bytes(), out.len() + 3)?;
            put_extension(&mut out, EXT_TRACEPARENT, tp.as_bytes());
        }
        if let Some(ts) = &self.tracestate {
            check_tracestate(ts.as_bytes(), out.len() + 3)?;
            put_extension(&mut out, EXT_TRACESTATE, ts.as_bytes());
        }
        let body_len = out.len() - PREFIX_LEN;
        let len = u16::try_from(body_len)
            .ok()
            .filter(|&l| usize::from(l) <= MAX_HEADER_LEN)
            .ok_or(HeaderError::TooLong { len: body_len })?;
        out[1..PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
        Ok(out)
    }

    /// Decodes a header from the start of `buf`, the bytes read so far.
    ///
    /// Returns `Ok(None)` while more bytes are needed, and
    /// `Ok(Some((header, consumed)))` once the whole header is there; bytes
    /// after `consumed` are payload. The version is checked as soon as the
    /// first byte is there and the length as soon as the 3-byte prefix is, so
    /// a bad or oversized header is refused without waiting for its body.
    /// Allocates at most the declared body length (≤ [`MAX_HEADER_LEN`]).
    ///
    /// # Errors
    /// The first rule the header breaks, with the field and byte offset.
    pub fn decode(buf: &[u8]) -> Result<Option<(OpenHeader, usize)>, HeaderError> {
        let Some(&version) = buf.first() else {
            return Ok(None);
        };
        if version != VERSION {
            return Err(HeaderError::UnsupportedVersion { version });
        }
        let Some(&[_, hi, lo]) = buf.get(..PREFIX_LEN) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len > MAX_HEADER_LEN {
            return Err(HeaderError::TooLong { len });
        }
        let total = PREFIX_LEN + len;
        let Some(frame) = buf.get(..total) else {
            return Ok(None);
        };
        let header = parse_body(&mut Reader {
            frame,
            pos: PREFIX_LEN,
        })?;
        Ok(Some((header, total)))
    }
}

/// A cursor over one whole frame; offsets are from the version byte.
struct Reader<'a> {
    frame: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Takes `n` bytes of `field`, whose encoding started at `start`.
    fn take(&mut self, n: usize, field: Field, start: usize) -> Result<&'a [u8], HeaderError> {
        let bytes =
            self.frame
                .get(self.pos..self.pos.saturating_add(n))
                .ok_or(HeaderError::Truncated {
                    field,
                    offset: start,
                })?;
        self.pos += n;
        Ok(bytes)
    }

    fn u8(&mut self, field: Field, start: usize) -> Result<u8, HeaderError> {
        Ok(self.take(1, field, start)?[0])
    }

    fn u16(&mut self, field: Field, start: usize) -> Result<u16, HeaderError> {
        let b = self.take(2, field, start)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn remaining(&self) -> usize {
        self.frame.len().saturating_sub(self.pos)
    }
}

fn parse_body(r: &mut Reader<'_>) -> Result<OpenHeader, HeaderError> {
    let target_cluster = read_label(r, Field::TargetCluster)?;
    let namespace = read_label(r, Field::Namespace)?;
    let service = read_label(r, Field::Service)?;
    let start = r.pos;
    let port = r.u16(Field::Port, start)?;
    if port == 0 {
        return Err(HeaderError::ZeroPort { offset: start });
    }
    let start = r.pos;
    let id_len = usize::from(r.u16(Field::ExpectedIdentity, start)?);
    if id_len > MAX_ID_LEN {
        return Err(HeaderError::IdentityTooLong {
            len: id_len,
            offset: start,
        });
    }
    let id = r.take(id_len, Field::ExpectedIdentity, start)?;
    let id = std::str::from_utf8(id).map_err(|e| HeaderError::IdentityNotUtf8 {
        offset: start + 2 + e.valid_up_to(),
    })?;
    let expected_identity = SpiffeId::parse(id).map_err(|source| HeaderError::Identity {
        offset: start + 2,
        source,
    })?;
    let mut header = OpenHeader {
        target_cluster,
        namespace,
        service,
        port,
        expected_identity,
        traceparent: None,
        tracestate: None,
    };
    let mut seen = [false; 256];
    while r.remaining() > 0 {
        let start = r.pos;
        if r.remaining() < 3 {
            return Err(HeaderError::TrailingBytes {
                len: r.remaining(),
                offset: start,
            });
        }
        let ext_type = r.u8(Field::Extensions, start)?;
        let len = usize::from(r.u16(Field::Extensions, start)?);
        let value =
            r.take(len, Field::Extensions, start)
                .map_err(|_| HeaderError::ExtensionTruncated {
                    ext_type,
                    len,
                    offset: start,
                })?;
        if std::mem::replace(&mut seen[usize::from(ext_type)], true) {
            return Err(HeaderError::DuplicateExtension {
                ext_type,
                offset: start,
            });
        }
        match ext_type {
            EXT_TRACEPARENT => {
                check_traceparent(value, start + 3)?;
                header.traceparent = Some(ascii_string(value));
            }
            EXT_TRACESTATE => {
                check_tracestate(value, start + 3)?;
                header.tracestate = Some(ascii_string(value));
            }
            _ => {} // Unknown extensions are skipped (forward compatible).
        }
    }
    Ok(header)
}

/// Reads a u8-length-prefixed DNS label.
fn read_label(r: &mut Reader<'_>, field: Field) -> Result<String, HeaderError> {
    let start = r.pos;
    let len = usize::from(r.u8(field, start)?);
    let bytes = r.take(len, field, start)?;
    check_label(field, bytes, start)?;
    Ok(ascii_string(bytes))
}

fn put_label(out: &mut Vec<u8>, field: Field, label: &str) -> Result<(), HeaderError> {
    let bytes = label.as_bytes();
    check_label(field, bytes, out.len())?;
    // check_label bounds the length to 63.
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
    Ok(())
}

fn put_extension(out: &mut Vec<u8>, ext_type: u8, value: &[u8]) {
    out.push(ext_type);
    // Callers checked the value against its (≤ 512 byte) limit.
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
}

/// Checks a DNS label (RFC 1123 §2.1, lowercase) whose length prefix is at
/// `start`; the label itself starts at `start + 1`.
fn check_label(field: Field, bytes: &[u8], start: usize) -> Result<(), HeaderError> {
    if bytes.is_empty() {
        return Err(HeaderError::EmptyLabel {
            field,
            offset: start,
        });
    }
    if bytes.len() > MAX_LABEL_LEN {
        return Err(HeaderError::LabelTooLong {
            field,
            len: bytes.len(),
            offset: start,
        });
    }
    let at = start + 1;
    if let Some(i) = bytes
        .iter()
        .position(|b| !matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
    {
        return Err(HeaderError::LabelByte {
            field,
            byte: bytes[i],
            offset: at + i,
        });
    }
    if bytes[0] == b'-' {
        return Err(HeaderError::LabelHyphen { field, offset: at });
    }
    if bytes[bytes.len() - 1] == b'-' {
        return Err(HeaderError::LabelHyphen {
            field,
            offset: at + bytes.len() - 1,
        });
    }
    Ok(())
}

/// `version "-" trace-id "-" parent-id "-" flags`, lowercase hex
/// (W3C Trace Context §3.2.2).
fn check_traceparent(value: &[u8], offset: usize) -> Result<(), HeaderError> {
    let ok = value.len() == TRACEPARENT_LEN
        && value.iter().enumerate().all(|(i, b)| match i {
            2 | 35 | 52 => *b == b'-',
            _ => matches!(b, b'0'..=b'9' | b'a'..=b'f'),
        });
    if ok {
        Ok(())
    } else {
        Err(HeaderError::Traceparent { offset })
    }
}

/// At most 512 bytes of printable ASCII (W3C Trace Context §3.3.1).
fn check_tracestate(value: &[u8], offset: usize) -> Result<(), HeaderError> {
    if value.len() <= MAX_TRACESTATE_LEN && value.iter().all(|b| (0x20..=0x7e).contains(b)) {
        Ok(())
    } else {
        Err(HeaderError::Tracestate {
            len: value.len(),
            offset,
        })
    }
}

/// Bytes already checked to be ASCII, as a `String`.
fn ascii_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Bytes before the body: version (u8) and body length (u16).
pub const PREFIX_LEN: usize = 3;
/// Longest DNS label, in bytes (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// Extension type of the W3C `traceparent` (W3C Trace Context §3.2).
pub const EXT_TRACEPARENT: u8 = 1;
/// Extension type of the W3C `tracestate` (W3C Trace Context §3.3).
pub const EXT_TRACESTATE: u8 = 2;
/// Length of a version-00 `traceparent`, in bytes (W3C Trace Context §3.2).
pub const TRACEPARENT_LEN: usize = 55;
/// Longest `tracestate` carried, in bytes (W3C Trace Context §3.3.1.1).
pub const MAX_TRACESTATE_LEN: usize = 512;

#[cfg(test)]
#[path = "header_tests.rs"]
mod tests;
