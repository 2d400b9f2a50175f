//! The SPIFFE Federation bundle endpoint (SPIFFE Federation §5;
//! Trust Domain and Bundle §5.2): a server that publishes this trust
//! domain's bundle, and a client that keeps a peer's bundle fresh.
//!
//! Server: HTTPS with the `https_spiffe` profile: it presents its own SVID
//! and asks for no client certificate (§5.2.2.3); `GET <path>` answers the
//! latest bundle as UTF-8 JSON (F-7).
//!
//! Client: [`BundleEndpointClient`] knows the URL, the profile and the trust
//! domain before it fetches (F-3). With `https_spiffe` it authenticates the
//! server as the configured endpoint SPIFFE ID against the bundle already
//! held in its [`BundleStore`] (F-9), and stores each bundle it fetches, so
//! the next fetch is authenticated with the latest one (F-10): a peer's root
//! rotation needs no operator step. With `https_web` it checks the server
//! against Web PKI roots and the URL's host name (F-8). Redirects are
//! followed (at most 3) only to `https` URLs without userinfo, with the same
//! authentication (F-5, F-11). A failed fetch keeps the last good bundle.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST, LOCATION};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::bundle::{Bundle, BundleError};
use crate::id::{SpiffeId, TrustDomain};
use crate::source::SvidSource;
use crate::verify::{Authorizer, BundleStore};

/// Largest bundle document accepted: 1 MiB.
pub const MAX_BUNDLE_BYTES: usize = 1 << 20;
/// Refresh interval when a bundle has no refresh hint: 5 minutes (Trust
/// Domain and Bundle §6.2).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// Redirects followed per fetch.
pub const MAX_REDIRECTS: usize = 3;
/// Time allowed for one whole fetch (connect, TLS, request, body): 10 s.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a fetch failed or an endpoint was misconfigured.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The URL is not `https://host[:port]/path` without userinfo (F-5).
    #[error("bundle endpoint URL {url:?} is invalid: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// TCP connect failed.
    #[error("connecting to {addr} failed")]
    Connect {
        /// host:port.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed, which includes an unauthenticated server.
    #[error("TLS handshake with {addr} failed")]
    Tls {
        /// host:port.
        addr: String,
        /// The error, with rustls' reason inside.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP request failed")]
    Http(#[source] hyper::Error),
    /// The server answered with a non-success status.
    #[error("bundle endpoint answered HTTP {0}")]
    Status(StatusCode),
    /// Too many redirects.
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    /// The body exceeded [`MAX_BUNDLE_BYTES`].
    #[error("bundle document is larger than {MAX_BUNDLE_BYTES} bytes")]
    TooLarge,
    /// The body is not a valid SPIFFE bundle.
    #[error("bundle document is invalid")]
    Bundle(#[source] BundleError),
    /// The whole fetch took longer than [`FETCH_TIMEOUT`].
    #[error("fetch timed out after {FETCH_TIMEOUT:?}")]
    Timeout,
    /// Binding the server's listener failed.
    #[error("binding the bundle endpoint listener failed")]
    Bind(#[source] std::io::Error),
    /// Building a TLS configuration failed.
    #[error("TLS configuration failed")]
    Config(#[source] rustls::Error),
}

/// How the client authenticates the endpoint (SPIFFE Federation §5.2).
#[derive(Clone)]
pub enum EndpointProfile {
    /// `https_spiffe`: the server presents an X509-SVID for this ID, checked
    /// against the bundle held for the ID's trust domain.
    HttpsSpiffe {
        /// The endpoint's SPIFFE ID.
        endpoint_id: SpiffeId,
    },
    /// `https_web`: Web PKI against these roots, with RFC 6125 host checks.
    HttpsWeb {
        /// Trusted Web PKI roots.
        roots: Arc<RootCertStore>,
    },
}

impl std::fmt::Debug for EndpointProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointProfile::HttpsSpiffe { endpoint_id } => {
                write!(f, "https_spiffe({endpoint_id})")
            }
            EndpointProfile::HttpsWeb { roots } => write!(f, "https_web({} roots)", roots.len()),
        }
    }
}

/// Web PKI roots from the operating system's store, for [`EndpointProfile::HttpsWeb`].
pub fn native_web_roots() -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let loaded = rustls_native_certs::load_native_certs();
    for e in &loaded.errors {
        tracing::warn!(error = %e, "could not load a native root certificate");
    }
    let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
    tracing::debug!(added, ignored, "loaded native Web PKI roots");
    Arc::new(roots)
}

/// What the client knows of a peer's bundle endpoint before fetching (F-3).
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The trust domain whose bundle is served there.
    pub trust_domain: TrustDomain,
    /// `https://host[:port]/path`.
    pub url: String,
    /// How to authenticate the server.
    pub profile: EndpointProfile,
}

/// What the client reports about its last fetches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointStatus {
    /// When the last fetch succeeded.
    pub last_success: Option<SystemTime>,
    /// `spiffe_sequence` of the bundle held.
    pub sequence: Option<u64>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// The last error, rendered.
    pub last_error: Option<String>,
}

/// Keeps one peer trust domain's bundle fresh from its bundle endpoint.
#[derive(Debug)]
pub struct BundleEndpointClient {
    config: EndpointConfig,
    store: BundleStore,
    status: Mutex<EndpointStatus>,
}

impl BundleEndpointClient {
    /// A client for `config` that stores fetched bundles in `store`. For
    /// `https_spiffe`, `store` must already hold the bundle of the endpoint
    /// ID's trust domain (seeded out of band, as `meshctl link` does).
    ///
    /// # Errors
    /// The URL is not a valid `https` URL without userinfo.
    pub fn new(config: EndpointConfig, store: BundleStore) -> Result<Self, EndpointError> {
        parse_url(&config.url)?;
        Ok(BundleEndpointClient {
            config,
            store,
            status: Mutex::new(EndpointStatus::default()),
        })
    }

    /// The status of the last fetches.
    pub fn status(&self) -> EndpointStatus {
        match self.status.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Fetches the bundle once, stores it on success, and records the outcome.
    ///
    /// # Errors
    /// Any [`EndpointError`]; the last good bundle stays in the store.
    pub async fn refresh(&self) -> Result<Bundle, EndpointError> {
        let result = match tokio::time::timeout(FETCH_TIMEOUT, self.fetch()).await {
            Ok(r) => r,
            Err(_) => Err(EndpointError::Timeout),
        };
        let mut status = match self.status.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match &result {
            Ok(bundle) => {
                self.store.set(bundle.clone());
                status.last_success = Some(SystemTime::now());
                status.sequence = Some(bundle.sequence());
                status.consecutive_failures = 0;
                status.last_error = None;
            }
            Err(e) => {
                status.consecutive_failures = status.consecutive_failures.saturating_add(1);
                status.last_error = Some(error_chain(e));
            }
        }
        result
    }

    /// Refreshes forever: after a success, waits the bundle's refresh hint
    /// (default [`DEFAULT_REFRESH`]); after a failure, retries with capped
    /// exponential backoff from 1 s to the refresh interval. Returns when
    /// `shutdown` flips to true or its sender is dropped.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut interval = DEFAULT_REFRESH;
        loop {
            let wait = match self.refresh().await {
                Ok(bundle) => {
                    interval = bundle
                        .refresh_hint()
                        .filter(|d| !d.is_zero())
                        .unwrap_or(DEFAULT_REFRESH);
                    tracing::debug!(trust_domain = %self.config.trust_domain, sequence = bundle.sequence(), "bundle refreshed");
                    interval
                }
                Err(e) => {
                    let failures = self.status().consecutive_failures;
                    tracing::warn!(trust_domain = %self.config.trust_domain, error = %error_chain(&e), failures, "bundle refresh failed; keeping the last good bundle");
                    retry_interval(failures, interval)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }

    async fn fetch(&self) -> Result<Bundle, EndpointError> {
        let tls = self.tls_config()?;
        let mut url = self.config.url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let target = parse_url(&url)?;
            let response = get(&tls, &target, &self.config.profile).await?;
            match response {
                Fetched::Body(body) => {
                    return Bundle::from_jwks(self.config.trust_domain.clone(), &body)
                        .map_err(EndpointError::Bundle)
                }
                Fetched::Redirect(location) => url = resolve_location(&target, &location),
            }
        }
        Err(EndpointError::TooManyRedirects)
    }

    fn tls_config(&self) -> Result<Arc<ClientConfig>, EndpointError> {
        let config = match &self.config.profile {
            EndpointProfile::HttpsSpiffe { endpoint_id } => crate::tls::client_config(
                None,
                self.store.clone(),
                Authorizer::Exact(endpoint_id.clone()),
                &[b"http/1.1"],
            )
            .map_err(EndpointError::Config)?,
            EndpointProfile::HttpsWeb { roots } => {
                let mut c = ClientConfig::builder_with_provider(crate::crypto_provider())
                    .with_safe_default_protocol_versions()
                    .map_err(EndpointError::Config)?
                    .with_root_certificates(roots.clone())
                    .with_no_client_auth();
                c.alpn_protocols = vec![b"http/1.1".to_vec()];
                c
            }
        };
        Ok(Arc::new(config))
    }
}

/// Delay before the next attempt after `failures` consecutive failures:
/// 1 s doubling, capped at `interval`.
pub fn retry_interval(failures: u32, interval: Duration) -> Duration {
    let exp = Duration::from_secs(1).saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    exp.min(interval).max(Duration::from_secs(1))
}

/// A parsed `https` URL.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    path_and_query: String,
}

fn parse_url(url: &str) -> Result<Target, EndpointError> {
    let bad = |reason| EndpointError::Url {
        url: url.to_owned(),
        reason,
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("scheme must be https"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("userinfo is not allowed"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok(Target {
        host: host.to_owned(),
        port: authority.port_u16().unwrap_or(443),
        path_and_query: uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into()),
    })
}

fn resolve_location(base: &Target, location: &str) -> String {
    if location.starts_with('/') {
        let host = if base.host.contains(':') {
            format!("[{}]", base.host)
        } else {
            base.host.clone()
        };
        format!("https://{host}:{}{location}", base.port)
    } else {
        location.to_owned()
    }
}

enum Fetched {
    Body(Bytes),
    Redirect(String),
}

async fn get(
    tls: &Arc<ClientConfig>,
    target: &Target,
    profile: &EndpointProfile,
) -> Result<Fetched, EndpointError> {
    let addr = format!("{}:{}", target.host, target.port);
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| EndpointError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let server_name = match profile {
        EndpointProfile::HttpsSpiffe { .. } => crate::tls::spiffe_server_name(),
        EndpointProfile::HttpsWeb { .. } => {
            rustls_pki_types::ServerName::try_from(target.host.clone()).map_err(|_| {
                EndpointError::Url {
                    url: addr.clone(),
                    reason: "host is not a valid DNS name or IP address",
                }
            })?
        }
    };
    let stream = TlsConnector::from(tls.clone())
        .connect(server_name, tcp)
        .await
        .map_err(|source| EndpointError::Tls {
            addr: addr.clone(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(EndpointError::Http)?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "bundle endpoint connection closed with an error");
        }
    });
    let request = Request::builder()
        .method(Method::GET)
        .uri(target.path_and_query.as_str())
        .header(HOST, addr.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|_| EndpointError::Url {
            url: target.path_and_query.clone(),
            reason: "path is not valid in a request",
        })?;
    let response = sender
        .send_request(request)
        .await
        .map_err(EndpointError::Http)?;
    let status = response.status();
    let result = if status.is_redirection() {
        match response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
        {
            Some(location) => Ok(Fetched::Redirect(location.to_owned())),
            None => Err(EndpointError::Status(status)),
        }
    } else if status != StatusCode::OK {
        Err(EndpointError::Status(status))
    } else {
        match Limited::new(response.into_body(), MAX_BUNDLE_BYTES)
            .collect()
            .await
        {
            Ok(body) => Ok(Fetched::Body(body.to_bytes())),
            Err(e) => match e.downcast::<hyper::Error>() {
                Ok(e) => Err(EndpointError::Http(*e)),
                Err(_) => Err(EndpointError::TooLarge),
            },
        }
    };
    driver.abort();
    result
}

/// The bundle endpoint server. Serves whatever bundle was published last.
pub struct BundleEndpointServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    path: String,
    bundle: watch::Receiver<Bundle>,
}

impl BundleEndpointServer {
    /// Binds `addr`, presenting `svid` (https_spiffe) and serving the bundle
    /// in `bundle` at `path` (e.g. `/bundle`). Publish a new bundle by
    /// sending on the channel; the next GET returns it.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(
        addr: std::net::SocketAddr,
        svid: Arc<SvidSource>,
        bundle: watch::Receiver<Bundle>,
        path: &str,
    ) -> Result<Self, EndpointError> {
        let listener = TcpListener::bind(addr).await.map_err(EndpointError::Bind)?;
        let config = crate::tls::server_config_no_client_auth(svid, &[b"http/1.1"])
            .map_err(EndpointError::Config)?;
        Ok(BundleEndpointServer {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            path: path.to_owned(),
            bundle,
        })
    }

    /// The address bound.
    ///
    /// # Errors
    /// The socket has no local address (never for a bound TCP listener).
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` flips to true or its sender is dropped.
    /// Connections in progress are served to completion in their own tasks.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let path: Arc<str> = self.path.into();
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                    continue;
                }
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let acceptor = self.acceptor.clone();
            let bundle = self.bundle.clone();
            let path = path.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(FETCH_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "bundle endpoint TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "bundle endpoint TLS handshake timed out");
                        return;
                    }
                };
                let service = hyper::service::service_fn(move |req| {
                    let response = respond(&req, &path, &bundle);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(FETCH_TIMEOUT)
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "bundle endpoint connection error");
                }
            });
        }
    }
}

impl std::fmt::Debug for BundleEndpointServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleEndpointServer")
            .field("addr", &self.listener.local_addr().ok())
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn respond(
    req: &Request<Incoming>,
    path: &str,
    bundle: &watch::Receiver<Bundle>,
) -> Response<Full<Bytes>> {
    let (status, body) = if req.uri().path() != path {
        (StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n"))
    } else if req.method() != Method::GET {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            Bytes::from_static(b"only GET\n"),
        )
    } else {
        (StatusCode::OK, Bytes::from(bundle.borrow().to_jwks()))
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if status == StatusCode::OK {
        response.headers_mut().insert(
            CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
    }
    response
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f5_urls_must_be_https_without_userinfo() {
        assert!(parse_url("http://peer.example/bundle").is_err());
        assert!(parse_url("https://u@peer.example/bundle").is_err());
        assert!(parse_url("https://u:p@peer.example/bundle").is_err());
        assert!(parse_url("ftp://peer.example/").is_err());
        let t = parse_url("https://peer.example:8443/b?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path_and_query.as_str()),
            ("peer.example", 8443, "/b?x=1")
        );
        let t = parse_url("https://[::1]/b").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 443));
        assert_eq!(resolve_location(&t, "/next"), "https://[::1]:443/next");
        assert_eq!(resolve_location(&t, "http://evil/x"), "http://evil/x");
    }

    #[test]
    fn retry_interval_doubles_and_caps() {
        let cap = Duration::from_secs(300);
        assert_eq!(retry_interval(1, cap), Duration::from_secs(1));
        assert_eq!(retry_interval(2, cap), Duration::from_secs(2));
        assert_eq!(retry_interval(5, cap), Duration::from_secs(16));
        assert_eq!(retry_interval(30, cap), cap);
        assert_eq!(
            retry_interval(3, Duration::from_secs(3)),
            Duration::from_secs(3)
        );
    }
}
