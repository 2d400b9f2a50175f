//! gRPC channels to a peer controller over our own rustls client config
//! (TLS 1.3 only, ALPN `h2`, SPIFFE server verification, SNI off).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::codegen::http::Uri;
use tonic::codegen::Service;
use tonic::transport::{Channel, Endpoint};
use trust_bundle::verify::{Authorizer, SpiffeServerVerifier};
use trust_bundle::{BundleStore, SpiffeId, SvidSource};

use super::error_chain;

/// A TLS 1.3-only client config that verifies the server as exactly
/// `server_id` against `bundles`, presents `svid` when given, offers ALPN
/// `h2`, sends no SNI and never resumes sessions (as
/// [`trust_bundle::tls::client_config`], pinned to TLS 1.3).
pub(crate) fn client_config(
    svid: Option<Arc<SvidSource>>,
    bundles: BundleStore,
    server_id: SpiffeId,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = trust_bundle::crypto_provider();
    let verifier = Arc::new(SpiffeServerVerifier::new(
        bundles,
        Authorizer::Exact(server_id),
        provider.clone(),
    ));
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match svid {
        Some(svid) => builder.with_client_cert_resolver(svid),
        None => builder.with_no_client_auth(),
    };
    config.enable_sni = false;
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Connects a channel to `address` (`host:port`) with `config`; fails if
/// TCP, TLS or the HTTP/2 handshake fail within `timeout`. The error is the
/// rendered error chain (TLS verification failures included).
pub(crate) async fn connect(
    address: &str,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("invalid address {address:?}: {}", error_chain(&e)))?
        .connect_timeout(timeout);
    let connector = TlsConnect {
        address: address.to_owned(),
        connector: TlsConnector::from(config),
    };
    match tokio::time::timeout(timeout, endpoint.connect_with_connector(connector)).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(error_chain(&e)),
        Err(_) => Err(format!("connect timed out after {timeout:?}")),
    }
}

/// A tower connector: TCP to a fixed address, then TLS.
#[derive(Clone)]
struct TlsConnect {
    address: String,
    connector: TlsConnector,
}

type Connecting =
    Pin<Box<dyn Future<Output = Result<TokioIo<TlsStream<TcpStream>>, std::io::Error>> + Send>>;

impl Service<Uri> for TlsConnect {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let address = self.address.clone();
        let connector = self.connector.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&address).await?;
            tcp.set_nodelay(true)?;
            let tls = connector
                .connect(trust_bundle::tls::spiffe_server_name(), tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}
