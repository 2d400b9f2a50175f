//! Reading the facts our proxies need out of decoded xDS resources: the
//! socket address of an lb endpoint and string values in Isthmus metadata
//! filters ([`crate::xds`] names them). Pure functions, lowercase errors.

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Metadata};
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, LbEndpoint};
use envoy_types::pb::google::protobuf::{value, Struct, Value};

/// `HealthStatus.UNKNOWN` and `HEALTHY`: endpoints that may take traffic.
pub fn is_usable(endpoint: &LbEndpoint) -> bool {
    matches!(endpoint.health_status, 0 | 1)
}

/// The `ip:port` of an lb endpoint (IP literals only; our controller never
/// sends names).
///
/// # Errors
/// A lowercase message naming what is missing or malformed.
pub fn socket_addr(endpoint: &LbEndpoint) -> Result<SocketAddr, String> {
    let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &endpoint.host_identifier else {
        return Err("endpoint: missing (named endpoints are not supported)".to_owned());
    };
    let Some(address::Address::SocketAddress(sa)) =
        ep.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        return Err("endpoint.address: not a socket address".to_owned());
    };
    let ip: IpAddr = sa
        .address
        .parse()
        .map_err(|_| format!("endpoint.address: {:?} is not an IP address", sa.address))?;
    let port = match sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("endpoint.address: port {p} is not 1-65535"))?,
        _ => return Err("endpoint.address: no port_value".to_owned()),
    };
    Ok(SocketAddr::new(ip, port))
}

/// The `host:port` of an lb endpoint, where the host may be a DNS name
/// (e.g. a peer gateway's `STRICT_DNS` address); IPv6 literals come back
/// bracketed.
///
/// # Errors
/// A lowercase message naming what is missing or malformed.
pub fn host_port(endpoint: &LbEndpoint) -> Result<String, String> {
    let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &endpoint.host_identifier else {
        return Err("endpoint: missing (named endpoints are not supported)".to_owned());
    };
    let Some(address::Address::SocketAddress(sa)) =
        ep.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        return Err("endpoint.address: not a socket address".to_owned());
    };
    let port = match sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("endpoint.address: port {p} is not 1-65535"))?,
        _ => return Err("endpoint.address: no port_value".to_owned()),
    };
    let host = sa.address.as_str();
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(format!("endpoint.address: {host:?} is not a host"));
    }
    Ok(match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    })
}

/// The metadata filter `filter`, if present.
pub fn filter<'a>(metadata: Option<&'a Metadata>, filter: &str) -> Option<&'a Struct> {
    metadata.and_then(|m| m.filter_metadata.get(filter))
}

/// A string field of a metadata struct.
///
/// # Errors
/// The field is missing or not a non-empty string.
pub fn string_field<'a>(s: &'a Struct, key: &str) -> Result<&'a str, String> {
    match s.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(value::Kind::StringValue(v)) if !v.is_empty() => Ok(v),
        Some(_) => Err(format!("{key}: not a non-empty string")),
        None => Err(format!("{key}: missing")),
    }
}

/// An optional string field (absent or empty = `None`).
///
/// # Errors
/// The field is present but not a string.
pub fn opt_string_field<'a>(s: &'a Struct, key: &str) -> Result<Option<&'a str>, String> {
    match s.fields.get(key).and_then(|v| v.kind.as_ref()) {
        None | Some(value::Kind::NullValue(_)) => Ok(None),
        Some(value::Kind::StringValue(v)) if v.is_empty() => Ok(None),
        Some(value::Kind::StringValue(v)) => Ok(Some(v)),
        Some(_) => Err(format!("{key}: not a string")),
    }
}

/// A list-of-strings field.
///
/// # Errors
/// The field is missing, not a list, or has a non-string element.
pub fn string_list_field(s: &Struct, key: &str) -> Result<Vec<String>, String> {
    match s.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(value::Kind::ListValue(list)) => list
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| match &v.kind {
                Some(value::Kind::StringValue(s)) => Ok(s.clone()),
                _ => Err(format!("{key}[{i}]: not a string")),
            })
            .collect(),
        Some(_) => Err(format!("{key}: not a list")),
        None => Err(format!("{key}: missing")),
    }
}

/// A `google.protobuf.Value` holding the string `s` (metadata builders).
pub fn string_value(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s.to_owned())),
    }
}

/// A `google.protobuf.Value` holding the number `n` (metadata builders;
/// protobuf's JSON numbers are `f64`).
pub fn number_value(n: f64) -> Value {
    Value {
        kind: Some(value::Kind::NumberValue(n)),
    }
}

/// Builders for tests and fakes: a metadata struct of string fields.
pub fn string_struct<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Struct {
    Struct {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), string_value(v)))
            .collect(),
    }
}
