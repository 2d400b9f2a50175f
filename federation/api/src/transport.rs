//! gRPC channels from the data plane to the controller.
//!
//! Production channels are TLS 1.3 (ALPN `h2`) through a custom tonic
//! connector: TCP, then tokio-rustls with
//! [`trust_bundle::SpiffeServerVerifier`] accepting exactly the controller's
//! SPIFFE ID (`spiffe://<td>/ns/isthmus-system/sa/controller`), presenting
//! our SVID when one is given (renewals, ADS, Register) and none for the
//! first join-token `SignSvid`. [`Security::DangerPlaintext`] speaks h2c, for
//! the controller's loopback-only `xds_plaintext_listen` and for tests.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::codegen::{BoxFuture, Service};
use tonic::transport::{Channel, Endpoint, Uri};
use trust_bundle::{Authorizer, BundleStore, SpiffeId, SvidSource};

/// Default TCP connect + TLS handshake bound.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a channel is secured.
#[derive(Clone)]
pub enum Security {
    /// SPIFFE mutual TLS: verify the server against `store` and require
    /// exactly `server_id`; present `client` when given.
    Spiffe {
        /// Our SVID, or `None` before we have one (join-token `SignSvid`).
        client: Option<Arc<SvidSource>>,
        /// Bundles the server certificate is verified against.
        store: BundleStore,
        /// The only SPIFFE ID the server may present.
        server_id: SpiffeId,
    },
    /// No TLS at all (h2c). Only for loopback listeners and tests.
    DangerPlaintext,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Security::Spiffe {
                client, server_id, ..
            } => f
                .debug_struct("Spiffe")
                .field("client_cert", &client.is_some())
                .field("server_id", server_id)
                .finish_non_exhaustive(),
            Security::DangerPlaintext => f.write_str("DangerPlaintext"),
        }
    }
}

/// Where the controller is and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` of the controller's gRPC listener.
    pub address: String,
    /// TLS or plaintext.
    pub security: Security,
    /// TCP connect + TLS handshake bound.
    pub connect_timeout: Duration,
}

/// Why a channel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// `address` is not a valid `host:port` authority.
    #[error("control plane address {0:?} is not host:port")]
    Address(String),
    /// The rustls client config could not be built.
    #[error("tls client config")]
    Tls(#[source] rustls::Error),
    /// Connecting (TCP, TLS or HTTP/2) failed.
    #[error("connecting to the control plane at {address}")]
    Connect {
        /// The controller address.
        address: String,
        /// What failed.
        #[source]
        source: tonic::transport::Error,
    },
}

impl Target {
    /// A target with the default connect timeout.
    pub fn new(address: impl Into<String>, security: Security) -> Target {
        Target {
            address: address.into(),
            security,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// The same target presenting `client` as our SVID.
    pub fn with_client(&self, client: Arc<SvidSource>) -> Target {
        let mut t = self.clone();
        if let Security::Spiffe { client: c, .. } = &mut t.security {
            *c = Some(client);
        }
        t
    }

    /// Opens a channel (eagerly: the TCP connection and handshakes happen
    /// now).
    ///
    /// # Errors
    /// See [`TransportError`].
    pub async fn connect(&self) -> Result<Channel, TransportError> {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.address))
            .map_err(|_| TransportError::Address(self.address.clone()))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        let connected = match &self.security {
            Security::DangerPlaintext => endpoint.connect().await,
            Security::Spiffe {
                client,
                store,
                server_id,
            } => {
                let config = trust_bundle::tls::client_config(
                    client.clone(),
                    store.clone(),
                    Authorizer::Exact(server_id.clone()),
                    &[b"h2"],
                )
                .map_err(TransportError::Tls)?;
                let connector = SpiffeConnector {
                    address: self.address.clone(),
                    tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
                };
                endpoint.connect_with_connector(connector).await
            }
        };
        connected.map_err(|source| TransportError::Connect {
            address: self.address.clone(),
            source,
        })
    }
}

/// TCP + SPIFFE TLS to a fixed address (the URI only carries the authority
/// tonic needs for `:authority`).
#[derive(Clone)]
struct SpiffeConnector {
    address: String,
    tls: tokio_rustls::TlsConnector,
}

type TlsIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl Service<Uri> for SpiffeConnector {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = BoxFuture<TlsIo, std::io::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&this.address).await?;
            let _ = tcp.set_nodelay(true);
            let tls = this
                .tls
                .connect(trust_bundle::tls::spiffe_server_name(), tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}
