//! Arbitrary bytes through `OpenHeader::decode`. Whatever decodes must be
//! valid (encode succeeds), re-encode to bytes that decode to the same
//! header, and every shorter prefix of the consumed bytes must ask for more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnel_proto::{OpenHeader, MAX_HEADER_LEN, PREFIX_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(Some((header, consumed))) = OpenHeader::decode(data) else {
        return;
    };
    assert!(consumed <= data.len() && consumed <= PREFIX_LEN + MAX_HEADER_LEN);
    for end in 0..consumed {
        assert_eq!(
            OpenHeader::decode(&data[..end]),
            Ok(None),
            "prefix of {end} bytes must need more"
        );
    }
    let bytes = header
        .encode()
        .unwrap_or_else(|e| panic!("decoded {header:?} does not encode: {e}"));
    // Unknown extensions are dropped, so the encoding may be shorter.
    assert!(bytes.len() <= consumed);
    assert_eq!(
        OpenHeader::decode(&bytes),
        Ok(Some((header, bytes.len()))),
        "re-encoded header round trip"
    );
});
