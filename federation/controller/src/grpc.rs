//! The controller's gRPC listeners: TLS 1.3 with ALPN `h2` (Identity, ADS,
//! Peering on one port) and the optional plaintext one (ADS for loopback
//! clients).
//!
//! We drive rustls ourselves and hand tonic already-handshaken streams
//! (`serve_with_incoming_shutdown`), so the verified client identity can be
//! attached to the connection: tonic inserts each connection's
//! [`PeerIdentity`] into every request's extensions. Client certificates are
//! optional; when sent they must verify against the bundle of their own
//! trust domain among those held (ours and the linked ones), otherwise the
//! handshake fails. Services decide what an absent identity may do.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, Router};
use trust_bundle::{Authorizer, BundleStore, SpiffeClientVerifier, SvidSource};

/// How long a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The caller's verified SPIFFE ID, inserted into every request's
/// extensions by the TLS listener: `None` when the client sent no
/// certificate (allowed only for `SignSvid` with a join token and for
/// `Peering.Redeem`) or on the plaintext xDS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity(pub Option<trust_bundle::SpiffeId>);

/// The TLS server config of the gRPC listener: presents `svid` (renewed in
/// place), TLS 1.3 only, ALPN `h2`, client certificates optional and, when
/// sent, verified against `bundles` (ours and linked trust domains'; keep
/// the store fresh, the next handshake sees it). No session resumption.
///
/// # Errors
/// The provider rejects TLS 1.3 (never with *ring*).
pub fn server_config(
    svid: Arc<SvidSource>,
    bundles: BundleStore,
) -> Result<ServerConfig, rustls::Error> {
    let provider = trust_bundle::crypto_provider();
    let verifier = Arc::new(OptionalClientAuth(SpiffeClientVerifier::new(
        bundles,
        Authorizer::Any,
        provider.clone(),
    )));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(svid);
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Serves `router` over TLS on `listener` until `shutdown` turns true (or
/// its sender is dropped); then stops accepting and waits for open
/// connections to finish. Every request carries the connection's
/// [`PeerIdentity`].
///
/// # Errors
/// tonic's server failed.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    shutdown: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(tls);
    tokio::spawn(accept_tls(listener, acceptor, tx, shutdown.clone()));
    router
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), stopped(shutdown))
        .await
}

/// Serves `router` in plaintext (h2c) on `listener` until `shutdown`: for
/// the loopback ADS listener. Requests carry `PeerIdentity(None)`.
///
/// # Errors
/// tonic's server failed.
pub async fn serve_plaintext(
    listener: TcpListener,
    router: Router,
    shutdown: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let (tx, rx) = mpsc::channel(64);
    let mut stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = wait_true(&mut stop) => return,
            };
            match accepted {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    let conn = Conn {
                        io: Io::Plain(tcp),
                        peer: PeerIdentity(None),
                    };
                    if tx.send(Ok::<_, io::Error>(conn)).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "xds plaintext accept failed"),
            }
        }
    });
    router
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), stopped(shutdown))
        .await
}

async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<Result<Conn, io::Error>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = wait_true(&mut shutdown) => return,
        };
        let (tcp, peer_addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "grpc accept failed");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer_addr, error = %e, "grpc TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer_addr, "grpc TLS handshake timed out");
                    return;
                }
            };
            let id = trust_bundle::verify::peer_spiffe_id(tls.get_ref().1.peer_certificates());
            let conn = Conn {
                io: Io::Tls(Box::new(tls)),
                peer: PeerIdentity(id),
            };
            let _ = tx.send(Ok(conn)).await;
        });
    }
}

async fn wait_true(rx: &mut watch::Receiver<bool>) {
    // A dropped sender also means stop.
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    wait_true(&mut rx).await;
}

/// One accepted connection with its verified peer.
struct Conn {
    io: Io,
    peer: PeerIdentity,
}

enum Io {
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Plain(TcpStream),
}

impl Connected for Conn {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.peer.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Tls(s) => s.is_write_vectored(),
            Io::Plain(s) => s.is_write_vectored(),
        }
    }
}

/// [`SpiffeClientVerifier`] with client authentication made optional: a
/// client may send no certificate, but one it sends must verify.
#[derive(Debug)]
struct OptionalClientAuth(SpiffeClientVerifier);

impl ClientCertVerifier for OptionalClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
