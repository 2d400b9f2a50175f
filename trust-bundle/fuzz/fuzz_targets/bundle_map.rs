//! Arbitrary bytes through `BundleMap::from_json`. Whatever parses must
//! survive `to_json` and a second `from_json` unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trust_bundle::BundleMap;

fuzz_target!(|data: &[u8]| {
    let Ok(map) = BundleMap::from_json(data) else {
        return;
    };
    let json = map.to_json();
    let again = BundleMap::from_json(&json).unwrap_or_else(|e| {
        panic!(
            "to_json output does not re-parse: {e}\n{}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(
        again.trust_domains.keys().collect::<Vec<_>>(),
        map.trust_domains.keys().collect::<Vec<_>>(),
        "trust domains changed in the round trip"
    );
    for (td, bundle) in &map.trust_domains {
        let other = &again.trust_domains[td];
        assert_eq!(other.trust_domain(), td);
        assert_eq!(
            other.x509_authorities(),
            bundle.x509_authorities(),
            "{td}: X.509 authorities changed in the round trip"
        );
        assert_eq!(
            other.jwt_authorities(),
            bundle.jwt_authorities(),
            "{td}: JWT authorities changed in the round trip"
        );
        assert_eq!(
            other.sequence(),
            bundle.sequence(),
            "{td}: sequence changed"
        );
        assert_eq!(
            other.refresh_hint(),
            bundle.refresh_hint(),
            "{td}: refresh hint changed"
        );
    }
    assert_eq!(again, map);
});
