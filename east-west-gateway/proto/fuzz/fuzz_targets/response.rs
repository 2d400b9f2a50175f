//! Arbitrary bytes through `Response::decode`. Whatever decodes must
//! re-encode to bytes that decode to the same response, and every shorter
//! prefix of the consumed bytes must ask for more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnel_proto::{RejectReason, Response, MAX_DETAIL_LEN, RESPONSE_PREFIX_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(Some((response, consumed))) = Response::decode(data) else {
        return;
    };
    assert!(consumed <= data.len() && consumed <= RESPONSE_PREFIX_LEN + MAX_DETAIL_LEN);
    for end in 0..consumed {
        assert_eq!(Response::decode(&data[..end]), Ok(None), "prefix {end}");
    }
    if let Response::Reject { reason, .. } = &response {
        assert_eq!(RejectReason::from_code(reason.code()), Some(*reason));
        assert_eq!(reason.code(), data[1]);
    }
    let bytes = response.encode();
    assert_eq!(
        Response::decode(&bytes),
        Ok(Some((response, bytes.len()))),
        "re-encoded response round trip"
    );
});
