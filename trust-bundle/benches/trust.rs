//! Benchmarks of the trust path, single-threaded:
//!
//! - `svid_signing`: [`CertificateAuthority::issue_svid`] from a CSR made
//!   once, so each call parses and verifies the CSR, signs the leaf and
//!   self-checks the chain. Target: at least 5,000 signings/s.
//! - `mtls_handshake`: one full TLS 1.3 mutual-TLS handshake in memory, with
//!   the SPIFFE verifiers from [`trust_bundle::tls`] against rustls' stock
//!   webpki verifiers on the same chain, keys, provider (*ring*), key
//!   exchange and ALPN (none). Target: SPIFFE overhead at most 10%.
//!
//! After criterion, `main` prints a plain summary from its own interleaved
//! measurement, so that the overhead ratio comes from runs made side by side
//! under the same machine load.

#![allow(missing_docs)]
#![allow(clippy::print_stdout)]

use std::error::Error;
use std::hint::black_box;
use std::ops::DerefMut;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use criterion::{Criterion, Throughput};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateSigningRequestDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, ConnectionCommon, HandshakeKind, ProtocolVersion,
    RootCertStore, ServerConfig, ServerConnection,
};
use trust_bundle::ca::DEFAULT_ROOT_TTL;
use trust_bundle::{
    tls, Authorizer, Bundle, BundleStore, CertificateAuthority, SvidRequest, SvidSource,
    TrustDomain,
};

/// The DNS SAN of the server SVID, checked by the stock verifier only.
const SERVER_DNS_NAME: &str = "backend.test";

fn main() {
    // Setup failing is a broken bench, not a result: stop loudly.
    #[allow(clippy::expect_used)]
    let fixture = Fixture::new().expect("bench fixture setup");
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // then criterion runs each routine once, so the summary stays short too.
    let args: Vec<String> = std::env::args().collect();
    let bench_mode = args.iter().any(|a| a == "--bench");
    let list_mode = args.iter().any(|a| a == "--list");

    let mut criterion = Criterion::default().configure_from_args();
    bench_signing(&mut criterion, &fixture.signing);
    bench_handshakes(&mut criterion, &fixture.spiffe, &fixture.webpki);
    criterion.final_summary();

    if !list_mode {
        if bench_mode {
            print_summary(&fixture, 7, 200);
        } else {
            println!("smoke run (no --bench): the figures below are not measurements");
            print_summary(&fixture, 1, 3);
        }
    }
}

fn bench_signing(c: &mut Criterion, s: &Signing) {
    let mut group = c.benchmark_group("svid_signing");
    group.throughput(Throughput::Elements(1));
    group.bench_function("issue_svid", |b| b.iter(|| s.sign_one()));
    group.finish();
}

fn bench_handshakes(c: &mut Criterion, spiffe: &Pair, webpki: &Pair) {
    let mut group = c.benchmark_group("mtls_handshake");
    group.throughput(Throughput::Elements(1));
    for (name, pair) in [("spiffe_verifiers", spiffe), ("webpki_verifiers", webpki)] {
        let mut buf = Vec::with_capacity(16 * 1024);
        group.bench_function(name, |b| b.iter(|| pair.handshake_checked(&mut buf)));
    }
    group.finish();
}

/// Own side-by-side measurement: rounds alternate which kind goes first, and
/// each kind's figure is the median over rounds of the mean time per
/// operation, so slow drift and load from other processes hit both alike.
fn print_summary(f: &Fixture, rounds: usize, per_round: usize) {
    let mut sign_rates = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let n = per_round * 5;
        let start = Instant::now();
        for _ in 0..n {
            f.signing.sign_one();
        }
        sign_rates.push(n as f64 / start.elapsed().as_secs_f64());
    }

    let mut buf = Vec::with_capacity(16 * 1024);
    let mut spiffe_us = Vec::with_capacity(rounds);
    let mut webpki_us = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [(&f.spiffe, &mut spiffe_us), (&f.webpki, &mut webpki_us)]
        } else {
            [(&f.webpki, &mut webpki_us), (&f.spiffe, &mut spiffe_us)]
        };
        for (pair, out) in order {
            let start = Instant::now();
            for _ in 0..per_round {
                pair.handshake_checked(&mut buf);
            }
            out.push(start.elapsed().as_secs_f64() * 1e6 / per_round as f64);
        }
    }

    let signings = median(&mut sign_rates);
    let spiffe = median(&mut spiffe_us);
    let webpki = median(&mut webpki_us);
    let overhead = (spiffe - webpki) / webpki * 100.0;
    println!();
    println!(
        "summary ({rounds} interleaved rounds, {per_round} handshakes and {} signings per kind and round, medians):",
        per_round * 5
    );
    println!(
        "signings/s: {signings:.0} (target >= 5000/s: {})",
        met(signings >= 5000.0)
    );
    println!(
        "handshake spiffe: {spiffe:.1} us, webpki: {webpki:.1} us, overhead: {overhead:.1}% (target <= 10%: {})",
        met(overhead <= 10.0)
    );
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// Everything built once, outside the timed loops.
struct Fixture {
    signing: Signing,
    spiffe: Pair,
    webpki: Pair,
}

impl Fixture {
    fn new() -> Result<Self, Box<dyn Error>> {
        let now = SystemTime::now();
        let td = TrustDomain::parse("cluster-a.isthmus")?;
        let ca = CertificateAuthority::self_signed(td.clone(), DEFAULT_ROOT_TTL, now)?;

        let client_id = td.service_account("default", "frontend")?;
        let server_id = td.service_account("default", "backend")?;
        let client_svid = ca.issue(&SvidRequest::new(client_id.clone()), now)?;
        // The stock server verifier checks the DNS name; ours ignores it, so
        // one SVID carrying both serves both cases.
        let server_svid = ca.issue(
            &SvidRequest {
                dns_names: vec![SERVER_DNS_NAME.into()],
                ..SvidRequest::new(server_id)
            },
            now,
        )?;

        let provider = trust_bundle::crypto_provider();
        let client_source = SvidSource::new(client_svid, provider.clone())?;
        let server_source = SvidSource::new(server_svid, provider.clone())?;

        // (a) Ours: a bundle store with the CA's bundle, any ID allowed.
        let store = BundleStore::new();
        store.set(Bundle::with_x509_authorities(
            td,
            [ca.trust_anchor().clone()],
        ));
        let spiffe = Pair::new(
            tls::client_config(
                Some(client_source.clone()),
                store.clone(),
                Authorizer::Any,
                &[],
            )?,
            tls::server_config(server_source.clone(), store, Authorizer::Any, &[])?,
            tls::spiffe_server_name(),
        );

        // (b) Stock webpki verifiers, *ring*, same anchor, same SVIDs (served
        // by the same sources, so only the verifiers differ), same protocol
        // versions as `tls::*_config` (TLS 1.3 is negotiated either way).
        let mut roots = RootCertStore::empty();
        roots.add(ca.trust_anchor().clone())?;
        let roots = Arc::new(roots);
        let ring = Arc::new(rustls::crypto::ring::default_provider());
        let mut client = ClientConfig::builder_with_provider(ring.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots.clone())
            .with_client_cert_resolver(client_source);
        // As `tls::client_config`: no SNI on the wire. The name is still
        // verified against the certificate.
        client.enable_sni = false;
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots, ring.clone()).build()?;
        let server = ServerConfig::builder_with_provider(ring)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(client_verifier)
            .with_cert_resolver(server_source);
        let webpki = Pair::new(client, server, ServerName::try_from(SERVER_DNS_NAME)?);

        // Both kinds must complete and authenticate before anything is timed.
        let mut buf = Vec::new();
        spiffe.handshake(&mut buf)?;
        webpki.handshake(&mut buf)?;

        let (_, csr) = trust_bundle::svid::new_csr(&client_id)?;
        let signing = Signing {
            request: SvidRequest::new(client_id),
            ca,
            csr,
            now,
        };
        // The signing loop must measure successful signings too.
        signing.ca.issue_svid(&signing.csr, &signing.request, now)?;

        Ok(Fixture {
            signing,
            spiffe,
            webpki,
        })
    }
}

/// A CA and a CSR made once; each call parses, verifies and signs anew.
struct Signing {
    ca: CertificateAuthority,
    csr: CertificateSigningRequestDer<'static>,
    request: SvidRequest,
    now: SystemTime,
}

impl Signing {
    fn sign_one(&self) {
        match self.ca.issue_svid(&self.csr, &self.request, self.now) {
            Ok(chain) => {
                black_box(chain);
            }
            Err(e) => panic!("issue_svid failed inside the timed loop: {e}"),
        }
    }
}

/// A client and a server config that must complete a mutual-TLS handshake.
struct Pair {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    server_name: ServerName<'static>,
}

impl Pair {
    fn new(mut client: ClientConfig, mut server: ServerConfig, name: ServerName<'static>) -> Self {
        // Every iteration must be a full handshake with both certificates
        // verified: no resumption, and no tickets to make or store.
        client.resumption = Resumption::disabled();
        server.send_tls13_tickets = 0;
        Pair {
            client: Arc::new(client),
            server: Arc::new(server),
            server_name: name,
        }
    }

    /// One handshake, panicking on failure: cheap enough for the timed loop
    /// (the checks are a few field reads), and a failing handshake must never
    /// be timed as if it were a result.
    fn handshake_checked(&self, buf: &mut Vec<u8>) {
        if let Err(e) = self.handshake(buf) {
            panic!("handshake failed inside the timed loop: {e}");
        }
    }

    /// Fresh connections, bytes pumped in memory until neither side is
    /// handshaking, then checks that the handshake was a full TLS 1.3 one in
    /// which each side authenticated the other's certificate.
    fn handshake(&self, buf: &mut Vec<u8>) -> Result<(), Box<dyn Error>> {
        let mut client = ClientConnection::new(self.client.clone(), self.server_name.clone())?;
        let mut server = ServerConnection::new(self.server.clone())?;
        while client.is_handshaking() || server.is_handshaking() {
            let sent = transfer(&mut client, &mut server, buf)?;
            let received = transfer(&mut server, &mut client, buf)?;
            if sent == 0 && received == 0 {
                return Err("handshake stalled: no bytes in either direction".into());
            }
        }
        if client.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
            return Err(format!("negotiated {:?}, not TLS 1.3", client.protocol_version()).into());
        }
        if client.handshake_kind() != Some(HandshakeKind::Full)
            || server.handshake_kind() != Some(HandshakeKind::Full)
        {
            return Err("not a full handshake".into());
        }
        if client.peer_certificates().is_none_or(<[_]>::is_empty)
            || server.peer_certificates().is_none_or(<[_]>::is_empty)
        {
            return Err("a side has no authenticated peer certificate".into());
        }
        black_box((&client, &server));
        Ok(())
    }
}

/// Moves everything `from` has to send into `to` and lets `to` process it.
/// Returns the number of bytes moved.
fn transfer<A, B, DA, DB>(
    from: &mut A,
    to: &mut B,
    buf: &mut Vec<u8>,
) -> Result<usize, Box<dyn Error>>
where
    A: DerefMut<Target = ConnectionCommon<DA>>,
    B: DerefMut<Target = ConnectionCommon<DB>>,
{
    buf.clear();
    while from.wants_write() {
        from.write_tls(buf)?;
    }
    let mut rest = buf.as_slice();
    while !rest.is_empty() {
        to.read_tls(&mut rest)?;
        to.process_new_packets()?;
    }
    Ok(buf.len())
}
