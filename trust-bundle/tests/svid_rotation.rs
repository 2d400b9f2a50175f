//! SVID rotation: a live source swaps certificates under running listeners
//! without dropping connections, and the renewal driver renews at half life
//! on virtual time.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use common::Pki;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use trust_bundle::rotation::RenewalPolicy;
use trust_bundle::source::{
    run_rotation, BoxFuture, Clock, LocalCaIssuer, RenewError, SvidIssuer, TokioClock,
};
use trust_bundle::tls::{client_config, server_config};
use trust_bundle::{Authorizer, BundleStore, SvidRequest, SvidSource, X509Svid};

#[tokio::test]
async fn rotation_swaps_certificates_without_restarting_listeners_or_dropping_connections() {
    let a = Pki::new("cluster-a.mesh");
    let trust = BundleStore::new();
    trust.set(a.bundle());
    let source = a.source("backend");
    let first = source.svid();
    let server = server_config(source.clone(), trust.clone(), Authorizer::Any, &[]).unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // An echo server: every accepted connection echoes lines until EOF.
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (r, mut w) = tokio::io::split(tls);
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if w.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let connector = TlsConnector::from(Arc::new(
        client_config(Some(a.source("frontend")), trust, Authorizer::Any, &[]).unwrap(),
    ));
    let connect = || async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        connector
            .connect(trust_bundle::tls::spiffe_server_name(), tcp)
            .await
            .unwrap()
    };
    async fn echo(conn: &mut tokio_rustls::client::TlsStream<TcpStream>, msg: &str) -> String {
        conn.write_all(format!("{msg}\n").as_bytes()).await.unwrap();
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line).await.unwrap();
        line
    }

    let mut before = connect().await;
    assert_eq!(
        before.get_ref().1.peer_certificates().unwrap()[0],
        first.chain()[0]
    );
    assert_eq!(echo(&mut before, "one").await, "one\n");

    let second = a.svid("backend");
    source.update(second.clone()).unwrap();

    assert_eq!(
        echo(&mut before, "two").await,
        "two\n",
        "the established connection survives"
    );
    let mut after = connect().await;
    assert_eq!(
        after.get_ref().1.peer_certificates().unwrap()[0],
        second.chain()[0],
        "new handshakes see the new SVID"
    );
    assert_ne!(first.chain()[0], second.chain()[0]);
    assert_eq!(echo(&mut after, "three").await, "three\n");
}

#[tokio::test(start_paused = true)]
async fn driver_renews_at_half_life_and_keeps_renewing() {
    let a = Pki::new("cluster-a.mesh");
    let start = SystemTime::now();
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
    let ttl = Duration::from_secs(3600);
    let mut req = SvidRequest::new(a.id("backend"));
    req.ttl = ttl;
    let first = a.ca.issue(&req, start).unwrap();
    let source = SvidSource::new(first.clone(), trust_bundle::crypto_provider()).unwrap();
    let mut updates = source.subscribe();
    let ca = Arc::new(RwLock::new(a.ca));
    let issuer = Arc::new(LocalCaIssuer::new(ca, ttl, clock.clone()));
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_rotation(
        source.clone(),
        issuer,
        RenewalPolicy::default(),
        clock.clone(),
        stop_rx,
    ));

    let mut previous = first;
    for round in 0..3 {
        tokio::time::timeout(Duration::from_secs(7200), updates.changed())
            .await
            .unwrap()
            .unwrap();
        let now = clock.now();
        let life = previous
            .not_after()
            .duration_since(previous.not_before())
            .unwrap();
        let at = now.duration_since(previous.not_before()).unwrap();
        let fraction = at.as_secs_f64() / life.as_secs_f64();
        assert!(
            (0.39..=0.51).contains(&fraction),
            "round {round}: renewed at {fraction:.3} of the lifetime"
        );
        let current = source.svid();
        assert!(current.not_after() > previous.not_after());
        assert_eq!(current.id(), previous.id());
        previous = current;
    }
    stop.send_replace(true);
    task.await.unwrap();
}

/// Fails `failures` times, then issues from the PKI.
struct Flaky {
    failures: AtomicU32,
    inner: LocalCaIssuer,
}

impl SvidIssuer for Flaky {
    fn renew<'a>(&'a self, current: &'a X509Svid) -> BoxFuture<'a, Result<X509Svid, RenewError>> {
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            return Box::pin(async { Err(RenewError::Issue("control plane unreachable".into())) });
        }
        self.inner.renew(current)
    }
}

#[tokio::test(start_paused = true)]
async fn driver_retries_failed_renewals_with_backoff_before_expiry() {
    let a = Pki::new("cluster-a.mesh");
    let start = SystemTime::now();
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
    let ttl = Duration::from_secs(3600);
    let mut req = SvidRequest::new(a.id("backend"));
    req.ttl = ttl;
    let first = a.ca.issue(&req, start).unwrap();
    let source = SvidSource::new(first.clone(), trust_bundle::crypto_provider()).unwrap();
    let mut updates = source.subscribe();
    let issuer = Arc::new(Flaky {
        failures: AtomicU32::new(5),
        inner: LocalCaIssuer::new(Arc::new(RwLock::new(a.ca)), ttl, clock.clone()),
    });
    let (_stop, stop_rx) = watch::channel(false);
    tokio::spawn(run_rotation(
        source.clone(),
        issuer.clone(),
        RenewalPolicy::default(),
        clock.clone(),
        stop_rx,
    ));
    tokio::time::timeout(Duration::from_secs(7200), updates.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        issuer.failures.load(Ordering::SeqCst),
        0,
        "all five failures were retried"
    );
    let renewed_at = clock.now();
    assert!(renewed_at < first.not_after(), "renewed before expiry");
    // Five retries with 1 s doubling backoff: at most 1+2+4+8+16 = 31 s after the first attempt.
    let first_attempt_latest = first.not_before()
        + first
            .not_after()
            .duration_since(first.not_before())
            .unwrap()
            / 2;
    assert!(
        renewed_at <= first_attempt_latest + Duration::from_secs(32),
        "{renewed_at:?}"
    );
}
