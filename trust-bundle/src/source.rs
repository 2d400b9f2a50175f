//! [`SvidSource`]: the current SVID of a process, served to rustls and
//! renewed in place.
//!
//! A source implements rustls' `ResolvesServerCert` and `ResolvesClientCert`,
//! so every new handshake picks up the SVID installed last, while connections
//! already established keep the keys they negotiated: rotating needs no
//! listener restart and drops no connection. [`run_rotation`] is the thin
//! async driver around the sans-IO [`crate::rotation::Rotation`] schedule.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use tokio::sync::watch;

use crate::ca::{CaError, CertificateAuthority, SvidRequest};
use crate::rotation::{RenewalPolicy, Rotation};
use crate::svid::{SvidError, X509Svid};

/// Why an SVID could not be renewed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// The issuer refused or failed.
    #[error("issuing a new SVID failed")]
    Issue(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The new SVID could not be loaded into rustls.
    #[error("the new SVID is unusable")]
    Svid(#[source] SvidError),
}

/// The live SVID of a process.
pub struct SvidSource {
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    svid: watch::Sender<X509Svid>,
}

impl SvidSource {
    /// A source serving `svid`.
    ///
    /// # Errors
    /// The provider cannot load the SVID's key.
    pub fn new(svid: X509Svid, provider: Arc<CryptoProvider>) -> Result<Arc<Self>, SvidError> {
        let key = Arc::new(svid.certified_key(&provider)?);
        let (tx, _) = watch::channel(svid);
        Ok(Arc::new(SvidSource {
            provider,
            current: RwLock::new(key),
            svid: tx,
        }))
    }

    /// Installs a new SVID: the next handshake presents it.
    ///
    /// # Errors
    /// The provider cannot load the SVID's key; the old SVID stays.
    pub fn update(&self, svid: X509Svid) -> Result<(), SvidError> {
        let key = Arc::new(svid.certified_key(&self.provider)?);
        match self.current.write() {
            Ok(mut g) => *g = key,
            Err(p) => *p.into_inner() = key,
        }
        self.svid.send_replace(svid);
        Ok(())
    }

    /// The SVID installed last.
    pub fn svid(&self) -> X509Svid {
        self.svid.borrow().clone()
    }

    /// A receiver that sees every SVID installed from now on.
    pub fn subscribe(&self) -> watch::Receiver<X509Svid> {
        self.svid.subscribe()
    }

    fn key(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

impl std::fmt::Debug for SvidSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SvidSource")
            .field("svid", &*self.svid.borrow())
            .finish()
    }
}

impl ResolvesServerCert for SvidSource {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }
}

impl ResolvesClientCert for SvidSource {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A boxed future, so that [`SvidIssuer`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that issues a fresh SVID to replace `current`: the control
/// plane's identity service in production, a local CA in tests and dev runs.
pub trait SvidIssuer: Send + Sync {
    /// Issues a replacement for `current` (same ID).
    fn renew<'a>(&'a self, current: &'a X509Svid) -> BoxFuture<'a, Result<X509Svid, RenewError>>;
}

/// The current time: the system clock in production, a virtual one in tests.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A wall clock that follows tokio's clock from a fixed start, so that tests
/// with paused tokio time move certificate time too.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start_wall: SystemTime,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `start_wall` now.
    pub fn starting_at(start_wall: SystemTime) -> Self {
        TokioClock {
            start_wall,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.start_wall + self.start.elapsed()
    }
}

/// Issues SVIDs straight from a CA held in this process.
pub struct LocalCaIssuer {
    ca: Arc<RwLock<CertificateAuthority>>,
    ttl: Duration,
    clock: Arc<dyn Clock>,
}

impl LocalCaIssuer {
    /// Issues from `ca` with lifetime `ttl`, reading time from `clock`.
    pub fn new(
        ca: Arc<RwLock<CertificateAuthority>>,
        ttl: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        LocalCaIssuer { ca, ttl, clock }
    }
}

impl LocalCaIssuer {
    fn issue(&self, current: &X509Svid) -> Result<X509Svid, CaError> {
        let mut request = SvidRequest::new(current.id().clone());
        request.ttl = self.ttl;
        let ca = match self.ca.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        ca.issue(&request, self.clock.now())
    }
}

impl SvidIssuer for LocalCaIssuer {
    fn renew<'a>(&'a self, current: &'a X509Svid) -> BoxFuture<'a, Result<X509Svid, RenewError>> {
        let result = self.issue(current);
        Box::pin(async move { result.map_err(|e| RenewError::Issue(Box::new(e))) })
    }
}

/// Keeps `source` fresh: renews per `policy` through `issuer`, installs each
/// new SVID, and retries failures with backoff. Returns when `shutdown` flips
/// to true or its sender is dropped.
pub async fn run_rotation(
    source: Arc<SvidSource>,
    issuer: Arc<dyn SvidIssuer>,
    policy: RenewalPolicy,
    clock: Arc<dyn Clock>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut rotation = Rotation::new(policy);
    let svid = source.svid();
    rotation.handle_installed(svid.not_before(), svid.not_after(), unit_random());
    loop {
        let now = clock.now();
        if rotation.poll_renew(now) {
            let current = source.svid();
            let outcome = match issuer.renew(&current).await {
                Ok(next) => source
                    .update(next.clone())
                    .map(|()| next)
                    .map_err(RenewError::Svid),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(next) => {
                    tracing::info!(id = %next.id(), not_after = ?next.not_after(), "SVID renewed");
                    rotation.handle_installed(next.not_before(), next.not_after(), unit_random());
                }
                Err(e) => {
                    tracing::warn!(error = %e, failures = rotation.failures() + 1, "SVID renewal failed");
                    rotation.handle_failed(clock.now(), unit_random());
                }
            }
            continue;
        }
        let wait = rotation
            .poll_timeout()
            .and_then(|at| at.duration_since(now).ok())
            .unwrap_or(Duration::ZERO);
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

/// A random number in `[0, 1)` from the system RNG (0.5 if it fails, which
/// only removes the jitter).
pub(crate) fn unit_random() -> f64 {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}
