//! Arbitrary bytes through `Bundle::from_jwks`. Whatever parses must survive
//! `to_jwks` and a second `from_jwks` unchanged.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use trust_bundle::{Bundle, TrustDomain};

fn trust_domain() -> &'static TrustDomain {
    static TD: OnceLock<TrustDomain> = OnceLock::new();
    TD.get_or_init(|| TrustDomain::parse("fuzz.test").unwrap())
}

fuzz_target!(|data: &[u8]| {
    let td = trust_domain();
    let Ok(bundle) = Bundle::from_jwks(td.clone(), data) else {
        return;
    };
    let json = bundle.to_jwks();
    let again = Bundle::from_jwks(td.clone(), &json).unwrap_or_else(|e| {
        panic!(
            "to_jwks output does not re-parse: {e}\n{}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(
        again.x509_authorities(),
        bundle.x509_authorities(),
        "X.509 authorities changed in the round trip"
    );
    assert_eq!(
        again.jwt_authorities(),
        bundle.jwt_authorities(),
        "JWT authorities changed in the round trip"
    );
    assert_eq!(again.sequence(), bundle.sequence(), "sequence changed");
    assert_eq!(
        again.refresh_hint(),
        bundle.refresh_hint(),
        "refresh hint changed"
    );
    assert_eq!(again, bundle);
});
