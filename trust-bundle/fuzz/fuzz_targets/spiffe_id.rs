//! Arbitrary UTF-8 through `SpiffeId::parse` and `TrustDomain::parse`.
//! Whatever parses must print back to a string that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trust_bundle::{SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(id) = SpiffeId::parse(input) {
        let shown = id.to_string();
        let again = SpiffeId::parse(&shown)
            .unwrap_or_else(|e| panic!("{shown:?} (from {input:?}) does not re-parse: {e}"));
        assert_eq!(again, id, "SpiffeId display round trip of {input:?}");
        assert_eq!(again.as_str(), shown);
        // The trust domain part must itself be a valid trust domain.
        let td = id.trust_domain();
        assert_eq!(TrustDomain::parse(td.as_str()).as_ref(), Ok(&td));
        assert!(id.is_member_of(&td));
    }

    if let Ok(td) = TrustDomain::parse(input) {
        let shown = td.to_string();
        let again = TrustDomain::parse(&shown)
            .unwrap_or_else(|e| panic!("{shown:?} (from {input:?}) does not re-parse: {e}"));
        assert_eq!(again, td, "TrustDomain display round trip of {input:?}");
        // Its `spiffe://` ID must parse back to the same trust domain too.
        let id = td.id();
        assert_eq!(SpiffeId::parse(id.as_str()).as_ref(), Ok(&id));
        assert_eq!(TrustDomain::parse(id.as_str()).as_ref(), Ok(&td));
    }
});
