//! SPIFFE IDs and trust domains (SPIFFE-ID §2).
//!
//! [`SpiffeId::parse`] and [`TrustDomain::parse`] enforce every rule of the
//! standard and report the first one broken, with the byte offset where it
//! applies. The scheme and the trust domain are case-insensitive (§2.4): they
//! are normalized to lowercase, so every ID this crate emits is lowercase in
//! those parts. Paths are case-sensitive and kept as given.

use std::fmt;
use std::str::FromStr;

/// Longest SPIFFE ID accepted or generated, in bytes (SPIFFE-ID §2.3).
pub const MAX_ID_LEN: usize = 2048;
/// Longest trust domain name accepted or generated, in bytes (SPIFFE-ID §2.3).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

const SCHEME: &str = "spiffe://";

/// A SPIFFE trust domain name such as `cluster-a.mesh` (SPIFFE-ID §2.1).
///
/// Valid by construction: non-empty, at most 255 bytes, only `[a-z0-9._-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(Box<str>);

/// A SPIFFE ID: `spiffe://<trust-domain>[/<segment>...]` (SPIFFE-ID §2).
///
/// Valid by construction. The ID of a trust domain itself has an empty path;
/// workload IDs (X509-SVID §3.1) have a non-empty one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: Box<str>,
    /// Byte length of the trust domain, which starts right after the scheme.
    td_len: usize,
}

/// Why a string is not a valid SPIFFE ID or trust domain. Offsets are byte
/// offsets into the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The input was empty.
    #[error("empty SPIFFE ID")]
    Empty,
    /// The scheme is not `spiffe://` (SPIFFE-ID §2).
    #[error("scheme must be \"spiffe://\"")]
    WrongScheme,
    /// No trust domain between `spiffe://` and the path (SPIFFE-ID §2.1).
    #[error("trust domain is missing")]
    MissingTrustDomain,
    /// The authority carries userinfo (`user@`), which SPIFFE-ID §2.1 forbids.
    #[error("trust domain must not contain userinfo ('@' at byte {0})")]
    UserInfo(usize),
    /// The authority carries a port (`:`), which SPIFFE-ID §2.1 forbids.
    #[error("trust domain must not contain a port (':' at byte {0})")]
    Port(usize),
    /// Percent-encoding is not allowed anywhere (SPIFFE-ID §2.1, §2.2).
    #[error("percent-encoding is not allowed ('%' at byte {0})")]
    PercentEncoded(usize),
    /// A trust domain character outside `[a-z0-9._-]` (SPIFFE-ID §2.1).
    #[error("invalid trust domain character {ch:?} at byte {at}; only a-z, 0-9, '.', '-' and '_' are allowed")]
    TrustDomainChar {
        /// The offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`] bytes.
    #[error("trust domain is {0} bytes long; at most 255 are allowed")]
    TrustDomainTooLong(usize),
    /// A query (`?`) or fragment (`#`) is present (SPIFFE-ID §2).
    #[error("query and fragment are not allowed (byte {0})")]
    QueryOrFragment(usize),
    /// The path has an empty segment, `//` (SPIFFE-ID §2.2).
    #[error("path has an empty segment at byte {0}")]
    EmptySegment(usize),
    /// The path has a `.` or `..` segment (SPIFFE-ID §2.2).
    #[error("path has a '.' or '..' segment at byte {0}")]
    DotSegment(usize),
    /// The path ends with `/` (SPIFFE-ID §2.2).
    #[error("path must not end with '/'")]
    TrailingSlash,
    /// A path character outside `[a-zA-Z0-9._-]` (SPIFFE-ID §2.2).
    #[error("invalid path character {ch:?} at byte {at}; only a-z, A-Z, 0-9, '.', '-' and '_' are allowed")]
    PathChar {
        /// The offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
    /// The whole ID is longer than [`MAX_ID_LEN`] bytes (SPIFFE-ID §2.3).
    #[error("SPIFFE ID is {0} bytes long; at most 2048 are allowed")]
    TooLong(usize),
}

impl TrustDomain {
    /// Parses a bare trust domain name (`cluster-a.mesh`) or the ID of a trust
    /// domain (`spiffe://cluster-a.mesh`). Uppercase letters are lowercased.
    ///
    /// # Errors
    /// The first SPIFFE-ID §2.1 rule the input breaks.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        if has_scheme(input) {
            let id = SpiffeId::parse(input)?;
            if !id.path().is_empty() {
                return Err(IdError::PathChar {
                    ch: '/',
                    at: SCHEME.len() + id.td_len,
                });
            }
            return Ok(id.trust_domain());
        }
        let td = check_trust_domain(input, 0)?;
        Ok(TrustDomain(td.into()))
    }

    /// The trust domain name, always lowercase.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of the trust domain itself, `spiffe://<name>`, as used in
    /// bundle maps and in signing certificates (X509-SVID §3.2).
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            id: format!("{SCHEME}{}", self.0).into(),
            td_len: self.0.len(),
        }
    }

    /// Builds a workload ID in this trust domain from path segments, each
    /// checked against SPIFFE-ID §2.2.
    ///
    /// # Errors
    /// A segment breaks §2.2, or the result is longer than 2048 bytes.
    pub fn workload<S: AsRef<str>>(&self, segments: &[S]) -> Result<SpiffeId, IdError> {
        let mut id = format!("{SCHEME}{}", self.0);
        for segment in segments {
            id.push('/');
            id.push_str(segment.as_ref());
        }
        let parsed = SpiffeId::parse(&id)?;
        if parsed.trust_domain_str() != self.as_str()
            || parsed.path().matches('/').count() != segments.len()
        {
            // A segment smuggled in a '/' or an authority character.
            return Err(IdError::PathChar {
                ch: '/',
                at: SCHEME.len() + self.0.len(),
            });
        }
        Ok(parsed)
    }

    /// The conventional Isthmus workload ID,
    /// `spiffe://<td>/ns/<namespace>/sa/<service-account>` (DESIGN.md).
    ///
    /// # Errors
    /// `namespace` or `service_account` is not a valid path segment.
    pub fn service_account(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, IdError> {
        self.workload(&["ns", namespace, "sa", service_account])
    }
}

impl SpiffeId {
    /// Parses a SPIFFE ID. The scheme and trust domain are lowercased
    /// (SPIFFE-ID §2.4); the path is kept as given.
    ///
    /// # Errors
    /// The first SPIFFE-ID §2 rule the input breaks.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        if input.is_empty() {
            return Err(IdError::Empty);
        }
        if input.len() > MAX_ID_LEN {
            return Err(IdError::TooLong(input.len()));
        }
        if !has_scheme(input) {
            return Err(IdError::WrongScheme);
        }
        if let Some(at) = input.find(['?', '#']) {
            return Err(IdError::QueryOrFragment(at));
        }
        let rest = &input[SCHEME.len()..];
        let td_end = rest.find('/').unwrap_or(rest.len());
        let td = check_trust_domain(&rest[..td_end], SCHEME.len())?;
        check_path(&rest[td_end..], SCHEME.len() + td_end)?;
        let mut id = String::with_capacity(input.len());
        id.push_str(SCHEME);
        id.push_str(&td);
        id.push_str(&rest[td_end..]);
        Ok(SpiffeId {
            id: id.into(),
            td_len: td.len(),
        })
    }

    /// The whole ID, e.g. `spiffe://cluster-a.mesh/ns/default/sa/web`.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The trust domain this ID belongs to.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_str().into())
    }

    /// The trust domain name, borrowed.
    pub fn trust_domain_str(&self) -> &str {
        &self.id[SCHEME.len()..SCHEME.len() + self.td_len]
    }

    /// The path including its leading `/`; empty for a trust domain's own ID.
    pub fn path(&self) -> &str {
        &self.id[SCHEME.len() + self.td_len..]
    }

    /// Whether this ID is in trust domain `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain_str() == td.as_str()
    }
}

fn has_scheme(input: &str) -> bool {
    input
        .get(..SCHEME.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(SCHEME))
}

/// Checks a trust domain name starting at byte `base` of the whole input and
/// returns it lowercased.
fn check_trust_domain(td: &str, base: usize) -> Result<String, IdError> {
    if td.is_empty() {
        return Err(IdError::MissingTrustDomain);
    }
    for (i, ch) in td.char_indices() {
        let at = base + i;
        match ch {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => {}
            '@' => return Err(IdError::UserInfo(at)),
            ':' => return Err(IdError::Port(at)),
            '%' => return Err(IdError::PercentEncoded(at)),
            ch => return Err(IdError::TrustDomainChar { ch, at }),
        }
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(IdError::TrustDomainTooLong(td.len()));
    }
    Ok(td.to_ascii_lowercase())
}

/// Checks a path (empty, or starting with `/`) starting at byte `base`.
fn check_path(path: &str, base: usize) -> Result<(), IdError> {
    if path.is_empty() {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(IdError::TrailingSlash);
    }
    let mut offset = base + 1;
    for segment in path[1..].split('/') {
        if segment.is_empty() {
            return Err(IdError::EmptySegment(offset));
        }
        if segment == "." || segment == ".." {
            return Err(IdError::DotSegment(offset));
        }
        for (i, ch) in segment.char_indices() {
            match ch {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => {}
                '%' => return Err(IdError::PercentEncoded(offset + i)),
                ch => return Err(IdError::PathChar { ch, at: offset + i }),
            }
        }
        offset += segment.len() + 1;
    }
    Ok(())
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.id)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        SpiffeId::parse(s)
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        TrustDomain::parse(s)
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.id)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        SpiffeId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for TrustDomain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TrustDomain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TrustDomain::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn id1_scheme_must_be_spiffe_and_no_query_or_fragment() {
        assert_eq!(SpiffeId::parse("https://td/a"), Err(IdError::WrongScheme));
        assert_eq!(SpiffeId::parse("spiffe:/td/a"), Err(IdError::WrongScheme));
        assert_eq!(
            SpiffeId::parse("spiffe://td/a?x=1"),
            Err(IdError::QueryOrFragment(13))
        );
        assert_eq!(
            SpiffeId::parse("spiffe://td/a#f"),
            Err(IdError::QueryOrFragment(13))
        );
        assert_eq!(SpiffeId::parse(""), Err(IdError::Empty));
    }

    #[test]
    fn id2_trust_domain_must_not_be_empty() {
        assert_eq!(
            SpiffeId::parse("spiffe:///a"),
            Err(IdError::MissingTrustDomain)
        );
        assert_eq!(
            SpiffeId::parse("spiffe://"),
            Err(IdError::MissingTrustDomain)
        );
        assert_eq!(TrustDomain::parse(""), Err(IdError::MissingTrustDomain));
    }

    #[test]
    fn id3_no_userinfo_or_port() {
        assert_eq!(
            SpiffeId::parse("spiffe://u@td/a"),
            Err(IdError::UserInfo(10))
        );
        assert_eq!(SpiffeId::parse("spiffe://td:443/a"), Err(IdError::Port(11)));
        assert_eq!(SpiffeId::parse("spiffe://td:/a"), Err(IdError::Port(11)));
    }

    #[test]
    fn id4_trust_domain_charset_is_checked_for_every_ascii_byte() {
        for b in 0u8..=127 {
            let ch = b as char;
            let input = format!("spiffe://a{ch}b/x");
            let result = SpiffeId::parse(&input);
            let allowed = ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch);
            if allowed {
                assert!(result.is_ok(), "{input:?} must parse");
            } else if ch.is_ascii_uppercase() {
                // §2.4: case-insensitive, normalized to lowercase.
                let expected = format!("spiffe://a{}b/x", ch.to_ascii_lowercase());
                assert_eq!(result.unwrap().as_str(), expected);
            } else if ch == '/' {
                // Ends the trust domain; "b/x" is then the path.
                assert!(result.is_ok());
            } else {
                assert!(result.is_err(), "{input:?} must be rejected");
            }
        }
        assert_eq!(
            SpiffeId::parse("spiffe://t%41d/a"),
            Err(IdError::PercentEncoded(10))
        );
        assert_eq!(
            SpiffeId::parse("spiffe://tÉd/a"),
            Err(IdError::TrustDomainChar { ch: 'É', at: 10 })
        );
    }

    #[test]
    fn id5_trust_domain_is_emitted_lowercase() {
        let id = SpiffeId::parse("SPIFFE://Cluster-A.MESH/ns/Default").unwrap();
        assert_eq!(id.as_str(), "spiffe://cluster-a.mesh/ns/Default");
        assert_eq!(id.trust_domain().as_str(), "cluster-a.mesh");
        assert_eq!(
            TrustDomain::parse("EXAMPLE.org").unwrap().as_str(),
            "example.org"
        );
        assert_eq!(
            TrustDomain::parse("spiffe://EXAMPLE.org").unwrap().as_str(),
            "example.org"
        );
    }

    #[test]
    fn id6_path_has_no_empty_dot_trailing_or_percent_segments() {
        assert_eq!(
            SpiffeId::parse("spiffe://td/a//b"),
            Err(IdError::EmptySegment(14))
        );
        assert_eq!(
            SpiffeId::parse("spiffe://td/a/"),
            Err(IdError::TrailingSlash)
        );
        assert_eq!(SpiffeId::parse("spiffe://td/"), Err(IdError::TrailingSlash));
        assert_eq!(
            SpiffeId::parse("spiffe://td/./a"),
            Err(IdError::DotSegment(12))
        );
        assert_eq!(
            SpiffeId::parse("spiffe://td/a/.."),
            Err(IdError::DotSegment(14))
        );
        assert_eq!(
            SpiffeId::parse("spiffe://td/a%20b"),
            Err(IdError::PercentEncoded(13))
        );
        assert!(SpiffeId::parse("spiffe://td/.a/..b/c.").is_ok());
    }

    #[test]
    fn id7_path_charset_is_checked_for_every_ascii_byte() {
        for b in 0u8..=127 {
            let ch = b as char;
            let input = format!("spiffe://td/a{ch}b");
            let allowed = ch.is_ascii_alphanumeric() || "._-/".contains(ch);
            assert_eq!(SpiffeId::parse(&input).is_ok(), allowed, "{input:?}");
        }
    }

    #[test]
    fn id8_length_limits() {
        let prefix = "spiffe://td/";
        let id = format!("{prefix}{}", "a".repeat(MAX_ID_LEN - prefix.len()));
        assert_eq!(SpiffeId::parse(&id).unwrap().as_str().len(), 2048);
        let long = format!("{id}b");
        assert_eq!(SpiffeId::parse(&long), Err(IdError::TooLong(2049)));
        let td = TrustDomain::parse("td").unwrap();
        let seg = "a".repeat(2048 - prefix.len() + 1);
        assert_eq!(td.workload(&[seg.as_str()]), Err(IdError::TooLong(2049)));
        assert!(TrustDomain::parse(&"a".repeat(255)).is_ok());
        assert_eq!(
            TrustDomain::parse(&"a".repeat(256)),
            Err(IdError::TrustDomainTooLong(256))
        );
    }

    #[test]
    fn id9_ip_looking_trust_domains_are_plain_names() {
        let id = SpiffeId::parse("spiffe://10.0.0.1/a").unwrap();
        assert_eq!(id.trust_domain_str(), "10.0.0.1");
    }

    #[test]
    fn accessors_and_builders() {
        let td = TrustDomain::parse("cluster-a.mesh").unwrap();
        let id = td.service_account("default", "frontend").unwrap();
        assert_eq!(
            id.as_str(),
            "spiffe://cluster-a.mesh/ns/default/sa/frontend"
        );
        assert_eq!(id.path(), "/ns/default/sa/frontend");
        assert!(id.is_member_of(&td));
        assert!(!id.is_member_of(&TrustDomain::parse("cluster-b.mesh").unwrap()));
        assert_eq!(td.id().as_str(), "spiffe://cluster-a.mesh");
        assert_eq!(td.id().path(), "");
        assert!(td.workload(&["a/b"]).is_err());
        assert!(td.workload(&[""]).is_err());
        assert!(TrustDomain::parse("spiffe://td/a").is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<SpiffeId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SpiffeId>("\"spiffe://td/a/\"").is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(s in "\\PC{0,80}") {
            if let Ok(id) = SpiffeId::parse(&s) {
                prop_assert_eq!(SpiffeId::parse(id.as_str()).unwrap(), id.clone());
                prop_assert!(!id.trust_domain_str().chars().any(|c| c.is_ascii_uppercase()));
            }
        }

        #[test]
        fn valid_ids_parse(td in "[a-z0-9._-]{1,20}", segs in proptest::collection::vec("[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,10}", 0..5)) {
            let s = format!("spiffe://{td}{}", segs.iter().map(|s| format!("/{s}")).collect::<String>());
            let id = SpiffeId::parse(&s).unwrap();
            prop_assert_eq!(id.as_str(), s.as_str());
        }
    }
}
