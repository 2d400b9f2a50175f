//! String formats checked by the schema: each returns the reason a value is
//! rejected, worded as Kubernetes words it.

use std::net::IpAddr;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Longest DNS-1123 label.
pub(crate) const LABEL_MAX: usize = 63;

/// A DNS-1123 label: at most 63 lowercase alphanumerics or '-', starting and
/// ending with an alphanumeric.
pub(crate) fn dns_label(s: &str) -> Result<(), String> {
    if s.len() > LABEL_MAX {
        return Err(format!("must be no more than {LABEL_MAX} characters"));
    }
    let ok_char = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    let well_formed = match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            ok_char(first) && ok_char(last) && b.iter().all(|&c| ok_char(c) || c == b'-')
        }
        _ => false,
    };
    if well_formed {
        Ok(())
    } else {
        Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
             and must start and end with an alphanumeric character"
            .to_owned())
    }
}

/// An RFC 3339 timestamp such as `2025-01-02T03:04:05Z`.
pub(crate) fn rfc3339(s: &str) -> Result<(), String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(drop)
        .map_err(|_| "must be an RFC 3339 timestamp such as 2025-01-02T03:04:05Z".to_owned())
}

/// An IPv4 or IPv6 address.
pub(crate) fn ip(s: &str) -> Result<(), String> {
    s.parse::<IpAddr>()
        .map(drop)
        .map_err(|_| "must be a valid IP address".to_owned())
}

/// An `https://host[:port][/path]` URL.
pub(crate) fn https_url(s: &str) -> Result<(), String> {
    let err = || "must be an https URL with a host, such as https://host:8443/bundle".to_owned();
    let rest = s.strip_prefix("https://").ok_or_else(err)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return Err(err());
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !authority.ends_with(']') => {
            if host.is_empty() || !valid_port(port) {
                return Err(err());
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A `host:port` or `[v6]:port` address with a port between 1 and 65535.
pub(crate) fn host_port(s: &str) -> Result<(), String> {
    let err = || "must be host:port with a port between 1 and 65535".to_owned();
    let (host, port) = s.rsplit_once(':').ok_or_else(err)?;
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
        }
    };
    if host_ok && valid_port(port) {
        Ok(())
    } else {
        Err(err())
    }
}

/// A SPIFFE trust domain: lowercase letters, digits, '.', '-' and '_'.
pub(crate) fn trust_domain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-' || c == b'_'
        });
    if ok {
        Ok(())
    } else {
        Err(
            "a trust domain must consist of lower case letters, digits, '.', '-' and '_'"
                .to_owned(),
        )
    }
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0)
}
