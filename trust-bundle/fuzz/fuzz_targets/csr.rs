//! Arbitrary bytes as a PKCS#10 CSR DER through
//! `CertificateAuthority::issue_svid`, with a fixed attested identity.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use rustls_pki_types::CertificateSigningRequestDer;
use trust_bundle::{svid, CertificateAuthority, SpiffeId, SvidRequest, TrustDomain};

struct Fixture {
    ca: CertificateAuthority,
    request: SvidRequest,
    /// The instant the CA was made: every issuance uses it, so a run longer
    /// than the CA's lifetime still exercises the issuing path.
    now: SystemTime,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let now = SystemTime::now();
        let ca = CertificateAuthority::self_signed(
            TrustDomain::parse("fuzz.test").unwrap(),
            Duration::from_secs(3600),
            now,
        )
        .unwrap();
        let request = SvidRequest {
            id: SpiffeId::parse("spiffe://fuzz.test/workload").unwrap(),
            dns_names: Vec::new(),
            ttl: Duration::from_secs(600),
        };
        Fixture { ca, request, now }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let csr = CertificateSigningRequestDer::from(data);
    if let Ok(chain) = f.ca.issue_svid(&csr, &f.request, f.now) {
        // What the CA issues must be a valid X.509-SVID for the attested ID.
        let info = svid::check_chain(&chain).expect("issued chain breaks X509-SVID");
        assert_eq!(info.id, f.request.id);
    }
});
