//! Bootstrap trust for the proxies: each cluster's own trust bundle, as its
//! controller publishes it on its SPIFFE bundle endpoint.
//!
//! The controller makes its CA itself (the first Raft leader), so nothing
//! outside it knows the root in advance. `dev up` started that controller a
//! moment ago on a loopback address it chose, so it takes the bundle on
//! first use: one fetch that accepts whatever certificate the endpoint
//! presents ([`danger_fetch_unverified`]), then a second fetch through
//! `trust_bundle`'s `https_spiffe` client authenticated with that bundle
//! and the controller's SPIFFE ID. The second fetch proves the endpoint
//! holds a key certified by the root it serves for the expected identity;
//! only the first one's trust-on-first-use is taken on faith. A real
//! deployment distributes the root out of band instead.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::header::HOST;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use trust_bundle::endpoint::{
    BundleEndpointClient, EndpointConfig, EndpointProfile, MAX_BUNDLE_BYTES,
};
use trust_bundle::{Bundle, BundleMap, BundleStore, SpiffeId, TrustDomain};

use super::topology::Cluster;

/// Time one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The bundle of `cluster`'s own trust domain, from its controller's bundle
/// endpoint (see the module doc for how it is authenticated).
///
/// # Errors
/// The endpoint is unreachable, serves no valid bundle of the trust domain,
/// or cannot prove its identity with the bundle it served.
pub(crate) async fn own_bundle(cluster: &Cluster) -> anyhow::Result<Bundle> {
    let td = TrustDomain::parse(&cluster.trust_domain)
        .with_context(|| format!("trust domain {}", cluster.trust_domain))?;
    let endpoint_id = SpiffeId::parse(&cluster.controller.spiffe_id)
        .with_context(|| format!("controller ID {}", cluster.controller.spiffe_id))?;
    let url = cluster.controller.bundle_url();
    let body = tokio::time::timeout(
        FETCH_TIMEOUT,
        danger_fetch_unverified(cluster.controller.bundle),
    )
    .await
    .map_err(|_| anyhow!("GET {url}: no answer within {FETCH_TIMEOUT:?}"))?
    .with_context(|| format!("GET {url} (first use)"))?;
    let first = Bundle::from_jwks(td.clone(), &body)
        .with_context(|| format!("{url}: not a SPIFFE bundle of {td}"))?;
    if first.x509_authorities().is_empty() {
        bail!("{url}: the bundle of {td} has no X.509 authority");
    }
    let store = BundleStore::new();
    store.set(first);
    let client = BundleEndpointClient::new(
        EndpointConfig {
            trust_domain: td.clone(),
            url: url.clone(),
            profile: EndpointProfile::HttpsSpiffe { endpoint_id },
        },
        store,
    )
    .with_context(|| format!("bundle endpoint {url}"))?;
    client
        .refresh()
        .await
        .with_context(|| format!("GET {url} authenticated with the bundle it served"))
}

/// The bundle map file of bootstrap trust: `bundle` alone.
pub(crate) fn bundle_map_json(bundle: Bundle) -> Vec<u8> {
    let mut map = BundleMap::default();
    map.insert(bundle);
    map.to_json()
}

/// `GET /` over TLS from `addr`, accepting any server certificate (but
/// checking the handshake signatures). Only for trust on first use.
async fn danger_fetch_unverified(addr: SocketAddr) -> anyhow::Result<Bytes> {
    let provider = trust_bundle::crypto_provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 client config")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(FirstUse { provider }))
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .context("TLS handshake")?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .context("HTTP handshake")?;
    let driver = tokio::spawn(async move {
        // Its error reaches us through `send_request`.
        let _ = connection.await;
    });
    let request = Request::get("/")
        .header(HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .context("build the request")?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BUNDLE_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow!("read the bundle: {e}"))?
        .to_bytes();
    driver.abort();
    if status != StatusCode::OK {
        bail!("status {status}");
    }
    Ok(body)
}

/// Accepts any certificate chain; handshake signatures are still checked
/// so the server at least holds the key of the certificate it sent.
#[derive(Debug)]
struct FirstUse {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for FirstUse {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;
    use trust_bundle::CertificateAuthority;

    #[test]
    fn the_bootstrap_map_holds_the_one_bundle() {
        let td = TrustDomain::parse("cluster-a.mesh").unwrap();
        let ca = CertificateAuthority::self_signed(
            td.clone(),
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .unwrap();
        let bundle = Bundle::with_x509_authorities(td.clone(), [ca.trust_anchor().clone()]);
        let map = BundleMap::from_json(&bundle_map_json(bundle)).unwrap();
        assert_eq!(map.trust_domains.len(), 1);
        assert_eq!(
            map.trust_domains[&td].x509_authorities(),
            [ca.trust_anchor().clone()]
        );
    }

    /// A bundle endpoint like the controller's, on `cluster`'s address,
    /// presenting an SVID for `presented_id`.
    async fn endpoint(
        cluster: &Cluster,
        presented_id: &str,
    ) -> (Bundle, tokio::sync::watch::Sender<bool>) {
        let td = TrustDomain::parse(&cluster.trust_domain).unwrap();
        let ca = CertificateAuthority::self_signed(
            td.clone(),
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .unwrap();
        let svid = ca
            .issue(
                &trust_bundle::SvidRequest::new(SpiffeId::parse(presented_id).unwrap()),
                SystemTime::now(),
            )
            .unwrap();
        let source = trust_bundle::SvidSource::new(svid, trust_bundle::crypto_provider()).unwrap();
        let bundle = Bundle::with_x509_authorities(td, [ca.trust_anchor().clone()]);
        let (_tx, rx) = tokio::sync::watch::channel(bundle.clone());
        let server = trust_bundle::endpoint::BundleEndpointServer::bind(
            cluster.controller.bundle,
            source,
            rx,
            "/",
        )
        .await
        .unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _keep = _tx;
            server.serve(stopped).await;
        });
        (bundle, stop)
    }

    #[tokio::test]
    async fn the_bundle_is_taken_on_first_use_then_authenticated() {
        let t = crate::dev::topology::Topology::dev(23000).unwrap();
        let cluster = &t.clusters[0];
        let (served, stop) = endpoint(cluster, &cluster.controller.spiffe_id).await;
        let got = own_bundle(cluster).await.unwrap();
        assert_eq!(got.x509_authorities(), served.x509_authorities());
        let _ = stop.send(true);
    }

    #[tokio::test]
    async fn an_endpoint_with_another_identity_is_refused() {
        let t = crate::dev::topology::Topology::dev(23100).unwrap();
        let cluster = &t.clusters[1];
        let (_, stop) = endpoint(cluster, "spiffe://cluster-b.mesh/ns/default/sa/impostor").await;
        let err = format!("{:#}", own_bundle(cluster).await.unwrap_err());
        assert!(
            err.contains("authenticated with the bundle it served"),
            "{err}"
        );
        let _ = stop.send(true);
    }
}
