//! HTTP helpers shared by the inbound and outbound stacks: the body type,
//! hop-by-hop header removal (RFC 9110 §7.6.1, RFC 9113 §8.2.2) and the
//! request rewrite for HTTP/2 between sidecars.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Version};
use http_body_util::{BodyExt, Full};

/// The body type on every proxied request and response: streamed, never
/// buffered.
pub type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Headers that describe one connection and must not be forwarded.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Removes hop-by-hop headers: those listed above, those named in
/// `Connection`, and `TE` unless its value is exactly `trailers` (the only
/// value HTTP/2 allows; gRPC needs it).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Fast path: almost no request or response carries any of these. One
    // pass over the (few) names present is far cheaper than a hashed
    // removal per listed name, and this runs twice per hop.
    if !headers.keys().any(is_hop_by_hop_or_te) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if name != header::TE {
            headers.remove(&name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

fn is_hop_by_hop_or_te(name: &HeaderName) -> bool {
    name == header::TE || HOP_BY_HOP.iter().any(|h| name == *h)
}

/// `uri`'s path and query (`/` when it has none) as an absolute
/// `http://<authority>` URI.
///
/// # Errors
/// The authority is not valid.
pub fn http_uri(uri: &Uri, authority: Authority) -> Result<Uri, http::Error> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(path)
        .build()
}

/// Rewrites a downstream request (HTTP/1.1 or HTTP/2) for the HTTP/2
/// connection to the peer sidecar: absolute URI with scheme `http` and the
/// authority from the URI or `Host` (else `fallback_authority`), `Host`
/// removed (it becomes `:authority`), hop-by-hop headers removed.
///
/// # Errors
/// The authority is not valid.
pub fn to_h2_request<B>(
    req: Request<B>,
    fallback_authority: &str,
) -> Result<Request<B>, http::Error> {
    let (mut parts, body) = req.into_parts();
    let authority: Authority = match parts.uri.authority() {
        Some(a) => a.clone(),
        None => match parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty())
        {
            Some(h) => h.parse()?,
            None => fallback_authority.parse()?,
        },
    };
    parts.uri = http_uri(&parts.uri, authority)?;
    parts.version = Version::HTTP_2;
    parts.headers.remove(header::HOST);
    strip_hop_by_hop(&mut parts.headers);
    Ok(Request::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_but_te_trailers_stays() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed_and_others_stay() {
        for name in HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("x"));
            h.insert("x-keep", HeaderValue::from_static("yes"));
            h.insert("content-type", HeaderValue::from_static("text/plain"));
            strip_hop_by_hop(&mut h);
            assert!(h.get(name).is_none(), "{name} must go");
            assert_eq!(h.len(), 2, "{name}: only it goes");
        }
    }

    #[test]
    fn te_other_than_trailers_is_removed() {
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("gzip, trailers"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("te").is_none());
    }

    #[test]
    fn h1_request_becomes_absolute_h2_request_with_host_as_authority() {
        let req = Request::builder()
            .uri("/a/b?c=1")
            .header("host", "backend.default:8080")
            .header("connection", "keep-alive")
            .version(Version::HTTP_11)
            .body(())
            .unwrap();
        let out = to_h2_request(req, "fallback").unwrap();
        assert_eq!(out.uri(), "http://backend.default:8080/a/b?c=1");
        assert_eq!(out.version(), Version::HTTP_2);
        assert!(out.headers().get("host").is_none());
        assert!(out.headers().get("connection").is_none());
    }

    #[test]
    fn missing_host_uses_the_fallback_and_h2_authority_is_kept() {
        let req = Request::builder().uri("/x").body(()).unwrap();
        let out = to_h2_request(req, "backend.default").unwrap();
        assert_eq!(out.uri(), "http://backend.default/x");
        let req = Request::builder()
            .uri("https://api.example:443/y")
            .body(())
            .unwrap();
        let out = to_h2_request(req, "fallback").unwrap();
        assert_eq!(out.uri(), "http://api.example:443/y");
    }

    #[test]
    fn a_bad_host_is_an_error() {
        let req = Request::builder()
            .uri("/x")
            .header("host", "bad host")
            .body(())
            .unwrap();
        assert!(to_h2_request(req, "fallback").is_err());
    }
}
