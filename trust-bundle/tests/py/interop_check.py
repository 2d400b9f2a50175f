"""Parses Isthmus's X.509-SVIDs and bundles with py-spiffe, an independent
SPIFFE implementation, and reports what it read as JSON on stdout.

Driven by trust-bundle/tests/interop.rs:

    python interop_check.py MANIFEST.json

MANIFEST.json (written by the Rust test):

    {
      "svids": [{"name": ..., "chain_pem": path, "key_pem": path,
                 "chain_der": path, "key_der": path}, ...],
      "bundles": [{"trust_domain": ..., "pem": path, "der": path,
                   "jwks": path}, ...],
      "bundle_map": path,
      "not_a_leaf": {"chain_pem": path, "key_pem": path}
    }

Every certificate that py-spiffe read is reported as standard base64 of its
DER, so the Rust side compares bytes, not descriptions. Any parse error makes
the script exit non-zero with the traceback on stderr.

py-spiffe (0.3.x) has no parser for X.509 authorities in a SPIFFE bundle
(JWKS) document: `JwtBundle.parse` reads JWT authorities only and requires a
`kid` on every key. So the JWKS is read with the standard library, each JWK
with PyJWT's `PyJWK` (py-spiffe's own dependency, an independent JWK parser),
and each `x5c` certificate with `X509Bundle.parse_raw`.
"""

import base64
import importlib.metadata
import json
import sys

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from spiffe import TrustDomain, X509Bundle, X509Svid
from spiffe.svid.errors import InvalidLeafCertificateError


def der_b64(cert):
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def svid_report(svid):
    leaf_pub = svid.leaf.public_key()
    key_pub = svid.private_key.public_key()
    same_key = leaf_pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key_pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # Sign with the parsed private key, verify with the parsed leaf: proves the
    # PKCS#8 key really is the leaf's key, not just a look-alike encoding.
    message = b"isthmus interop"
    signature = svid.private_key.sign(message, ec.ECDSA(hashes.SHA256()))
    leaf_pub.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    return {
        "spiffe_id": str(svid.spiffe_id),
        "trust_domain": svid.spiffe_id.trust_domain.name,
        "path": svid.spiffe_id.path,
        "chain": [der_b64(c) for c in svid.cert_chain],
        "key_matches_leaf": same_key,
        "signature_verifies": True,
    }


def jwks_report(trust_domain, doc_bytes):
    doc = json.loads(doc_bytes)
    authorities = []
    keys_match = True
    for jwk in doc["keys"]:
        if jwk.get("use") != "x509-svid":
            continue
        der = base64.b64decode(jwk["x5c"][0])
        bundle = X509Bundle.parse_raw(trust_domain, der)
        (cert,) = bundle.x509_authorities
        authorities.append(der_b64(cert))
        # The JWK's own key material must be the certificate's public key.
        jwk_key = jwt.PyJWK(jwk).key
        keys_match &= jwk_key.public_numbers() == cert.public_key().public_numbers()
    return {
        "authorities": sorted(authorities),
        "jwk_keys_match_x5c": keys_match,
        "spiffe_sequence": doc.get("spiffe_sequence"),
    }


def main():
    manifest = json.loads(read(sys.argv[1]))
    out = {"spiffe_version": importlib.metadata.version("spiffe"), "svids": {}, "bundles": {}}

    for case in manifest["svids"]:
        pem = X509Svid.parse(read(case["chain_pem"]), read(case["key_pem"]))
        der = X509Svid.parse_raw(read(case["chain_der"]), read(case["key_der"]))
        out["svids"][case["name"]] = {"pem": svid_report(pem), "der": svid_report(der)}
        print(f"py-spiffe read {case['name']}: {pem.spiffe_id}", file=sys.stderr)

    for case in manifest["bundles"]:
        td = TrustDomain(case["trust_domain"])
        from_pem = X509Bundle.parse(td, read(case["pem"]))
        from_der = X509Bundle.parse_raw(td, read(case["der"]))
        out["bundles"][td.name] = {
            "trust_domain": str(from_pem.trust_domain),
            "pem": sorted(der_b64(c) for c in from_pem.x509_authorities),
            "der": sorted(der_b64(c) for c in from_der.x509_authorities),
            "jwks": jwks_report(td, read(case["jwks"])),
        }

    bundle_map = json.loads(read(manifest["bundle_map"]))
    out["bundle_map"] = {
        TrustDomain(key).name: jwks_report(TrustDomain(key), json.dumps(doc).encode())
        for key, doc in bundle_map["trust_domains"].items()
    }

    # Sanity check that py-spiffe validates at all: a CA certificate is no leaf.
    bad = manifest["not_a_leaf"]
    try:
        X509Svid.parse(read(bad["chain_pem"]), read(bad["key_pem"]))
        out["rejects_ca_as_leaf"] = False
    except InvalidLeafCertificateError as err:
        out["rejects_ca_as_leaf"] = True
        out["ca_as_leaf_error"] = str(err)

    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
