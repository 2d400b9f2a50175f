//! Interop with implementations nobody here wrote: OpenSSL's `openssl verify`
//! must accept the chains our CAs issue (and refuse them against a foreign
//! root), and py-spiffe must parse our X.509-SVIDs and bundles.
//!
//! Both tools are installed by the project's test command,
//! `bash scripts/test.sh`. A missing tool fails the test with a message saying
//! so; nothing here skips silently.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use trust_bundle::svid::cert_pem;
use trust_bundle::{Bundle, BundleMap, CertificateAuthority, SvidRequest, TrustDomain};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const DAY: Duration = Duration::from_secs(86_400);

/// What the tests need from the project's test command, for failure messages.
const RUN_TEST_COMMAND: &str =
    "run the project's test command, `bash scripts/test.sh` (see README), \
     which installs the system packages and the Python venv these interop tests need";

#[test]
fn openssl_verify_accepts_our_chains() -> TestResult {
    let now = SystemTime::now();
    let td = TrustDomain::parse("cluster-a.mesh")?;
    let root = CertificateAuthority::self_signed(td.clone(), 30 * DAY, now)?;
    let direct = root.issue(
        &SvidRequest::new(td.service_account("default", "frontend")?),
        now,
    )?;
    let intermediate = intermediate_ca(&root, now)?;
    let via_intermediate = intermediate.issue(
        &SvidRequest::new(td.service_account("payments", "api")?),
        now,
    )?;
    assert_eq!(via_intermediate.chain().len(), 2, "leaf and intermediate");
    // Same trust domain and same subject name as `root`, different key.
    let impostor = CertificateAuthority::self_signed(td.clone(), 30 * DAY, now)?;
    let other =
        CertificateAuthority::self_signed(TrustDomain::parse("cluster-b.mesh")?, 30 * DAY, now)?;

    let dir = tempfile::tempdir()?;
    let d = dir.path();
    write(d, "root.pem", cert_pem(root.trust_anchor()))?;
    write(d, "impostor.pem", cert_pem(impostor.trust_anchor()))?;
    write(d, "other.pem", cert_pem(other.trust_anchor()))?;
    write(d, "leaf.pem", cert_pem(&direct.chain()[0]))?;
    write(d, "leaf.key", direct.key_pem())?;
    write(d, "leaf2.pem", cert_pem(&via_intermediate.chain()[0]))?;
    write(
        d,
        "intermediates.pem",
        pem_all(&via_intermediate.chain()[1..]),
    )?;

    for purpose in ["sslclient", "sslserver"] {
        let out = verify(d, purpose, "root.pem", None, "leaf.pem");
        assert_verified(&out, &format!("root -> leaf, {purpose}"));
        let out = verify(
            d,
            purpose,
            "root.pem",
            Some("intermediates.pem"),
            "leaf2.pem",
        );
        assert_verified(&out, &format!("root -> intermediate -> leaf, {purpose}"));
    }

    let refusals = [
        (
            "a leaf of cluster-a.mesh against cluster-b.mesh's root",
            "other.pem",
            None,
            "leaf.pem",
        ),
        (
            "a leaf against a root with the same name and another key",
            "impostor.pem",
            None,
            "leaf.pem",
        ),
        (
            "a leaf of an intermediate without the intermediate",
            "root.pem",
            None,
            "leaf2.pem",
        ),
        (
            "a leaf of an intermediate against another root",
            "other.pem",
            Some("intermediates.pem"),
            "leaf2.pem",
        ),
    ];
    for (what, anchor, untrusted, leaf) in refusals {
        let out = verify(d, "sslclient", anchor, untrusted, leaf);
        assert!(
            !out.status.success(),
            "openssl verify accepted {what}:\n{}",
            describe(&out)
        );
        // Refused for the right reason (no path to the anchor), not a usage error.
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("unable to get local issuer certificate"),
            "openssl verify refused {what} for an unexpected reason:\n{}",
            describe(&out)
        );
    }

    // OpenSSL reads the SPIFFE ID as the only, critical, URI SAN (the subject
    // is empty, so RFC 5280 §4.2.1.6 requires it critical) ...
    let out = openssl(
        d,
        &[
            "x509",
            "-in",
            "leaf.pem",
            "-noout",
            "-ext",
            "subjectAltName",
        ],
    );
    assert!(
        out.status.success(),
        "openssl x509 -ext:\n{}",
        describe(&out)
    );
    let san = String::from_utf8_lossy(&out.stdout);
    assert!(san.contains("critical"), "SAN not critical: {san}");
    assert!(
        san.contains(&format!("URI:{}", direct.id())),
        "SAN does not hold {}: {san}",
        direct.id()
    );
    // ... and our PKCS#8 PEM key as the key of the leaf.
    let from_key = openssl(d, &["pkey", "-in", "leaf.key", "-pubout"]);
    let from_cert = openssl(d, &["x509", "-in", "leaf.pem", "-noout", "-pubkey"]);
    assert!(
        from_key.status.success(),
        "openssl pkey:\n{}",
        describe(&from_key)
    );
    assert!(
        from_cert.status.success(),
        "openssl x509 -pubkey:\n{}",
        describe(&from_cert)
    );
    assert_eq!(
        from_key.stdout, from_cert.stdout,
        "key does not match the leaf"
    );
    Ok(())
}

#[test]
fn py_spiffe_parses_our_svids_and_bundles() -> TestResult {
    let python = python_interpreter();
    let now = SystemTime::now();
    let td_a = TrustDomain::parse("cluster-a.mesh")?;
    let td_b = TrustDomain::parse("cluster-b.mesh")?;
    let root_a = CertificateAuthority::self_signed(td_a.clone(), 30 * DAY, now)?;
    // A second root of the same trust domain, as during a root rotation.
    let next_root_a = CertificateAuthority::self_signed(td_a.clone(), 30 * DAY, now)?;
    let root_b = CertificateAuthority::self_signed(td_b.clone(), 30 * DAY, now)?;
    let intermediate = intermediate_ca(&root_a, now)?;

    let direct = root_a.issue(
        &SvidRequest::new(td_a.service_account("default", "frontend")?),
        now,
    )?;
    let via_intermediate = intermediate.issue(
        &SvidRequest::new(td_a.service_account("payments", "api")?),
        now,
    )?;
    assert_eq!(via_intermediate.chain().len(), 2, "leaf and intermediate");
    let svids = [("direct", &direct), ("via_intermediate", &via_intermediate)];

    let mut bundle_a = Bundle::with_x509_authorities(
        td_a.clone(),
        [
            root_a.trust_anchor().clone(),
            next_root_a.trust_anchor().clone(),
        ],
    );
    bundle_a.set_refresh_hint(Some(Duration::from_secs(300)));
    let bundle_b = Bundle::with_x509_authorities(td_b.clone(), [root_b.trust_anchor().clone()]);
    let mut map = BundleMap::default();
    map.insert(bundle_a.clone());
    map.insert(bundle_b.clone());

    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let mut svid_cases = Vec::new();
    for (name, svid) in svids {
        write(d, &format!("{name}.chain.pem"), svid.chain_pem())?;
        write(d, &format!("{name}.key.pem"), svid.key_pem())?;
        write(d, &format!("{name}.chain.der"), der_all(svid.chain()))?;
        write(
            d,
            &format!("{name}.key.der"),
            svid.private_key().secret_pkcs8_der(),
        )?;
        svid_cases.push(json!({
            "name": name,
            "chain_pem": d.join(format!("{name}.chain.pem")),
            "key_pem": d.join(format!("{name}.key.pem")),
            "chain_der": d.join(format!("{name}.chain.der")),
            "key_der": d.join(format!("{name}.key.der")),
        }));
    }
    let mut bundle_cases = Vec::new();
    for bundle in [&bundle_a, &bundle_b] {
        let td = bundle.trust_domain().as_str();
        write(d, &format!("{td}.pem"), pem_all(bundle.x509_authorities()))?;
        write(d, &format!("{td}.der"), der_all(bundle.x509_authorities()))?;
        write(d, &format!("{td}.jwks"), bundle.to_jwks())?;
        bundle_cases.push(json!({
            "trust_domain": td,
            "pem": d.join(format!("{td}.pem")),
            "der": d.join(format!("{td}.der")),
            "jwks": d.join(format!("{td}.jwks")),
        }));
    }
    write(d, "bundle_map.json", map.to_json())?;
    let (root_chain_pem, root_key_pem) = root_a.to_pem();
    write(d, "root.chain.pem", root_chain_pem)?;
    write(d, "root.key.pem", root_key_pem)?;
    let manifest = json!({
        "svids": svid_cases,
        "bundles": bundle_cases,
        "bundle_map": d.join("bundle_map.json"),
        "not_a_leaf": {
            "chain_pem": d.join("root.chain.pem"),
            "key_pem": d.join("root.key.pem"),
        },
    });
    write(d, "manifest.json", serde_json::to_vec_pretty(&manifest)?)?;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/interop_check.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(d.join("manifest.json"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {RUN_TEST_COMMAND}", python.display()));
    assert!(
        out.status.success(),
        "{} {} failed:\n{}",
        python.display(),
        script.display(),
        describe(&out)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("py-spiffe report is not JSON ({e}):\n{}", describe(&out)));
    eprintln!("py-spiffe {}", report["spiffe_version"]);

    for (name, svid) in svids {
        for encoding in ["pem", "der"] {
            let got = &report["svids"][name][encoding];
            let what = format!("{name} ({encoding})");
            assert_eq!(got["spiffe_id"], svid.id().as_str(), "{what}: SPIFFE ID");
            assert_eq!(
                got["trust_domain"], "cluster-a.mesh",
                "{what}: trust domain"
            );
            assert_eq!(got["path"], svid.id().path(), "{what}: path");
            assert_eq!(got["chain"], json!(b64_all(svid.chain())), "{what}: chain");
            assert_eq!(got["key_matches_leaf"], true, "{what}: key");
            assert_eq!(got["signature_verifies"], true, "{what}: signature");
        }
    }
    assert_eq!(
        report["svids"]["via_intermediate"]["pem"]["chain"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "py-spiffe read both certificates of the intermediate chain"
    );

    for bundle in [&bundle_a, &bundle_b] {
        let td = bundle.trust_domain().as_str();
        let got = &report["bundles"][td];
        let ours = json!(sorted_b64(bundle.x509_authorities()));
        assert_eq!(got["trust_domain"], td, "{td}: trust domain");
        assert_eq!(got["pem"], ours, "{td}: X509Bundle.parse");
        assert_eq!(got["der"], ours, "{td}: X509Bundle.parse_raw");
        assert_eq!(got["jwks"]["authorities"], ours, "{td}: JWKS x5c");
        assert_eq!(
            got["jwks"]["jwk_keys_match_x5c"], true,
            "{td}: JWK key vs x5c"
        );
        assert_eq!(
            got["jwks"]["spiffe_sequence"],
            bundle.sequence(),
            "{td}: sequence"
        );
        let in_map = &report["bundle_map"][td];
        assert_eq!(in_map["authorities"], ours, "{td}: bundle map");
        assert_eq!(
            in_map["jwk_keys_match_x5c"], true,
            "{td}: bundle map JWK keys"
        );
    }
    assert_eq!(
        report["bundle_map"].as_object().map(|m| m.len()),
        Some(2),
        "bundle map trust domains: {}",
        report["bundle_map"]
    );
    assert_eq!(bundle_a.x509_authorities().len(), 2);
    assert_eq!(
        report["rejects_ca_as_leaf"], true,
        "py-spiffe must refuse a CA certificate as a leaf, or the checks above prove little"
    );
    Ok(())
}

/// An intermediate CA signed by `root`, loaded the way an operator's CA is:
/// its certificate first, then the chain up to and including the anchor.
fn intermediate_ca(
    root: &CertificateAuthority,
    now: SystemTime,
) -> TestResult<CertificateAuthority> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        root.trust_domain().id().as_str().try_into()?,
    )];
    let csr = params.serialize_request(&key)?;
    let mut chain = root.issue_intermediate(csr.der(), 10 * DAY, now)?;
    chain.push(root.trust_anchor().clone());
    let ca = CertificateAuthority::from_der(
        root.trust_domain().clone(),
        chain,
        PrivatePkcs8KeyDer::from(key.serialize_der()),
    )?;
    Ok(ca)
}

/// Runs `openssl verify -x509_strict` with `anchor` as the only trust anchor
/// (no system store).
fn verify(dir: &Path, purpose: &str, anchor: &str, untrusted: Option<&str>, leaf: &str) -> Output {
    let mut args = vec![
        "verify",
        "-x509_strict",
        "-no-CApath",
        "-no-CAstore",
        "-purpose",
        purpose,
        "-CAfile",
        anchor,
    ];
    if let Some(untrusted) = untrusted {
        args.extend(["-untrusted", untrusted]);
    }
    args.push(leaf);
    openssl(dir, &args)
}

fn assert_verified(out: &Output, what: &str) {
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("OK"),
        "openssl verify refused {what}:\n{}",
        describe(out)
    );
}

fn openssl(dir: &Path, args: &[&str]) -> Output {
    match Command::new("openssl").args(args).current_dir(dir).output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "`openssl` is not on PATH: this test checks our chains with the OpenSSL \
             command-line tool (Debian package `openssl`); {RUN_TEST_COMMAND}"
        ),
        Err(e) => panic!("cannot run openssl {args:?}: {e}"),
    }
}

/// `ISTHMUS_PYTHON` if set, else the project venv's interpreter.
fn python_interpreter() -> PathBuf {
    if let Some(p) = std::env::var_os("ISTHMUS_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "ISTHMUS_PYTHON={} does not exist; unset it or {RUN_TEST_COMMAND}",
            p.display()
        );
        return p;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with py-spiffe: ISTHMUS_PYTHON is unset and {} does not exist; {RUN_TEST_COMMAND}",
        venv.display()
    );
    venv
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    std::fs::write(dir.join(name), contents)
}

fn pem_all(certs: &[CertificateDer<'_>]) -> String {
    certs.iter().map(|c| cert_pem(c)).collect()
}

fn der_all(certs: &[CertificateDer<'_>]) -> Vec<u8> {
    certs.iter().flat_map(|c| c.iter().copied()).collect()
}

fn b64_all(certs: &[CertificateDer<'_>]) -> Vec<String> {
    certs.iter().map(|c| STANDARD.encode(c)).collect()
}

fn sorted_b64(certs: &[CertificateDer<'_>]) -> Vec<String> {
    let mut all = b64_all(certs);
    all.sort();
    all
}

fn describe(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
