//! Arbitrary bytes as DER certificates through the X509-SVID rule checks,
//! and as PEM through `X509Svid::from_pem`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustls_pki_types::CertificateDer;
use trust_bundle::svid::{self, X509Svid};

/// Splits `data` into consecutive DER TLVs (by their outer length), so that
/// a concatenation of certificates becomes a chain. The last piece takes
/// whatever does not fit.
fn split_der(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !data.is_empty() && out.len() < 8 {
        let len = tlv_len(data).unwrap_or(data.len()).min(data.len());
        let (head, tail) = data.split_at(len.max(1));
        out.push(head);
        data = tail;
    }
    if !data.is_empty() {
        out.push(data);
    }
    out
}

/// Total length of the DER TLV at the start of `data`, if its header reads.
fn tlv_len(data: &[u8]) -> Option<usize> {
    let first = *data.get(1)?;
    if first < 0x80 {
        return Some(2 + usize::from(first));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let bytes = data.get(2..2 + n)?;
    let len = bytes
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    Some(2 + n + len)
}

fuzz_target!(|data: &[u8]| {
    // The whole input as one certificate.
    let leaf = svid::check_leaf(data);
    let _ = svid::check_signing_cert(data, 0);
    let _ = svid::spiffe_id_of(data);
    let single = svid::check_chain(&[CertificateDer::from(data)]);
    assert_eq!(
        leaf.is_ok(),
        single.is_ok(),
        "check_chain of a one-certificate chain disagrees with check_leaf"
    );
    if let Ok(info) = leaf {
        assert!(
            !info.id.path().is_empty(),
            "leaf ID without a path accepted"
        );
    }

    // The input as a chain of concatenated certificates.
    let chain: Vec<CertificateDer<'_>> = split_der(data)
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let _ = svid::check_chain(&chain);

    // The input as PEM: first half the chain, second half the key.
    let (chain_pem, key_pem) = data.split_at(data.len() / 2);
    let _ = X509Svid::from_pem(chain_pem, key_pem);
    let _ = svid::certs_from_pem(data, "fuzz input");
});
