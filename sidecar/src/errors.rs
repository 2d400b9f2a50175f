//! Proxy errors, classified, and the one rescue that maps them onto an HTTP
//! status and the `x-isthmus-error` header (STYLE.md habits 5–6;
//! docs/reference/data-path-config.md, "Endpoint choice").
//!
//! 503: nothing could take the request (no plan, every candidate refused by
//! a gateway). 502: the next hop failed (connect, TLS, tunnel, HTTP/2).
//! 504: a deadline passed.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use tunnel_proto::RejectReason;

use crate::http_util::{full, Body};
use crate::plan::PlanError;
use crate::tunnel::OpenError;

/// The response header naming why the sidecar answered with an error.
pub const ERROR_HEADER: &str = "x-isthmus-error";

/// Why a request or connection could not be proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No plan: unknown service, pinned cluster unavailable, no endpoint.
    #[error("no route")]
    Plan(#[from] PlanError),
    /// The gateway refused the tunnel stream (before any payload).
    #[error("gateway rejected the stream to cluster {cluster}: {reason}: {detail}")]
    Rejected {
        /// The target cluster.
        cluster: String,
        /// The reason code.
        reason: RejectReason,
        /// The gateway's detail.
        detail: String,
    },
    /// TCP connect to a sidecar failed.
    #[error("connect to {addr} failed")]
    Connect {
        /// The endpoint.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Connect + TLS handshake, or the tunnel open, took longer than
    /// `timeouts.connect_ms`.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The TLS handshake with the next sidecar failed.
    #[error("tls handshake with the upstream sidecar failed")]
    Tls(#[source] std::io::Error),
    /// The tunnel through the gateway failed (QUIC connection or stream).
    #[error("tunnel through the gateway failed")]
    Tunnel(#[source] OpenError),
    /// HTTP/2 toward the peer sidecar failed after the request was handed
    /// to the connection (send, response head).
    #[error("http/2 to the upstream sidecar failed")]
    Http(#[source] hyper::Error),
    /// The HTTP/2 handshake with the peer sidecar failed (nothing sent).
    #[error("http/2 handshake with the upstream sidecar failed")]
    Handshake(#[source] hyper::Error),
    /// The attempt's `retries.per_try_timeout_ms` passed before the
    /// response head arrived.
    #[error("per-try timeout")]
    PerTryTimeout,
    /// A circuit-breaker limit of the service is reached.
    #[error("circuit breaker overflow: {}", .0.as_str())]
    Overflow(crate::resilience::circuit::Limit),
    /// Reading the downstream request body (to keep it for replay) failed.
    #[error("reading the request body failed")]
    RequestBody(#[source] hyper::Error),
    /// `timeouts.request_ms` passed before the response head arrived.
    #[error("request timed out")]
    RequestTimeout,
    /// The downstream request cannot be carried (e.g. an upgrade).
    #[error("unsupported request: {0}")]
    Unsupported(&'static str),
}

/// Who is at fault, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next hop or beyond.
    Upstream,
    /// The caller.
    Downstream,
    /// Our own routing state (catalog, config).
    Local,
}

/// The HTTP answer to a [`ProxyError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescue {
    /// 400, 502, 503 or 504.
    pub status: StatusCode,
    /// The `x-isthmus-error` value (short, lowercase, ASCII).
    pub reason: &'static str,
    /// Who is at fault.
    pub fault: Fault,
}

impl ProxyError {
    /// Whether the next candidate of the plan may be tried: the request was
    /// not sent anywhere yet (connect, TLS, tunnel open or reject).
    pub fn try_next_candidate(&self) -> bool {
        match self {
            ProxyError::Rejected { .. }
            | ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout
            | ProxyError::Tls(_)
            | ProxyError::Tunnel(_)
            | ProxyError::Handshake(_) => true,
            ProxyError::Plan(_)
            | ProxyError::Http(_)
            | ProxyError::PerTryTimeout
            | ProxyError::Overflow(_)
            | ProxyError::RequestBody(_)
            | ProxyError::RequestTimeout
            | ProxyError::Unsupported(_) => false,
        }
    }

    /// The retry class of a failed attempt (STYLE.md habit 6): `None` for
    /// errors no attempt on another candidate can fix (no plan, overflow,
    /// a bad downstream request).
    pub fn failure(&self) -> Option<crate::resilience::retry::Failure> {
        use crate::resilience::retry::Failure;
        if self.try_next_candidate() {
            return Some(Failure::NotSent);
        }
        match self {
            ProxyError::Http(e) if is_refused(e) => Some(Failure::RefusedStream),
            ProxyError::Http(_) => Some(Failure::Reset),
            ProxyError::PerTryTimeout => Some(Failure::PerTryTimeout),
            _ => None,
        }
    }

    /// Converts a tunnel open failure.
    pub fn from_open(cluster: &str, e: OpenError) -> ProxyError {
        match e {
            OpenError::Rejected { reason, detail } => ProxyError::Rejected {
                cluster: cluster.to_owned(),
                reason,
                detail,
            },
            OpenError::TimedOut => ProxyError::ConnectTimeout,
            other => ProxyError::Tunnel(other),
        }
    }
}

/// Maps an error onto its status and reason.
pub fn rescue(e: &ProxyError) -> Rescue {
    use StatusCode as S;
    let (status, reason, fault) = match e {
        ProxyError::Plan(PlanError::UnknownService { .. }) => {
            (S::SERVICE_UNAVAILABLE, "unknown service", Fault::Local)
        }
        ProxyError::Plan(PlanError::ClusterUnavailable { .. }) => {
            (S::SERVICE_UNAVAILABLE, "cluster unavailable", Fault::Local)
        }
        ProxyError::Plan(PlanError::NoEndpoint { .. }) => {
            (S::SERVICE_UNAVAILABLE, "no healthy endpoint", Fault::Local)
        }
        ProxyError::Rejected { reason, .. } => (
            S::SERVICE_UNAVAILABLE,
            reject_reason(*reason),
            Fault::Upstream,
        ),
        ProxyError::Connect { .. } => (S::BAD_GATEWAY, "upstream connect failed", Fault::Upstream),
        ProxyError::ConnectTimeout => (
            S::GATEWAY_TIMEOUT,
            "upstream connect timeout",
            Fault::Upstream,
        ),
        ProxyError::Tls(_) => (
            S::BAD_GATEWAY,
            "upstream tls handshake failed",
            Fault::Upstream,
        ),
        ProxyError::Tunnel(_) => (S::BAD_GATEWAY, "gateway unavailable", Fault::Upstream),
        ProxyError::Http(e) if e.is_timeout() => {
            (S::GATEWAY_TIMEOUT, "upstream timeout", Fault::Upstream)
        }
        ProxyError::Http(_) | ProxyError::Handshake(_) => {
            (S::BAD_GATEWAY, "upstream protocol error", Fault::Upstream)
        }
        ProxyError::PerTryTimeout => (S::GATEWAY_TIMEOUT, "upstream timeout", Fault::Upstream),
        ProxyError::Overflow(_) => (S::SERVICE_UNAVAILABLE, "overflow", Fault::Local),
        ProxyError::RequestBody(_) => (S::BAD_REQUEST, "request body failed", Fault::Downstream),
        ProxyError::RequestTimeout => (S::GATEWAY_TIMEOUT, "request timeout", Fault::Upstream),
        ProxyError::Unsupported(_) => (S::BAD_REQUEST, "unsupported request", Fault::Downstream),
    };
    Rescue {
        status,
        reason,
        fault,
    }
}

/// Whether a send failure left the request unprocessed by the peer
/// (RFC 9113 §8.7): RST_STREAM with REFUSED_STREAM, or a graceful GOAWAY
/// (NO_ERROR) whose last stream id is below ours. A GOAWAY with an error
/// code also fails streams the peer may have processed, so it is a reset.
pub fn is_refused(e: &hyper::Error) -> bool {
    refused_in_chain(e)
}

/// [`is_refused`] over any error chain: decided by the first `h2::Error`.
fn refused_in_chain(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return match h2.reason() {
                Some(h2::Reason::REFUSED_STREAM) => true,
                Some(h2::Reason::NO_ERROR) => h2.is_go_away() && h2.is_remote(),
                _ => false,
            };
        }
        cur = err.source();
    }
    false
}

/// The wire text of a gateway reject reason, as the `x-isthmus-error` value.
fn reject_reason(r: RejectReason) -> &'static str {
    match r {
        RejectReason::Other(_) => "rejected by gateway",
        known => known.as_str(),
    }
}

/// The error response for `e`: status, `x-isthmus-error`, a short text body.
pub fn error_response(e: &ProxyError) -> Response<Body> {
    let r = rescue(e);
    let text = format!("{}: {}\n", r.reason, error_chain(e));
    let mut resp = Response::new(full(Bytes::from(text)));
    *resp.status_mut() = r.status;
    resp.headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static(r.reason));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// `e` and its sources joined with `: `, for logs and error bodies.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServiceKey;

    fn key() -> ServiceKey {
        ServiceKey::parse("default/backend").unwrap()
    }

    #[test]
    fn rescue_maps_each_class_to_its_status_and_reason() {
        let cases: Vec<(ProxyError, u16, &str)> = vec![
            (
                PlanError::UnknownService {
                    service: key(),
                    port: 1,
                }
                .into(),
                503,
                "unknown service",
            ),
            (
                PlanError::NoEndpoint { service: key() }.into(),
                503,
                "no healthy endpoint",
            ),
            (
                PlanError::ClusterUnavailable {
                    cluster: "b".into(),
                    service: key(),
                }
                .into(),
                503,
                "cluster unavailable",
            ),
            (
                ProxyError::Rejected {
                    cluster: "b".into(),
                    reason: RejectReason::NotExported,
                    detail: "no".into(),
                },
                503,
                "not exported to you",
            ),
            (
                ProxyError::Rejected {
                    cluster: "b".into(),
                    reason: RejectReason::Other(99),
                    detail: String::new(),
                },
                503,
                "rejected by gateway",
            ),
            (
                ProxyError::Connect {
                    addr: "127.0.0.1:1".parse().unwrap(),
                    source: std::io::ErrorKind::ConnectionRefused.into(),
                },
                502,
                "upstream connect failed",
            ),
            (ProxyError::ConnectTimeout, 504, "upstream connect timeout"),
            (
                ProxyError::Tls(std::io::ErrorKind::InvalidData.into()),
                502,
                "upstream tls handshake failed",
            ),
            (
                ProxyError::Tunnel(OpenError::Closed),
                502,
                "gateway unavailable",
            ),
            (ProxyError::RequestTimeout, 504, "request timeout"),
            (ProxyError::PerTryTimeout, 504, "upstream timeout"),
            (
                ProxyError::Overflow(crate::resilience::circuit::Limit::Requests),
                503,
                "overflow",
            ),
            (
                ProxyError::Unsupported("upgrade"),
                400,
                "unsupported request",
            ),
        ];
        for (e, status, reason) in cases {
            let r = rescue(&e);
            assert_eq!(r.status.as_u16(), status, "{e}");
            assert_eq!(r.reason, reason, "{e}");
            let resp = error_response(&e);
            assert_eq!(resp.status().as_u16(), status);
            assert_eq!(resp.headers()[ERROR_HEADER], reason);
        }
    }

    #[test]
    fn only_failures_before_sending_move_to_the_next_candidate() {
        assert!(ProxyError::ConnectTimeout.try_next_candidate());
        assert!(ProxyError::Tunnel(OpenError::Closed).try_next_candidate());
        assert!(ProxyError::Rejected {
            cluster: "b".into(),
            reason: RejectReason::NoHealthyEndpoint,
            detail: String::new()
        }
        .try_next_candidate());
        assert!(!ProxyError::RequestTimeout.try_next_candidate());
        assert!(!ProxyError::PerTryTimeout.try_next_candidate());
        assert!(!ProxyError::Plan(PlanError::NoEndpoint { service: key() }).try_next_candidate());
    }

    #[test]
    fn only_refused_streams_count_as_unprocessed() {
        let refused = h2::Error::from(h2::Reason::REFUSED_STREAM);
        assert!(refused_in_chain(&refused));
        let internal = h2::Error::from(h2::Reason::INTERNAL_ERROR);
        assert!(!refused_in_chain(&internal));
        // A reset with NO_ERROR that is not a GOAWAY may have been processed.
        assert!(!refused_in_chain(&h2::Error::from(h2::Reason::NO_ERROR)));
        let io = std::io::Error::other("broken pipe");
        assert!(!refused_in_chain(&io));
        // Wrapped (as hyper wraps it): found through the source chain.
        #[derive(Debug, thiserror::Error)]
        #[error("wrapper")]
        struct Wrap(#[source] h2::Error);
        assert!(refused_in_chain(&Wrap(refused)));
    }

    #[test]
    fn open_errors_keep_the_reject_reason() {
        let e = ProxyError::from_open(
            "b",
            OpenError::Rejected {
                reason: RejectReason::Overloaded,
                detail: "busy".into(),
            },
        );
        assert!(matches!(
            e,
            ProxyError::Rejected {
                reason: RejectReason::Overloaded,
                ..
            }
        ));
        assert!(matches!(
            ProxyError::from_open("b", OpenError::TimedOut),
            ProxyError::ConnectTimeout
        ));
    }
}
